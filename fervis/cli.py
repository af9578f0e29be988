"""The ``fervis`` command: inspect data, train, evaluate, and run the demo.

::

    fervis data inspect SOURCE [--json]
    fervis train --data SOURCE --out DIR [--arch NAME] [--epochs N] [--recipe NAME] [--resume]
    fervis evaluate --model PATH|pretrained:fer2013 --data SOURCE [--split NAME] [--tta auto|none|flip|tencrop|flip-rotate]
                    [--model-input auto|0-255|0-1|-1-1|standardized|imagenet|caffe] [--class-order auto|fer2013|alphabetical|NAMES] [--json]
    fervis demo [--recipe NAME] [--json] [--no-report]
    fervis report [--data SOURCE] [--budget quick|full] [--model SPEC] [--model-input ...] [--class-order ...]
                  [--out DIR] [--notebooks DIR]

With ``--json`` a command prints exactly one JSON object on stdout; progress bars and
warnings go to stderr. Bad arguments and files end the command with exit status 2 and one
line on stderr, ``fervis: error: ...``; a failing notebook cell in ``report`` (or ``demo``)
ends it with exit status 1 and one such line naming the notebook, the cell and the error.
TensorFlow is imported only by the commands that need it, after the cheap checks, so
``import fervis.cli`` and argument errors are fast.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from fervis._checks import parse_class_order, positive_int
from fervis.constants import BUDGETS, MODEL_INPUTS, TTA

__all__ = ["main"]


class _UsageError(Exception):
    """A bad command line: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the usage too; one line is clearer
        if message == "argument --model-input: expected one argument":  # "-1-1" reads as an option to argparse
            message += " (for pixels in -1..1 write --model-input=-1-1)"
        raise _UsageError(message)


def _positive_int(text):
    """argparse's adapter to :func:`fervis._checks.positive_int` (argparse words its own message)."""
    try:
        return positive_int(int(text), "value", "fervis")
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None


def _path(text):
    """A path argument: an empty one would mean the current folder, which nobody means by it."""
    if not text:
        raise argparse.ArgumentTypeError("must be a path, got '' (write '.' for the current folder)")
    return text


def _keras_modules():
    """fervis.models, recipes and training (these import Keras/TensorFlow)."""
    from fervis._startup import start_tensorflow

    start_tensorflow()  # its C++ start-up text hidden, not printed before the command's output
    from fervis import models, recipes, training

    return models, recipes, training


def _load_data(source):
    from fervis import data

    return data.load(source)


def _shown(path):
    """A path as text any terminal can print: bytes of a non-UTF-8 file name (which Python keeps
    as lone surrogates) become U+FFFD instead of failing the print."""
    return os.fspath(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _jsonable(value):
    """Plain JSON types; NaN (a class without images) becomes null."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _print_json(obj):
    sys.stdout.write(json.dumps(_jsonable(obj)) + "\n")


def _table(rows, columns, index):
    import pandas as pd

    return pd.DataFrame(rows, columns=columns, index=index).to_string()


# --------------------------------------------------------------------------- commands


def _inspect(args):
    from fervis import data

    dataset = _load_data(args.source)
    info = data.describe(dataset)
    if args.json:
        _print_json(info)
        return 0
    class_names = list(dataset.class_names)
    splits = list(info["counts"])
    rows = [[info["counts"][s].get(c, 0) for c in class_names] + [sum(info["counts"][s].values())] for s in splits]
    pixels = info["pixels"]
    print(f"source: {_shown(info['source'])}")
    print(f"images: {info['n_images']}  labelled: {'yes' if info['labeled'] else 'no'}  "
          f"fingerprint: {info['fingerprint'][:16]}")
    print("\nimages per split and class:")
    print(_table(rows, class_names + ["total"], splits))
    print(f"\npixels: mean {pixels['mean']:.1f}  std {pixels['std']:.1f}  min {pixels['min']}  max {pixels['max']}")
    print(f"blank images: {len(info['constant_images'])}  duplicate groups: {len(info['duplicate_groups'])}")
    print("problems: " + ("none found" if not info["problems"] else ""))
    for problem in info["problems"]:
        print(f"  - {problem}")
    return 0


def _print_evaluation(result, header):
    print(header)
    low, high = result["accuracy_interval"]
    print(f"accuracy {result['accuracy']:.4f} (95 % interval {low:.4f}-{high:.4f})  balanced accuracy "
          f"{result['balanced_accuracy']:.4f}  (split {result['split'] or 'all'}, n={result['n']}, tta {result['tta']})")
    names = result["class_names"]
    print("\nrecall per class (95 % interval; n: the class's faces):")
    for name in names:
        n = result["support"][name]
        if n == 0:
            print(f"  {name:10} —      (no faces of this class in the split)")
            continue
        low, high = result["recall_interval"][name]
        print(f"  {name:10} {result['recall'][name]:.3f}  ({low:.3f}-{high:.3f}, n={n})")
    print("\nconfusion matrix (rows: true class, columns: predicted class):")
    print(_table(result["confusion_matrix"], names, names))


def _train(args):
    dataset = _load_data(args.data)
    out = os.path.abspath(args.out)
    if os.path.exists(os.path.join(out, "checkpoint.keras")) and not args.resume:
        raise _UsageError(
            f"--out {args.out} already holds a checkpoint of a training run; add --resume to continue it, "
            "or choose another --out"
        )
    models, recipes, training = _keras_modules()
    if args.recipe not in recipes.RECIPES:
        raise _UsageError(
            f"argument --recipe: invalid choice: {args.recipe!r} (choose from {', '.join(recipes.RECIPES)})"
        )
    if args.arch is not None and args.arch not in models.ARCHITECTURES:
        raise _UsageError(
            f"argument --arch: invalid choice: {args.arch!r} (choose from {', '.join(models.ARCHITECTURES)})"
        )
    recipe = recipes.get(args.recipe)
    recipe = recipe.replace(arch=args.arch or recipe.arch, epochs=args.epochs or recipe.epochs)
    validation = None
    if "PublicTest" in set(dataset.splits.tolist()):
        public = dataset.subset("PublicTest")
        if public.labeled:
            validation = public
    model = models.build(recipe.arch, num_classes=len(dataset.class_names), seed=recipe.seed)
    model, history = training.fit(model, dataset, recipe, out_dir=out, resume=args.resume, validation=validation)
    last = history.iloc[-1].to_dict() if len(history) else {}
    metrics = "  ".join(f"{k} {v:.4f}" for k, v in last.items() if k != "epoch" and math.isfinite(v))
    epochs = f"{len(history)} epoch{'' if len(history) == 1 else 's'}"
    print(f"trained {recipe.arch} with recipe {recipe.name!r} for {epochs} on {_shown(args.data)}; {metrics}")
    print(f"model: {_shown(os.path.join(out, training.FINAL))}")
    print(f"history: {_shown(os.path.join(out, training.HISTORY))}")
    return 0


def _evaluate(args):
    spec = args.model
    if not spec.startswith("pretrained:") and not os.path.exists(spec):
        raise ValueError(f"Model file {spec!r} does not exist.")
    dataset = _load_data(args.data)
    models, _, training = _keras_modules()
    from fervis import contract

    order = parse_class_order(args.class_order, "--class-order")
    model = models.resolve(spec, num_classes=len(dataset.class_names))
    split = None if args.split == "all" else args.split
    present = sorted(set(dataset.splits.tolist()))
    if split is not None and split not in present:  # training.evaluate would say "or None"
        raise _UsageError(f"argument --split: {split!r} is not a split of {dataset.source} "
                          f"(choose from {', '.join(present)}, all)")
    # How the model wants its faces, checked on (at most 1,000 of) the faces it is evaluated on.
    found = contract.inspect(model, dataset if split is None else dataset.subset(split),
                             model_input=args.model_input, class_order=order)
    tta = args.tta
    if tta == "auto":  # so `fervis evaluate --model pretrained:fer2013` reproduces the model card
        card = models.pretrained_card(spec.split(":", 1)[1]) if spec.startswith("pretrained:") else {}
        tta = card.get("tta", "none")
    result = training.evaluate(contract.apply(model, found), dataset, split=split, tta=tta)
    for warning in found.warnings:
        print(f"fervis: warning: {warning}", file=sys.stderr)
    if args.json:
        _print_json({"model": spec, "data": dataset.source, "contract": found.to_dict(), **result})
    else:
        _print_evaluation(result, f"model {_shown(spec)} on {_shown(dataset.source)}\nmodel contract: {found.verdict}")
    return 0


def _demo(args):
    _, recipes, training = _keras_modules()
    if args.recipe not in recipes.RECIPES:
        raise _UsageError(
            f"argument --recipe: invalid choice: {args.recipe!r} (choose from {', '.join(recipes.RECIPES)})"
        )
    dataset = _load_data("synthetic")
    if args.recipe == "quick":
        # The model the notebooks explain (MODEL="auto"): the packaged quick model where it
        # matches these faces, so a fresh clone trains nothing; else trained once and cached.
        print("fervis demo: synthetic faces and the notebooks' 'auto' model (the 'quick' recipe)", file=sys.stderr)
        model, spec, path = training.model_for(dataset, "auto"), "auto", None
        label = "the notebooks' 'auto' model (recipe 'quick') on synthetic faces"
    else:
        print(f"fervis demo: synthetic faces and the {args.recipe!r} model (trained on the first run, then "
              "cached)", file=sys.stderr)
        model = training.load_or_train(dataset, args.recipe, progress=True)
        path = training.cache_path(dataset, args.recipe)
        spec, label = str(path), f"the {args.recipe!r} model on synthetic faces (cached at {path})"
    result = training.evaluate(model, dataset, split="PublicTest")
    index = None
    if not args.no_report:
        report = _run_report("synthetic", "quick", spec, "reports", None)
        if report is None:
            return 1
        index = str(report.index.resolve())
    if args.json:
        _print_json({"recipe": args.recipe, "model_path": None if path is None else str(path), **result,
                     **({"report": index} if index else {})})
    else:
        _print_evaluation(result, label)
        if index:
            print(f"\nreport (all notebooks, executed): {index}")
    return 0


def _run_report(data, budget, model, out, notebooks_dir, model_input="auto", class_order="auto"):
    """fervis.report.run; a failing notebook prints one error line and gives None (exit 1)."""
    from fervis import report

    try:
        return report.run(data=data, budget=budget, model=model, out=out, notebooks_dir=notebooks_dir,
                          model_input=model_input, class_order=class_order)
    except report.NotebookError as err:
        print(f"fervis: error: {err}", file=sys.stderr)
        return None


def _check_report_args(args):
    """The report's cheap checks, before TensorFlow is imported (its start-up text would come first)."""
    if args.data != "synthetic" and not os.path.exists(args.data):
        raise _UsageError(f"argument --data: {args.data!r} does not exist (a FER2013 file or folder, or synthetic)")
    spec = args.model
    if spec not in ("auto", "train") and not spec.startswith(("train:", "pretrained:")) and not os.path.exists(
            os.path.expanduser(spec)):
        raise _UsageError(f"argument --model: {spec!r} is not auto, train, train:RECIPE, pretrained:NAME or an "
                          "existing .keras/.h5 file")
    if args.notebooks is not None and not os.path.isdir(args.notebooks):
        raise _UsageError(f"argument --notebooks: {args.notebooks!r} is not a folder")
    _keras_modules()  # TensorFlow's start-up text hidden here, not printed by report.run


def _report(args):
    _check_report_args(args)
    report = _run_report(args.data, args.budget, args.model, args.out, args.notebooks,
                         model_input=args.model_input, class_order=args.class_order)
    if report is None:
        return 1
    print(f"report: {report.index.resolve()}")
    return 0


# --------------------------------------------------------------------------- parser


def _contract_arguments(command):
    command.add_argument("--model-input", default="auto", choices=MODEL_INPUTS,
                         help="the pixels the model was trained on; auto (default): found on the faces")
    command.add_argument("--class-order", default="auto", metavar="ORDER",
                         help="auto (default: found on the faces), fer2013, alphabetical, or the 7 class names in the "
                              "model's output order, separated by commas")


def _parser():
    parser = _Parser(prog="fervis", description="What has a facial-expression CNN learned?")
    from fervis import __version__

    parser.add_argument("--version", action="version", version=f"fervis {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = commands.add_parser("data", help="look at a dataset")
    data_commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    inspect = data_commands.add_parser("inspect", help="counts per split and class, pixel statistics, problems")
    inspect.add_argument("source", type=_path, metavar="SOURCE", help="'synthetic' or a FER2013 file or folder")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.set_defaults(func=_inspect)

    train = commands.add_parser("train", help="train a model with checkpoints and resume")
    train.add_argument("--data", required=True, type=_path, metavar="SOURCE", help="'synthetic' or a FER2013 file or folder")
    train.add_argument("--out", required=True, type=_path, metavar="DIR", help="run directory (checkpoint, history, model)")
    train.add_argument("--arch", metavar="NAME", help="tiny, compact, small, vgg or vgg-wide (default: the recipe's)")
    train.add_argument("--epochs", type=_positive_int, metavar="N", help="default: the recipe's")
    train.add_argument("--recipe", default="quick", metavar="NAME",
                       help="tiny, quick, fer2013, fer2013-kd, fer2013-wide or fer2013-mixup (default quick)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.set_defaults(func=_train)

    evaluate = commands.add_parser("evaluate", help="accuracy, per-class recall and confusion matrix")
    evaluate.add_argument("--model", required=True, type=_path, metavar="PATH", help="a .keras/.h5 file or pretrained:fer2013")
    evaluate.add_argument("--data", required=True, type=_path, metavar="SOURCE", help="'synthetic' or a FER2013 file or folder")
    evaluate.add_argument("--split", default="PublicTest", metavar="NAME",
                          help="Training, PublicTest, PrivateTest or all (default PublicTest)")
    evaluate.add_argument("--tta", default="auto", choices=("auto",) + TTA,
                          help="test-time augmentation; auto (default): a pretrained model's documented one, else none")
    _contract_arguments(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(func=_evaluate)

    demo = commands.add_parser("demo", help="train (once) and evaluate the quick model on synthetic faces, then "
                                            "run the report on them")
    demo.add_argument("--recipe", default="quick", metavar="NAME", help="default quick")
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    demo.add_argument("--no-report", action="store_true", help="only evaluate; do not run the notebooks")
    demo.set_defaults(func=_demo)

    report = commands.add_parser("report", help="run every notebook into reports/<data-name>/ (HTML + index)")
    report.add_argument("--data", default="synthetic", type=_path, metavar="SOURCE",
                        help="'synthetic' (default) or a FER2013 file or folder")
    report.add_argument("--budget", default="quick", choices=tuple(BUDGETS), help="default quick")
    report.add_argument("--model", default="auto", type=_path, metavar="SPEC",
                        help="auto (default), train, train:RECIPE, a .keras/.h5 file or pretrained:fer2013")
    _contract_arguments(report)
    report.add_argument("--out", default="reports", type=_path, metavar="DIR",
                        help="reports folder (default reports); the report goes to DIR/<data-name>/")
    report.add_argument("--notebooks", type=_path, metavar="DIR", help="notebooks folder (default: the repository's)")
    report.set_defaults(func=_report)
    return parser


def main(argv=None):
    """Run the ``fervis`` command line; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``fervis``; default ``sys.argv[1:]``.

    Returns
    -------
    int
        0 on success, 1 when a notebook of ``report``/``demo`` fails, 2 for bad arguments or
        files, 130 when interrupted.

    Example
    -------
    >>> main(["data", "inspect", "synthetic", "--json"])  # doctest: +SKIP
    0
    """
    try:
        args = _parser().parse_args(argv)
        return args.func(args)
    except (_UsageError, ValueError, TypeError, OSError) as err:
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"fervis: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fervis: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
