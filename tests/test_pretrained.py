"""The models that ship inside the package load safely and do what their cards say."""

import importlib.util
import json
import pathlib

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")

from fervis import cli, data, models, recipes, training  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_auto_model_on_embedded_default_is_the_packaged_one():
    meta = json.loads(models.pretrained_path("synthetic").with_suffix(".json").read_text())
    dataset = data.load("synthetic")
    assert dataset.fingerprint == meta["fingerprint"], "synthetic faces changed: rebuild with scripts/make_pretrained_synthetic.py"
    model = training.model_for(dataset, "auto")
    assert model.input_shape == (None, 48, 48, 1) and model.output_shape == (None, 7)
    result = training.evaluate(model, dataset, split="PublicTest")
    assert abs(result["accuracy"] - meta["publictest_accuracy"]) <= 0.005
    assert 0.80 <= result["accuracy"] <= 0.95  # the synthetic set is built to land here


def test_other_data_does_not_get_the_packaged_synthetic_model(synthetic_small, monkeypatch):
    calls = []
    monkeypatch.setattr(training, "load_or_train", lambda dataset, recipe="quick", **kw: calls.append(recipe) or "trained")
    assert training.model_for(synthetic_small, "auto") == "trained"
    assert calls == ["quick"]


def test_train_retrains_even_where_auto_would_load_a_packaged_model(monkeypatch):
    calls = []
    monkeypatch.setattr(training, "load_or_train", lambda dataset, recipe="quick", **kw: calls.append(recipe) or "trained")
    dataset = data.load("synthetic")
    assert training.model_for(dataset, "train") == "trained"
    assert training.model_for(dataset, "train:tiny") == "trained"
    assert calls == ["quick", "tiny"]
    with pytest.raises(ValueError, match=r"names recipe 'resnet' in 'train:resnet'; recipes are \['fer2013'"):
        training.model_for(dataset, "train:resnet")


def _shipped():
    path = models.pretrained_path("fer2013")
    assert path.exists(), f"{path} is missing: the FER2013 model ships with the package (scripts/ship_fer2013.py)"
    return path, models.pretrained_card("fer2013")


def test_shipped_fer2013_model_contract():
    """Loads with safe_mode, at most 20 MB, raw 0-255 faces in, a softmax over 7 classes out."""
    path, card = _shipped()
    assert path.stat().st_size <= 20 * 2**20
    model = models.load_pretrained("fer2013", num_classes=7)
    assert model.input_shape == (None, 48, 48, 1) and model.output_shape == (None, 7)
    assert model.count_params() == card["params"]
    faces = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 1)).astype("float32")
    probs = np.asarray(model(faces))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs >= 0).all()
    # Raw pixels: the model rescales them itself, so a face and the same face / 255 differ.
    assert not np.allclose(probs, np.asarray(model(faces / 255.0)), atol=1e-3)


def test_shipped_fer2013_card_is_consistent():
    """The card was measured from the current recipe, and its numbers agree with each other."""
    _, card = _shipped()
    assert card["recipe"] == recipes.get(card["recipe"]["name"]).to_dict(), "recipe changed: retrain and re-ship the model"
    assert card["tta"] == card["recipe"]["tta"]
    assert card["publictest_accuracy"] == card["publictest_accuracy_by_tta"][card["tta"]]
    cm = np.asarray(card["confusion_matrix"])
    assert cm.shape == (7, 7) and cm.sum() == 3589  # FER2013's PublicTest
    assert abs(np.trace(cm) / cm.sum() - card["publictest_accuracy"]) <= 1e-4
    recall = cm.diagonal() / cm.sum(axis=1)
    np.testing.assert_allclose([card["recall"][n] for n in card["class_names"]], recall, atol=1e-4)
    history = pd.read_csv(models.pretrained_path("fer2013").with_name("fer2013_history.csv"))
    assert len(history) == card["recipe"]["epochs"]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history.columns)
    # The runs the recipe was chosen from end with this model's own measurements.
    run, _, epochs, none, tencrop, wall = card["experiments"][-1]
    assert run == "this model" and epochs == card["recipe"]["epochs"] and wall == card["wall_time_min"]
    assert all(len(row) == 6 for row in card["experiments"])
    assert none == card["publictest_accuracy_by_tta"]["none"]
    assert tencrop == card["publictest_accuracy_by_tta"].get("tencrop")
    # The last validation row of training is the model as the last epoch left it, without TTA, on
    # PublicTest; recomputing the batch-norm statistics after it is what the recipe adds.
    assert card["publictest_accuracy_last_epoch"] == round(history["val_accuracy"].iloc[-1], 4)
    assert card["recipe"]["recalibrate_bn"] and none > card["publictest_accuracy_last_epoch"]


@pytest.fixture(scope="module")
def ship():
    path = ROOT / "scripts" / "ship_fer2013.py"
    spec = importlib.util.spec_from_file_location("ship_fer2013", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_card_summary_is_the_shipped_card(ship):
    """README's card summary is what the ship script writes from the shipped card (not a stale copy)."""
    _, card = _shipped()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    begin, end = readme.index(ship.CARD_BEGIN), readme.index(ship.CARD_END) + len(ship.CARD_END)
    assert readme[begin:end] == ship._readme_block(card), "README's card is stale: re-run scripts/ship_fer2013.py"
    acc = card["publictest_accuracy"]
    assert f"**{acc:.2%}**" in readme[begin:end]
    assert f"{card['recipe']['epochs']} epochs" in readme[begin:end]


def test_recipe_sentence_follows_the_recipe_fields(ship):
    sgd = recipes.Recipe("x", "vgg", epochs=3, optimizer="sgd", learning_rate=0.05, weight_decay=5e-4,
                         warmup_epochs=1, shift=0.1, rotation=10.0, zoom=0.0, erasing=0.25, tta="tencrop").to_dict()
    assert ship._recipe_sentence(sgd) == (
        "3 epochs, batch 128, SGD with Nesterov momentum, learning rate 0.05 with 1 warm-up epoch and cosine "
        "decay, weight decay 0.0005, label smoothing 0.1, flip, shift 0.1, rotation 10°, random erasing 0.25, "
        "ten-crop test-time augmentation.")
    bare = dict(sgd, optimizer="adamw", warmup_epochs=0, flip=False, shift=0.0, rotation=0.0, erasing=0.0, tta="none")
    assert ship._recipe_sentence(bare) == (
        "3 epochs, batch 128, AdamW, learning rate 0.05 and cosine decay, weight decay 0.0005, "
        "label smoothing 0.1, no augmentation, no test-time augmentation.")
    assert ship._recipe_sentence(dict(bare, tta="flip-rotate")).endswith(
        ", flip-and-rotate (0°, ±5°, ±10°) test-time augmentation.")
    assert ship._recipe_sentence(dict(bare, recalibrate_bn=True)).endswith(
        ", no augmentation, batch-norm statistics recomputed on the clean training faces after the last epoch, "
        "no test-time augmentation.")
    assert ship._recipe_sentence(dict(bare, mixup=0.2)).endswith(", mixup 0.2, no test-time augmentation.")
    assert set(ship._TTA_NAMES) == set(recipes.TTA)


def test_render_only_rewrites_the_page_and_readme_from_the_card(ship, tmp_path, monkeypatch):
    """`--render-only` measures nothing; on the shipped card it reproduces the committed page and summary."""
    card_path = models.pretrained_path("fer2013").with_suffix(".json")
    (tmp_path / "fer2013.json").write_text(card_path.read_text())
    monkeypatch.setattr(ship.models, "pretrained_path", lambda name: tmp_path / f"{name}.keras")
    monkeypatch.setattr(ship, "DOCS", tmp_path / "card.md")
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{ship.CARD_BEGIN}\nold\n{ship.CARD_END}\n\nAfter.\n", encoding="utf-8")
    ship.main(["--render-only", "--readme", str(readme)])
    # The committed page is not stale, and the card's experiments are the script's EXPERIMENTS.
    assert (tmp_path / "card.md").read_text() == ship.DOCS.read_text() == (ROOT / "docs" / "model_card_fer2013.md").read_text()
    assert json.loads((tmp_path / "fer2013.json").read_text()) == json.loads(card_path.read_text())
    assert readme.read_text(encoding="utf-8") == (
        f"# Title\n\n{ship._readme_block(json.loads(card_path.read_text()))}\n\nAfter.\n")
    ship.main(["--render-only", "--readme", str(readme), "--standing", "Where it stands, in new words."])
    assert json.loads((tmp_path / "fer2013.json").read_text())["standing"] == "Where it stands, in new words."
    assert "Where it stands, in new words." in (tmp_path / "card.md").read_text()
    assert "Where it stands, in new words." in readme.read_text(encoding="utf-8")


def test_wall_time_counts_training_not_the_gaps_between_resumes(ship, tmp_path):
    """A run resumed in a later session: the hours between its segments are not training time."""
    import tensorflow as tf
    from tensorboard.compat.proto.event_pb2 import Event

    def segment(sub, start, minutes, pid):
        path = tmp_path / "tb" / sub / f"events.out.tfevents.{start}.vm.{pid}.0.v2"
        path.parent.mkdir(parents=True, exist_ok=True)
        with tf.io.TFRecordWriter(str(path)) as writer:
            for m in minutes:
                writer.write(Event(wall_time=start + 60.0 * m, step=m).SerializeToString())

    segment("train", 1_000_000, [0, 10, 30], 1)        # 30 minutes of training
    segment("validation", 1_000_120, [0, 29, 31], 1)   # starts 2 min in, overlaps it, ends at minute 33
    segment("train", 1_000_000 + 5 * 3600, [0, 20], 2)  # resumed five hours later: 20 more minutes
    assert ship._wall_minutes(tmp_path) == 33 + 20
    assert ship._wall_minutes(tmp_path / "nothing") is None
    # A distilled run's cost adds the teacher's pass, kept in its teacher.npz; unknown stays unknown.
    kd = recipes.get("fer2013-kd")
    assert ship._run_cost(tmp_path, kd) == (53, None)
    with open(tmp_path / training.TEACHER, "wb") as f:
        np.savez(f, probs=np.full((2, 7), 1 / 7), teacher=kd.teacher, tta=kd.tta, faces="x", seconds=90.0)
    assert ship._run_cost(tmp_path, kd) == (54.5, 1.5)
    assert ship._run_cost(tmp_path / "nothing", kd) == (None, None)


def test_ship_script_refuses_before_writing(ship, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ship, "DOCS", tmp_path / "card.md")
    monkeypatch.setattr(ship.models, "pretrained_path", lambda name: tmp_path / f"{name}.keras")
    (tmp_path / "README.md").write_text("# no markers\n")
    with pytest.raises(SystemExit):
        ship.main(["--render-only", "--readme", str(tmp_path / "README.md")])
    assert "has no <!-- card:begin --> ... <!-- card:end --> markers" in capsys.readouterr().err
    (tmp_path / "README.md").write_text(f"{ship.CARD_BEGIN}\n{ship.CARD_END}\n")
    with pytest.raises(SystemExit):
        ship.main(["--readme", str(tmp_path / "README.md")])
    assert "give the run directory and --data (or --render-only, or --reship)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ship.main(["--reship", "--readme", str(tmp_path / "README.md")])
    assert "--reship needs --data" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ship.main(["--reship", "--data", "synthetic", "--readme", str(tmp_path / "README.md")])
    assert "fer2013.json does not exist: ship a run first" in capsys.readouterr().err
    (tmp_path / "fer2013.json").write_text(json.dumps({"recipe": recipes.get("fer2013").replace(epochs=7).to_dict()}))
    with pytest.raises(SystemExit):
        ship.main(["--reship", "--data", "synthetic", "--readme", str(tmp_path / "README.md")])
    assert "the shipped model was trained with other fields ['epochs'] than the fer2013 recipe" in capsys.readouterr().err
    (tmp_path / "fer2013.json").unlink()
    with pytest.raises(SystemExit):
        ship.main(["--render-only", "--readme", str(tmp_path / "README.md")])
    assert "fer2013.json does not exist: ship a run first" in capsys.readouterr().err
    # A finished run of another recipe: the card would describe a training the model never had.
    run = tmp_path / "runs" / "tiny"
    training.fit(models.build("tiny", seed=0), (np.zeros((8, 48, 48)), np.arange(8) % 7),
                 recipes.get("tiny").replace(epochs=1), out_dir=run, verbose=False)
    with pytest.raises(SystemExit):
        ship.main([str(run), "--data", "synthetic", "--readme", str(tmp_path / "README.md")])
    assert ("was trained with another recipe than fer2013: fields ['arch', 'batch_size', 'epochs', 'erasing', "
            "'label_smoothing', 'learning_rate', 'rotation', 'shift', 'warmup_epochs', 'weight_decay', 'zoom'] are "
            "['tiny', 64, 1, 0.0") in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ship.main([str(run), "--recipe", "fer2013-kd", "--data", "synthetic", "--readme", str(tmp_path / "README.md")])
    assert "was trained with another recipe than fer2013-kd: fields ['arch', 'batch_size', 'distill', " in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ship.main([str(run), "--recipe", "quick", "--data", "synthetic", "--readme", str(tmp_path / "README.md")])
    assert "argument --recipe: invalid choice: 'quick' (choose from" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "runs"]
    assert (tmp_path / "README.md").read_text() == f"{ship.CARD_BEGIN}\n{ship.CARD_END}\n"


def test_reship_recalibrates_the_shipped_model_and_measures_it_again(ship, synthetic_small, tmp_path, monkeypatch):
    """`--reship` applies the recipe's batch-norm recalibration to the shipped model, measures it again
    and writes model, card, history and pages together; the history and wall time are the old card's."""
    csv = tmp_path / "faces.csv"
    pd.DataFrame({"emotion": synthetic_small.labels, "Usage": synthetic_small.splits,
                  "pixels": [" ".join(map(str, face.ravel())) for face in synthetic_small.images]}).to_csv(csv, index=False)
    monkeypatch.setattr(ship.models, "pretrained_path", lambda name: tmp_path / f"{name}.keras")
    monkeypatch.setattr(ship, "DOCS", tmp_path / "card.md")
    (tmp_path / "README.md").write_text(f"{ship.CARD_BEGIN}\n{ship.CARD_END}\n")
    model = models.build("compact", seed=0)
    model.save(tmp_path / "fer2013.keras")
    earlier = [["recipe `fer2013` (shipped before)", "the model before", 100, 0.6, 0.62, 300.0]]
    (tmp_path / "fer2013.json").write_text(json.dumps({
        "recipe": recipes.get("fer2013").to_dict(), "wall_time_min": 12.5, "teacher_minutes": 2.0, "earlier_runs": earlier,
        "replaced": {"recipe": "fer2013"}, "inference_vs_replaced": 1.02}))
    pd.DataFrame({"epoch": [0], "val_accuracy": [0.2]}).to_csv(tmp_path / "fer2013_history.csv", index=False)
    ship.main(["--reship", "--data", str(csv), "--readme", str(tmp_path / "README.md")])
    card = json.loads((tmp_path / "fer2013.json").read_text())
    shipped = models.load(tmp_path / "fer2013.keras")
    train = synthetic_small.subset("Training").x()
    norm = shipped.get_layer("block1_bn1")
    inner = np.asarray(keras.Model(shipped.inputs, norm.input).predict(train, verbose=0), dtype=np.float64)
    np.testing.assert_allclose(norm.moving_mean.numpy(), inner.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    assert card["wall_time_min"] == 12.5 and card["train_faces"] == 700
    # What was measured against the model it replaced stays (that model is gone); the runs table keeps it.
    assert card["teacher_minutes"] == 2.0 and card["inference_vs_replaced"] == 1.02 and card["earlier_runs"] == earlier
    assert card["experiments"][-2] == earlier[0] and card["inference_ms_per_face"] > 0
    measured = training.evaluate(shipped, synthetic_small, split="PublicTest", tta=card["tta"])["accuracy"]
    assert abs(measured - card["publictest_accuracy"]) <= 1e-4
    assert card["publictest_accuracy_last_epoch"] == 0.2  # the history's last validation
    assert pd.read_csv(tmp_path / "fer2013_history.csv")["val_accuracy"].tolist() == [0.2]
    assert f"**{card['publictest_accuracy']:.2%}**" in (tmp_path / "README.md").read_text()
    assert "batch-norm statistics recomputed" in (tmp_path / "card.md").read_text()


def test_ship_refuses_a_model_that_falls_behind_the_one_it_replaces(ship, synthetic_small, tmp_path, monkeypatch, capsys):
    """A new run ships only if it scores at least as well as the shipped model with its recipe's TTA, has at most
    MAX_PARAMS parameters and runs at most MAX_SLOWDOWN times slower; --force ships it and the card says why."""
    import argparse

    monkeypatch.setattr(ship.models, "pretrained_path", lambda name: tmp_path / f"{name}.keras")
    monkeypatch.setattr(ship, "DOCS", tmp_path / "card.md")
    readme = tmp_path / "README.md"
    readme.write_text(f"{ship.CARD_BEGIN}\n{ship.CARD_END}\n")
    old = models.build("compact", seed=0)
    old.save(tmp_path / "old.keras")
    (tmp_path / "fer2013-v1.keras").write_bytes((tmp_path / "old.keras").read_bytes())  # a kept copy of it
    old_card = {"recipe": recipes.get("fer2013").to_dict(), "publictest_accuracy": 0.99, "tta": "tencrop",
                "params": old.count_params(), "wall_time_min": 30.5,
                "experiments": [["probe", "an earlier run", 3, 0.25, None, None], ["this model", "x", 100, 0.98, 0.99]]}
    replaced = (old, old_card, tmp_path / "old.keras")
    new = models.build("compact", seed=1)  # untrained: near chance on the synthetic PublicTest faces
    history = pd.DataFrame({"epoch": [0], "val_accuracy": [0.2]})
    kd = recipes.get("fer2013-kd")
    args = argparse.Namespace(force=False, standing="", readme=readme)
    with pytest.raises(SystemExit, match=r"not shipped: PublicTest \d+\.\d\d% with tencrop TTA, below the replaced "
                                         r"model's 99\.00% with tencrop TTA \(--force ships it anyway\)"):
        ship._ship(new, kd, synthetic_small, history, 7.0, args, replaced=replaced)
    before = ["README.md", "fer2013-v1.keras", "old.keras"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    # Slower than MAX_SLOWDOWN times the replaced model (the timings stand in for a slow machine).
    timed = ship._inference_ms
    monkeypatch.setattr(ship, "_inference_ms", lambda compared, faces: [3.0, 1.0][:len(compared)])
    with pytest.raises(SystemExit, match=r"not shipped: inference 3\.0x the replaced model's, more than 1\.5x; PublicTest"):
        ship._ship(new, kd, synthetic_small, history, 7.0, args, replaced=replaced)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    monkeypatch.setattr(ship, "_inference_ms", timed)
    monkeypatch.setattr(ship, "MAX_PARAMS", 1000)
    with pytest.raises(SystemExit, match=r"not shipped: \d[\d,]* parameters, more than 1,000; PublicTest"):
        ship._ship(new, kd, synthetic_small, history, 7.0, args, replaced=replaced)
    ship._ship(new, kd, synthetic_small, history, 7.0, argparse.Namespace(force=True, standing="", readme=readme),
               replaced=replaced, teacher_minutes=2.5)
    card = json.loads((tmp_path / "fer2013.json").read_text())
    too_big, worse = card["shipped_despite"]
    assert too_big == f"{new.count_params():,} parameters, more than 1,000" and worse.startswith("PublicTest ")
    assert card["replaced"] == {"recipe": "fer2013", "publictest_accuracy": 0.99, "tta": "tencrop",
                                "params": old.count_params()}
    # Same architecture, interleaved best-of-three timings: close to 1x (generous bounds: a shared machine).
    assert card["inference_ms_per_face"] > 0 and 0.3 < card["inference_vs_replaced"] < 3.0
    assert card["command"] == "fervis train --data fer2013.csv.gz --recipe fer2013-kd --out runs/fer2013-kd"
    text = readme.read_text()
    assert "Recipe (`fervis.recipes.RECIPES['fer2013-kd']`)" in text
    assert "| taught by | `pretrained:fer2013-v1` (knowledge distillation, weight 0.5) |" in text
    assert ("taught by `pretrained:fer2013-v1`: the target mixes the label with the teacher's ten-crop TTA probabilities "
            "at weight 0.5") in text
    assert "x the model it replaced, measured in the same run |" in text
    assert "| wall time | 7 min (of which 2.5 min computing the teacher's probabilities, once) on " in text
    assert f"| shipped despite | {too_big}; {worse} (`--force`) |" in text
    page = (tmp_path / "card.md").read_text()
    assert "python scripts/ship_fer2013.py runs/fer2013-kd --recipe fer2013-kd --data fer2013.csv.gz" in page
    assert "| this model | recipe `fer2013-kd` | 1 |" not in page  # the history is one epoch, the recipe's 100
    assert "| this model | recipe `fer2013-kd` | 100 | " in page and page.rstrip().count("| 7 min |") == 1
    # The model it replaced joins the runs table, under the name of the packaged copy that keeps it.
    assert card["earlier_runs"] == [["recipe `fer2013` (shipped before, kept as `pretrained:fer2013-v1`)",
                                     "the model `pretrained:fer2013` was until this one: 99.00% with tencrop TTA",
                                     100, 0.98, 0.99, 30.5]]
    assert card["experiments"][-2] == card["earlier_runs"][0] and card["experiments"][-1][0] == "this model"
    assert "| recipe `fer2013` (shipped before, kept as `pretrained:fer2013-v1`) | " in page


@pytest.mark.fer2013
def test_shipped_fer2013_model_reaches_its_documented_accuracy(fer2013_path, capsys):
    """`fervis evaluate --model pretrained:fer2013 --json` measures the card's PublicTest figure."""
    _, card = _shipped()
    assert cli.main(["evaluate", "--model", "pretrained:fer2013", "--data", fer2013_path,
                     "--split", "PublicTest", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tta"] == card["tta"] and result["n"] == 3589
    assert abs(result["accuracy"] - card["publictest_accuracy"]) <= 0.005


@pytest.mark.fer2013
def test_auto_model_on_fer2013_is_the_shipped_one(fer2013_path):
    dataset = data.load(fer2013_path)
    model = training.model_for(dataset, "auto")
    shipped = models.load_pretrained("fer2013")
    faces = dataset.subset("PublicTest").images[:8, ..., None].astype("float32")
    np.testing.assert_allclose(np.asarray(model(faces)), np.asarray(shipped(faces)), atol=1e-6)
