"""Package a FER2013 training run as ``pretrained:fer2013``, with its measured model card.

Applies the recipe's steps after the last epoch to the run's final model (batch-norm
recalibration, which ``fervis train`` has already done for runs since it existed: the same
statistics again), measures it on PublicTest with every test-time augmentation, then writes

* ``fervis/pretrained/fer2013.keras`` -- the model (loaded later with ``safe_mode``),
* ``fervis/pretrained/fer2013.json`` -- the card: accuracies, per-class recall, confusion
  matrix, recipe, parameter count, wall time and machine, the command that reproduces it,
* ``fervis/pretrained/fer2013_history.csv`` -- the run's per-epoch history,
* ``docs/model_card_fer2013.md`` -- the card as a page (README links it).

Only PublicTest is used: the PrivateTest rows are withheld, and the model is selected on
PublicTest. Nothing is written unless every measurement succeeded.

Usage::

    fervis train --data fer2013.csv.gz --recipe fer2013 --out runs/fer2013
    python scripts/ship_fer2013.py runs/fer2013 --data fer2013.csv.gz [--recipe fer2013]

``--recipe`` names the recipe the run was trained with (``fer2013-kd``: distilled from
``pretrained:fer2013-v1``); the run is refused if it was trained otherwise. A model replacing the
shipped one must score at least as well on PublicTest with its recipe's TTA, have at most
``MAX_PARAMS`` parameters and run no slower than ``MAX_SLOWDOWN`` times the model it replaces
(each measured here, on this machine; ``--force`` ships anyway and the card says so).

When the recipe's steps after the last epoch change (``recalibrate_bn``), ``python
scripts/ship_fer2013.py --reship --data fer2013.csv.gz`` applies them to the shipped model and
measures it again, keeping its history and wall time.

After editing ``EXPERIMENTS`` or the rendering, ``python scripts/ship_fer2013.py --render-only
[--standing TEXT]`` rewrites the card's page, its experiments and README's summary from the
shipped card without measuring anything again.
"""

import argparse
import hashlib
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fervis import data, models, recipes, report, training  # noqa: E402
from fervis.files import write_atomic  # noqa: E402

# Published FER2013 figures the card is compared with (test accuracy as each paper reports it).
PUBLISHED = [
    ("mini-Xception (Arriaga et al. 2017)", "~60 k", 66.0),
    ("Kaggle 2013 winner, CNN + linear SVM loss (Tang 2013)", "—", 71.2),
    ("VGG variant, ten-crop TTA (Khaireddin & Chen 2021)", "—", 73.28),
]

DOCS = ROOT / "docs" / "model_card_fer2013.md"
# The explanation cost a shipped model may have (issue 23): the notebooks' methods run on it as they do
# today, so one network, at most this many parameters, and forward passes at most this much slower than
# the model it replaces (measured by `_inference_ms`).
MAX_PARAMS = 5_000_000
MAX_SLOWDOWN = 1.5
# README's card summary lives between these markers.
CARD_BEGIN = "<!-- card:begin -->"
CARD_END = "<!-- card:end -->"

# The measured runs the recipe was chosen from (all on this 2-core CPU, FER2013 `Training`,
# scored on PublicTest): (run, what changed, epochs, PublicTest accuracy without TTA, with ten-crop,
# training wall time in minutes or None where it was not recorded). The shipped run is appended from
# its own measurements.
EXPERIMENTS = [
    ("widths 64-128-256-384", "the first `vgg`: 29 images/s, 16 min an epoch -- too slow to train here", "--", None, None, None),
    ("probe, 6,000 faces", "Adam 1e-3 or SGD 0.05, no augmentation: both stay on the 'predict happy' plateau", 3, 0.25, None, None),
    ("SGD recipe (shipped before)", "SGD+Nesterov 0.05, weight decay 5e-4, cosine, full augmentation: underfits (train 60.4 %)", 40, 0.6021, 0.6074, None),
    ("notebook 4 gallery run", "AdamW 3e-3, flip only: learns 3-4x faster than SGD per epoch", 8, 0.594, None, None),
    ("AdamW recipe, 40 epochs (shipped before)", "the recipe above, 40 epochs: train 66.3 %, only 3 points above PublicTest: room for a longer schedule", 40, 0.6333, 0.6442, None),
    ("AdamW recipe, 100 epochs (shipped before)", "the recipe above, 100 epochs, without recomputing the batch-norm statistics after the last epoch: 69.69 % with flip-rotate", 100, 0.6601, 0.6821, 337.4),
    ("stochastic weight averaging (not shipped)", "from the 100-epoch model above, 6 more epochs at a constant 2e-4, their weights averaged, batch-norm statistics recomputed: 69.55 % with flip-rotate, no gain (3 epochs: 69.55 % too)", 106, 0.6623, None, None),
    ("warm restart (not shipped)", "from the 100-epoch model, 12 more epochs, 1 warm-up to 1e-3 then cosine: 69.18 % with flip-rotate; its probabilities averaged with that model's (a snapshot ensemble): 69.49 %, no gain", 112, 0.6617, None, None),
    ("erasing 0.5, seed 1 (not shipped)", "the recipe above, random erasing 0.5 instead of 0.25 and another seed: 68.68 % with flip-rotate; 1 point behind the 100-epoch model on PublicTest from epoch 80 on", 100, 0.6492, 0.6729, None),
    ("average of both (not shipped)", "the 100-epoch model and the run above, logits averaged (`fervis.models.ensemble`): 69.43 % with flip-rotate, no gain; averaging gains a point without TTA but not on top of it", 100, 0.6707, 0.6824, None),
    ("born-again distillation (not shipped)", "recipe `fer2013-kd`: this model (ten-crop) teaches a seed-1 student of its own recipe, distill 0.5; 0.6 points above it without TTA but 0.4 below with ten-crop (70.33 % flip-rotate); the two averaged: 70.55 % ten-crop, no gain. Wall time with the teacher's pass (9.9 min, an upper bound)", 100, 0.6941, 0.7016, 344.4),
    ("light fine-tune (not shipped)", "from this model, 6 more epochs with flip and shifts of up to 3 pixels only (the ten-crop views' range; no rotation, zoom or erasing), AdamW 1e-4 with cosine decay, batch-norm statistics recomputed: +0.6 without TTA, +0.14 with ten-crop (5 of 3,589 faces), within noise; 10 epochs at 5e-4: 69.04 % / 70.80 %. Wall time: this model's plus 18.5 min", 106, 0.6946, 0.7072, 355.9),
]


# How the card names each test-time augmentation (fervis.recipes.TTA).
_TTA_NAMES = {"none": "no", "flip": "flip", "tencrop": "ten-crop", "flip-rotate": "flip-and-rotate (0°, ±5°, ±10°)"}


def _wall_minutes(run):
    """Minutes the run spent training: the union of its TensorBoard event files' spans.

    A run resumed across sessions writes one file per resume (named by its start time); the
    gaps between sessions are not training time, so they are left out.
    """
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    spans = []
    for path in (run / "tb").rglob("events.out.tfevents.*"):
        start = float(path.name.split(".")[3])
        # The loader stops quietly at a record cut off by a killed run: its last whole event counts.
        end = max((e.wall_time for e in EventFileLoader(str(path)).Load()), default=start)
        spans.append((start, end))
    if not spans:
        return None
    total, reach = 0.0, -np.inf
    for start, end in sorted(spans):
        total += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return round(total / 60.0, 1)


def _machine():
    cpu = "unknown CPU"
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}; no GPU"


def _pct(value):
    return "--" if value is None else f"{value:.2%}"


def _minutes(value):
    return "not recorded" if value is None else f"{value:g} min"


def _headline(card):
    """The card's headline table (Markdown lines)."""
    recipe = card["recipe"]
    acc = card["publictest_accuracy_by_tta"]
    others = [t for t in ("flip-rotate", "tencrop", "flip", "none") if t in acc and t != card["tta"]]
    return [
        "| | |",
        "|---|---|",
        f"| architecture | `{recipe['arch']}`: {card['params']:,} parameters, {card['size_mb']:.1f} MB `.keras` |",
        "| input | raw 0-255 grey pixels `(n, 48, 48, 1)`; output: softmax over the 7 FER2013 classes |",
        f"| trained on | FER2013 `Training` ({card['train_faces']:,} faces), selected on `PublicTest` |",
        *([f"| taught by | `{recipe['teacher']}` (knowledge distillation, weight {recipe['distill']:g}) |"]
          if recipe.get("teacher") else []),
        f"| wall time | {_minutes(card['wall_time_min'])}"
        + (f" (of which {card['teacher_minutes']:g} min computing the teacher's probabilities, once)"
           if card.get("teacher_minutes") and card["wall_time_min"] is not None else "")
        + f" on {card['machine']} |",
        *([f"| inference | {card['inference_ms_per_face']:.2f} ms a face (one forward pass, batches of 256, this CPU)"
           + (f"; {card['inference_vs_replaced']:.2f}x the model it replaced, measured in the same run" if card.get("inference_vs_replaced") else "")
           + " |"] if card.get("inference_ms_per_face") else []),
        *([f"| shipped despite | {'; '.join(card['shipped_despite'])} (`--force`) |"] if card.get("shipped_despite") else []),
        f"| PublicTest accuracy, recipe TTA (`{card['tta']}`) | **{acc[card['tta']]:.2%}** |",
        f"| PublicTest accuracy, {' / '.join(_TTA_NAMES[t] for t in others)} TTA | {' / '.join(f'{acc[t]:.2%}' for t in others)} |",
        f"| balanced accuracy (mean recall, `{card['tta']}`) | {card['balanced_accuracy']:.2%} |",
        *([f"| PublicTest accuracy as the last epoch left it (no TTA, batch-norm statistics from training) | "
           f"{card['publictest_accuracy_last_epoch']:.2%} |"]
          if recipe.get("recalibrate_bn") and card.get("publictest_accuracy_last_epoch") is not None else []),
    ]


def _recipe_sentence(recipe):
    """The recipe in one sentence, from its fields."""
    opt = {"sgd": "SGD with Nesterov momentum", "adamw": "AdamW"}.get(recipe["optimizer"], recipe["optimizer"])
    warmup = recipe["warmup_epochs"]
    aug = [fmt.format(recipe[field]) for field, fmt in (
        ("flip", "flip"), ("shift", "shift {:g}"), ("rotation", "rotation {:g}°"), ("zoom", "zoom {:g}"),
        ("erasing", "random erasing {:g}"), ("mixup", "mixup {:g}")) if recipe.get(field)]
    tta = _TTA_NAMES.get(recipe["tta"], recipe["tta"])
    return (
        f"{recipe['epochs']} epochs, batch {recipe['batch_size']}, {opt}, learning rate {recipe['learning_rate']:g}"
        + (f" with {warmup} warm-up epoch{'s' if warmup != 1 else ''}" if warmup else "")
        + f" and cosine decay, weight decay {recipe['weight_decay']:g}, label smoothing {recipe['label_smoothing']:g}"
        + (", class-weighted loss" if recipe["class_weights"] else "")
        + (f", taught by `{recipe['teacher']}`: the target mixes the label with the teacher's {_TTA_NAMES.get(recipe['tta'], recipe['tta'])}"
           f" TTA probabilities at weight {recipe['distill']:g} (knowledge distillation at temperature 1)"
           if recipe.get("teacher") else "")
        + (", " + ", ".join(aug) if aug else ", no augmentation")
        + (", batch-norm statistics recomputed on the clean training faces after the last epoch"
           if recipe.get("recalibrate_bn") else "")
        + f", {tta} test-time augmentation."
    )


def _recall_table(card):
    names = card["class_names"]
    return [
        f"Per-class recall (PublicTest, `{card['tta']}` TTA):",
        "",
        "| " + " | ".join(names) + " |",
        "|" + "---|" * len(names),
        "| " + " | ".join(f"{card['recall'][n]:.1%}" for n in names) + " |",
    ]


def _standing_table(card):
    acc = card["publictest_accuracy_by_tta"]
    return [
        "| model | parameters | reported accuracy |",
        "|---|---|---|",
        *[f"| {name} | {params} | {pct:.2f} % |" for name, params, pct in PUBLISHED],
        f"| **this model** (`{card['tta']}` TTA, PublicTest) | {card['params'] / 1e6:.2f} M | {acc[card['tta']]:.2%} |",
    ]


def _readme_block(card):
    """README's card summary, between CARD_BEGIN and CARD_END."""
    return "\n".join([
        CARD_BEGIN,
        "*Written by `scripts/ship_fer2013.py` from `fervis/pretrained/fer2013.json`; do not edit by hand (after changing the script, `--render-only` rewrites it).*",
        "",
        *_headline(card),
        "",
        f"Recipe (`fervis.recipes.RECIPES['{card['recipe']['name']}']`): {_recipe_sentence(card['recipe'])}",
        "The full card (every field, the runs the recipe was chosen from, the confusion matrix) is",
        "[`docs/model_card_fer2013.md`](docs/model_card_fer2013.md).",
        "",
        *_recall_table(card),
        "",
        "Where it stands:",
        "",
        *_standing_table(card),
        "",
        card["standing"],
        CARD_END,
    ])


def _markdown(card):
    """The card as a page (docs/model_card_fer2013.md)."""
    names = card["class_names"]
    recipe = card["recipe"]
    lines = [
        "# Model card: `pretrained:fer2013`",
        "",
        "Generated by `scripts/ship_fer2013.py` from the training run; every figure is measured on",
        "FER2013's **PublicTest** split (3,589 faces). PrivateTest was never seen: it is withheld.",
        "",
        *_headline(card),
        "",
        "## Reproduce",
        "",
        "```",
        card["command"],
        f"python scripts/ship_fer2013.py runs/{recipe['name']} --recipe {recipe['name']} --data fer2013.csv.gz",
        "```",
        "",
        f"## Recipe (`fervis.recipes.RECIPES['{recipe['name']}']`)",
        "",
        _recipe_sentence(recipe),
        "",
        "| field | value |",
        "|---|---|",
        *[f"| `{k}` | {v} |" for k, v in recipe.items()],
        "",
        "## Per-class recall",
        "",
        *_recall_table(card),
        "",
        "## Confusion matrix (rows: true class, columns: predicted)",
        "",
        "| true \\ predicted | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
        *[f"| **{n}** | " + " | ".join(str(v) for v in row) + " |" for n, row in zip(names, card["confusion_matrix"])],
        "",
        "## How the recipe was chosen",
        "",
        "Runs measured on this machine, each scored on PublicTest (the last row is this model):",
        "",
        "| run | what | epochs | PublicTest, no TTA | with ten-crop | wall time |",
        "|---|---|---|---|---|---|",
        *[f"| {run} | {what} | {epochs} | {_pct(none)} | {_pct(ten)} | {_minutes(wall)} |"
          for run, what, epochs, none, ten, wall in card["experiments"]],
        "",
        "## Where it stands",
        "",
        *_standing_table(card),
        "",
        card["standing"],
        "",
    ]
    return "\n".join(lines)


def _experiments(shipped_row, wall_time_min, earlier=()):
    """The runs table: EXPERIMENTS, the models shipped before this one (``earlier``, kept in the card as
    ``earlier_runs``), then the shipped run (a card written before the wall-time column has five fields
    in its row; the card's wall time completes it)."""
    return [list(row) for row in EXPERIMENTS] + [list(row) for row in earlier] + [list(shipped_row[:5]) + [wall_time_min]]


def _earlier_runs(old_card, old_path):
    """``earlier_runs`` for the card of a model that replaces the one described by ``old_card``: that card's
    own earlier runs, then its shipped run, named as shipped before (and by the packaged copy that keeps it
    byte for byte, such as ``pretrained:fer2013-v1``, when there is one)."""
    row = old_card.get("experiments", [[None] * 5])[-1]
    digest = hashlib.sha256(old_path.read_bytes()).hexdigest()
    kept = [name for name in sorted(models.PRETRAINED) if name != "fer2013" and models.pretrained_path(name).exists()
            and hashlib.sha256(models.pretrained_path(name).read_bytes()).hexdigest() == digest]
    name = old_card.get("recipe", {}).get("name", "?")
    label = f"recipe `{name}` (shipped before" + (f", kept as `pretrained:{kept[0]}`" if kept else "") + ")"
    what = f"the model `pretrained:fer2013` was until this one: {_pct(old_card.get('publictest_accuracy'))} with {old_card.get('tta')} TTA"
    return [list(r) for r in old_card.get("earlier_runs", [])] + [
        [label, what, row[2], row[3], row[4], old_card.get("wall_time_min")]]


def render(card, docs, readme, texts=None):
    """Write the card's page and README's summary from ``card`` (the dict in the card's JSON), or the
    ``texts`` (page, summary) already rendered from it."""
    page, block = texts or (_markdown(card), _readme_block(card))
    write_atomic(pathlib.Path(docs), page)
    report.update_readme(readme, block, markers=(CARD_BEGIN, CARD_END))


def _render_only(args, parser):
    card_path = models.pretrained_path("fer2013").with_suffix(".json")
    if not card_path.exists():
        parser.error(f"{card_path} does not exist: ship a run first")
    card = json.loads(card_path.read_text())
    card["experiments"] = _experiments(card["experiments"][-1], card["wall_time_min"], card.get("earlier_runs", []))
    card["standing"] = args.standing or card["standing"]
    write_atomic(card_path, json.dumps(card, indent=1) + "\n")
    render(card, DOCS, args.readme)
    print(f"re-rendered {DOCS} and the summary in {args.readme} from {card_path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=pathlib.Path, nargs="?", help="the run directory of `fervis train --recipe RECIPE`")
    parser.add_argument("--data", help="the FER2013 file (Training and PublicTest rows)")
    parser.add_argument("--recipe", default="fer2013", choices=sorted(n for n in recipes.RECIPES if n.startswith("fer2013")),
                        help="the recipe the run was trained with (default: fer2013)")
    parser.add_argument("--force", action="store_true",
                        help=f"ship even a model that scores below the one it replaces, has more than {MAX_PARAMS:,} "
                             f"parameters or runs more than {MAX_SLOWDOWN}x slower (the card says which)")
    parser.add_argument("--render-only", action="store_true",
                        help="measure nothing: re-render the shipped card's page and README summary")
    parser.add_argument("--reship", action="store_true",
                        help="measure the shipped model again after the recipe's steps after the last epoch "
                             "(batch-norm recalibration), keeping its history and wall time; needs --data")
    parser.add_argument("--standing", default="", help="a paragraph for the card: where the model stands")
    parser.add_argument("--readme", type=pathlib.Path, default=ROOT / "README.md",
                        help=f"the README whose {CARD_BEGIN} ... {CARD_END} block gets the card's summary")
    args = parser.parse_args(argv)

    readme = args.readme.read_text(encoding="utf-8") if args.readme.exists() else ""
    if CARD_BEGIN not in readme or CARD_END not in readme:  # checked first: nothing half-written later
        parser.error(f"{args.readme} has no {CARD_BEGIN} ... {CARD_END} markers for the card's summary")
    if args.render_only:
        return _render_only(args, parser)
    if args.reship:
        if args.data is None:
            parser.error("--reship needs --data")
        return _reship(args, parser)
    if args.run is None or args.data is None:
        parser.error("give the run directory and --data (or --render-only, or --reship)")
    final = args.run / training.FINAL
    if not final.exists():
        parser.error(f"{final} does not exist: the run has not finished (resume it with `fervis train --resume`)")
    recipe = recipes.get(args.recipe)
    try:
        trained = training.run_recipe(args.run)
    except ValueError as err:
        parser.error(str(err))
    differ = recipe.trains_unlike(trained)
    if differ:  # the card would describe another training than the run's
        parser.error(f"{args.run} was trained with another recipe than {recipe.name}: fields {differ} are "
                     f"{[getattr(trained, k) for k in differ]} there, {[getattr(recipe, k) for k in differ]} in the recipe")
    history = pd.read_csv(args.run / training.HISTORY)
    if len(history) != recipe.epochs:
        parser.error(f"{args.run / training.HISTORY} has {len(history)} epochs; the {recipe.name} recipe has {recipe.epochs}")
    dataset = data.load(args.data)
    model = models.load(final, num_classes=len(dataset.class_names))
    replaced = _shipped_now(len(dataset.class_names))
    wall, teacher_minutes = _run_cost(args.run, recipe)
    _ship(model, recipe, dataset, history, wall, args, replaced=replaced, parser=parser, teacher_minutes=teacher_minutes)


def _run_cost(run, recipe):
    """(wall time in minutes, teacher's pass in minutes) of a run: its epochs' TensorBoard spans plus, for a
    distilled run, the teacher's pass kept in its ``teacher.npz``; None where unknown."""
    wall, teacher = _wall_minutes(run), training.teacher_seconds(run)
    if recipe.teacher and teacher is None:
        print(f"note: {run / training.TEACHER} does not say how long the teacher's pass took; the wall time leaves it out")
    teacher_minutes = None if teacher is None else round(teacher / 60.0, 1)
    if wall is not None and teacher_minutes is not None:
        wall = round(wall + teacher_minutes, 1)
    return wall, teacher_minutes


def _shipped_now(num_classes):
    """The model, card and path shipped now (which a new run replaces), or None when there is none."""
    target = models.pretrained_path("fer2013")
    if not target.exists():
        return None
    return models.load(target, num_classes=num_classes), models.pretrained_card("fer2013"), target


def _reship(args, parser):
    """Measure the shipped model again under its recipe's current steps after the last epoch
    (batch-norm recalibration) and test-time augmentation; its history and wall time stay."""
    target = models.pretrained_path("fer2013")
    card_path = target.with_suffix(".json")
    if not card_path.exists():
        parser.error(f"{card_path} does not exist: ship a run first")
    old = json.loads(card_path.read_text())
    shipped = recipes.Recipe.from_dict(old["recipe"], what=f"recipe in {card_path}")
    if shipped.name not in recipes.RECIPES:
        parser.error(f"the shipped model was trained with recipe {shipped.name!r}, which fervis no longer has: ship a new run")
    recipe = recipes.get(shipped.name)
    differ = recipe.trains_unlike(shipped)
    if differ:
        parser.error(f"the shipped model was trained with other fields {differ} than the {recipe.name} recipe: ship a new run")
    dataset = data.load(args.data)
    model = models.load(target, num_classes=len(dataset.class_names))
    history = pd.read_csv(target.with_name("fer2013_history.csv"))
    # What was measured when the model replaced the one before it stays: that model is gone.
    kept = {k: old[k] for k in ("replaced", "inference_vs_replaced", "shipped_despite", "earlier_runs") if k in old}
    _ship(model, recipe, dataset, history, old["wall_time_min"], args, teacher_minutes=old.get("teacher_minutes"), kept=kept)


def _inference_ms(compared, faces, repeat=3):
    """Milliseconds a face for one forward pass over ``faces`` (``fervis.models.predict``, its batches of
    256) of each model in ``compared``, the best of ``repeat`` passes each after a warm-up (the first
    traces the graph). The models take turns, pass by pass: this machine's speed drifts by tens of
    percent over minutes, and every model should meet the same drift."""
    for model in compared:
        models.predict(model, faces[:256])
    best = [np.inf] * len(compared)
    for _ in range(repeat):
        for i, model in enumerate(compared):
            start = time.perf_counter()
            models.predict(model, faces)
            best[i] = min(best[i], time.perf_counter() - start)
    return [1000.0 * b / len(faces) for b in best]


def _cost_and_gain(model, recipe, acc, dataset, replaced):
    """What the new model costs and gains against the one it replaces: (card fields, list of limits broken)."""
    faces = dataset.subset("PublicTest").x()[:1000]
    timings = _inference_ms([model] if replaced is None else [model, replaced[0]], faces)
    fields = {"inference_ms_per_face": round(timings[0], 3)}
    broken = []
    if model.count_params() > MAX_PARAMS:
        broken.append(f"{model.count_params():,} parameters, more than {MAX_PARAMS:,}")
    if replaced is not None:
        _, old_card, old_path = replaced
        fields["inference_vs_replaced"] = round(timings[0] / timings[1], 2)
        if fields["inference_vs_replaced"] > MAX_SLOWDOWN:
            broken.append(f"inference {fields['inference_vs_replaced']}x the replaced model's, more than {MAX_SLOWDOWN}x")
        old_acc = old_card.get("publictest_accuracy")
        fields["replaced"] = {"recipe": old_card.get("recipe", {}).get("name"), "publictest_accuracy": old_acc,
                              "tta": old_card.get("tta"), "params": old_card.get("params")}
        if old_acc is not None and acc[recipe.tta] < old_acc:
            broken.append(f"PublicTest {acc[recipe.tta]:.2%} with {recipe.tta} TTA, below the replaced model's "
                          f"{old_acc:.2%} with {old_card.get('tta')} TTA")
        fields["earlier_runs"] = _earlier_runs(old_card, old_path)
    return fields, broken


def _ship(model, recipe, dataset, history, wall_time_min, args, replaced=None, parser=None, teacher_minutes=None,
          kept=None):
    """Apply the recipe's steps after the last epoch, measure, and write the model, its card,
    its history and the pages, all or nothing. ``replaced``: (model, card, path) shipped now, which a
    new run must not fall behind (see MAX_PARAMS, MAX_SLOWDOWN) unless ``args.force``. ``wall_time_min``
    includes ``teacher_minutes``, the teacher's pass of a distilled run. ``kept``: card fields of an
    earlier ship that this one does not measure again (``--reship``)."""
    if recipe.recalibrate_bn:  # what `fervis train` does after the last epoch; the same statistics again if done
        training.recalibrate_batchnorm(model, dataset.subset("Training").x())
    # Every test-time augmentation (the runs table compares every run with ten-crop).
    results = {tta: training.evaluate(model, dataset, split="PublicTest", tta=tta) for tta in recipes.TTA}
    best = results[recipe.tta]
    acc = {tta: round(r["accuracy"], 4) for tta, r in results.items()}
    print("PublicTest accuracy: " + "  ".join(f"{tta} {value:.4f}" for tta, value in acc.items()))
    cost, broken = _cost_and_gain(model, recipe, acc, dataset, replaced)
    cost = {**(kept or {}), **cost}
    if broken and not args.force:
        message = "not shipped: " + "; ".join(broken) + " (--force ships it anyway)"
        if parser is not None:
            parser.error(message)
        raise SystemExit(message)
    standing = args.standing or (
        f"PublicTest accuracy with the recipe's TTA is {acc[recipe.tta]:.2%}: "
        + ("above" if acc[recipe.tta] >= 0.70 else "below") + " the 70 % target; "
        + ("above" if acc[recipe.tta] * 100 > PUBLISHED[0][2] else "below")
        + f" mini-Xception's {PUBLISHED[0][2]:.0f} %, below the large VGG variants' {PUBLISHED[-1][2]} %."
    )
    card = {
        "tta": recipe.tta,
        "publictest_accuracy": acc[recipe.tta],
        "publictest_accuracy_by_tta": acc,
        # The model as the last epoch left it, without TTA: `fervis train` validates on PublicTest.
        "publictest_accuracy_last_epoch": (round(float(history["val_accuracy"].iloc[-1]), 4)
                                           if "val_accuracy" in history else None),
        "balanced_accuracy": round(best["balanced_accuracy"], 4),
        "recall": {k: round(v, 4) for k, v in best["recall"].items()},
        "confusion_matrix": np.asarray(best["confusion_matrix"]).tolist(),
        "class_names": best["class_names"],
        "recipe": recipe.to_dict(),
        "params": int(model.count_params()),
        "train_faces": int((np.asarray(dataset.splits) == "Training").sum()),
        "wall_time_min": wall_time_min,
        **({"teacher_minutes": teacher_minutes} if teacher_minutes is not None else {}),
        "machine": _machine(),
        "command": f"fervis train --data fer2013.csv.gz --recipe {recipe.name} --out runs/{recipe.name}",
        "standing": standing,
        "experiments": _experiments(["this model", f"recipe `{recipe.name}`", recipe.epochs, acc["none"], acc.get("tencrop")],
                                    wall_time_min, cost.get("earlier_runs", [])),
        **cost,
        **({"shipped_despite": broken} if broken else {}),
    }
    target = models.pretrained_path("fer2013")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # write all, then move: nothing half-written
        tmp = pathlib.Path(tmp)
        model.save(tmp / target.name)
        card["size_mb"] = round((tmp / target.name).stat().st_size / 2**20, 2)
        models.load(tmp / target.name)  # the copy must load with safe_mode
        texts = (_markdown(card), _readme_block(card))  # rendered before anything is replaced
        (tmp / "card.json").write_text(json.dumps(card, indent=1) + "\n")
        history.to_csv(tmp / "history.csv", index=False)
        os.replace(tmp / target.name, target)
        os.replace(tmp / "card.json", target.with_suffix(".json"))
        os.replace(tmp / "history.csv", target.with_name("fer2013_history.csv"))
    render(card, DOCS, args.readme, texts)
    print(f"wrote {target} ({card['size_mb']} MB), its card, {DOCS} and the summary in {args.readme}")
    print(f"parameters {card['params']:,}; inference {card['inference_ms_per_face']} ms a face"
          + (f", {card['inference_vs_replaced']}x the replaced model" if "inference_vs_replaced" in card else ""))


if __name__ == "__main__":
    main()
