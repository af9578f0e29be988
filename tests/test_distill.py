"""Tests for distillation from a teacher (Recipe.teacher, Recipe.distill; fervis.training.fit's targets)
and for the recipe hashes that the new fields must leave as they were."""

import json
import zipfile

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")

from fervis import models, recipes, training  # noqa: E402

TINY = recipes.get("tiny")


@pytest.fixture(scope="module")
def teacher_path(tiny_model, tmp_path_factory):
    """The session's trained tiny model (88 % on its training faces) saved as a .keras teacher."""
    path = tmp_path_factory.mktemp("teacher") / "teacher.keras"
    tiny_model.save(path)
    return path


# --------------------------------------------------------------------------- recipe fields


def test_recipe_hashes_never_change():
    # These hashes must never change: models cached under $FERVIS_HOME and resumable training runs
    # (checkpoints, e.g. a 100-epoch fer2013 run across sessions) are keyed by them, so a new Recipe
    # field has to leave them as they were at its default (Recipe.to_dict leaves it out).
    expected = {"tiny": "9adc3af23f47", "quick": "82710adff699", "fer2013": "e53990e2c52b"}
    assert {name: training._recipe_hash(recipes.RECIPES[name]) for name in expected} == expected
    assert "teacher" not in recipes.get("fer2013").to_dict() and "distill" not in recipes.get("fer2013").to_dict()
    kd = recipes.get("fer2013-kd")
    assert kd.to_dict()["teacher"] == "pretrained:fer2013-v1" and kd.to_dict()["distill"] == 0.5
    assert training._recipe_hash(kd) != expected["fer2013"]
    for recipe in (recipes.get("fer2013"), kd):  # what a checkpoint saves reads back as the same recipe
        assert recipes.Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe


def test_the_fer2013_kd_teacher_is_a_fixed_model_not_the_one_a_student_replaces():
    """``fer2013-kd`` is taught by ``pretrained:fer2013-v1``, the first shipped model kept as it was: a student
    shipped as ``pretrained:fer2013`` must not become the teacher of the recipe that made it."""
    kd = recipes.get("fer2013-kd")
    assert kd.teacher == "pretrained:fer2013-v1"
    card = models.pretrained_card("fer2013-v1")
    # The teacher was trained by the plain fer2013 recipe (no teacher of its own), and measured as such.
    assert card["recipe"] == recipes.get("fer2013").to_dict() and "teacher" not in card["recipe"]
    assert card["publictest_accuracy"] == card["publictest_accuracy_by_tta"]["tencrop"] == 0.7058
    teacher = models.resolve(kd.teacher)
    assert teacher.count_params() == card["params"] and teacher.output_shape == (None, 7)


def test_teacher_and_distill_are_training_fields():
    base, kd = recipes.get("fer2013"), recipes.get("fer2013-kd")
    assert kd == base.replace(name="fer2013-kd", teacher="pretrained:fer2013-v1", distill=0.5, seed=1)
    assert kd.trains_unlike(base) == ["distill", "seed", "teacher"] == base.trains_unlike(kd)
    assert kd.trains_unlike(kd.replace(distill=0.7)) == ["distill"]
    assert kd.trains_unlike(kd.replace(teacher="other.keras")) == ["teacher"]
    # The TTA makes the teacher's probabilities, so it decides a distilled run's epochs, not a plain one's.
    assert kd.trains_unlike(kd.replace(tta="flip")) == ["tta"]
    assert base.trains_unlike(base.replace(tta="flip")) == []
    assert kd.replace(distill=1).distill == 1.0 and isinstance(kd.replace(distill=1).distill, float)


DISTILL = r"'distill' parameter of fervis\.recipes\.Recipe must be a number >= 0\.0 and <= 1\.0\. Got "


@pytest.mark.parametrize("changes, match", [
    ({"teacher": "t.keras", "distill": 1.5}, DISTILL + r"1.5"),
    ({"teacher": "t.keras", "distill": -0.1}, DISTILL + r"-0.1"),
    ({"teacher": "t.keras", "distill": "0.5"}, DISTILL + r"'0.5'"),
    ({"teacher": "t.keras", "distill": True}, DISTILL + r"True"),
    ({"teacher": "t.keras", "distill": float("nan")}, DISTILL + "nan"),
    ({"teacher": 3, "distill": 0.5}, r"Recipe field 'teacher' must be a model spec \(str\) or ''. Got 3"),
    ({"distill": 0.5}, r"'teacher' and 'distill' go together.*Got teacher='', distill=0.5 in recipe 'tiny'"),
    ({"teacher": "t.keras"}, r"'teacher' and 'distill' go together.*Got teacher='t.keras', distill=0.0"),
])
def test_bad_teacher_or_distill_refused(changes, match):
    with pytest.raises(ValueError, match=match):
        TINY.replace(**changes)
    with pytest.raises(ValueError, match=match):
        recipes.Recipe.from_dict({**TINY.to_dict(), **changes})


def _saved(model, tmp_path, name):
    path = tmp_path / f"{name}.keras"
    model.save(path)
    return path


def test_teacher_that_does_not_fit_the_student_is_refused(tmp_path):
    x, y = np.random.default_rng(0).integers(0, 256, (32, 48, 48, 1)).astype(np.float32), np.arange(32) % 7
    five = _saved(models.build("tiny", num_classes=5, seed=0), tmp_path, "five")
    rgb_input = keras.Input((48, 48, 3))
    rgb = keras.Model(rgb_input, keras.layers.Dense(7, activation="softmax")(keras.layers.Flatten()(rgb_input)))
    grey_input = keras.Input((48, 48, 1))
    linear = keras.Model(grey_input, keras.layers.Dense(7)(keras.layers.Flatten()(grey_input)))  # no softmax
    flat = keras.layers.Flatten()(grey_input)
    two = keras.Model(grey_input, [keras.layers.Dense(7, activation="softmax")(flat),
                                   keras.layers.Dense(7, activation="softmax")(flat)])  # two outputs
    cases = [
        (five, r"Recipe field 'teacher' of recipe 'tiny' names '.*five.keras', a model with output shape "
               r"\(None, 5\); it must output the student 'tiny'.s 7 class probabilities"),
        (_saved(rgb, tmp_path, "rgb"), r"Recipe field 'teacher' of recipe 'tiny' names '.*rgb.keras', a model with "
                                       r"input shape \(None, 48, 48, 3\); it must take the student 'tiny'.s input"),
        (_saved(linear, tmp_path, "linear"), r"names '.*linear.keras', whose outputs are not probabilities"),
        (_saved(two, tmp_path, "two"), r"Recipe field 'teacher' of recipe 'tiny' names '.*two.keras', a model with "
                                       r"input shape .* and output shape \[.*\]; it must take the student 'tiny'.s "
                                       r"input \(n,\) \+ \(48, 48, 1\) and output the student 'tiny'.s 7 class"),
        (tmp_path / "missing.keras", r"Recipe field 'teacher' of recipe 'tiny' names '.*missing.keras', which "
                                     r"fervis cannot load: .*does not exist"),
    ]
    for teacher, match in cases:
        recipe = TINY.replace(teacher=str(teacher), distill=0.5)
        with pytest.raises(ValueError, match=match):
            training.fit(models.build("tiny", seed=0), (x, y), recipe, out_dir=tmp_path / "run", verbose=False)
        assert not (tmp_path / "run" / training.TEACHER).exists()
        assert not (tmp_path / "run" / training.CHECKPOINT).exists()


# --------------------------------------------------------------------------- targets and training


def test_targets_are_the_teachers_tta_probabilities_mixed_with_the_labels(synthetic_small, teacher_path, tmp_path):
    train = synthetic_small.subset("Training")
    x, y = train.x()[:100], np.asarray(train.labels)[:100]
    teacher = models.load(teacher_path)
    expected = recipes.predict(teacher, x, tta="flip")
    assert not np.allclose(expected, recipes.predict(teacher, x, tta="none"))  # the TTA is what is used
    student = models.build("tiny", seed=0)
    recipe = TINY.replace(teacher=str(teacher_path), distill=1.0, tta="flip")
    np.testing.assert_allclose(training._targets(student, x, y, recipe), expected, atol=1e-6)
    half = training._targets(student, x, y, recipe.replace(distill=0.25), out=tmp_path)
    np.testing.assert_allclose(half, 0.75 * keras.utils.to_categorical(y, 7) + 0.25 * expected, atol=1e-6)
    np.testing.assert_allclose(half.sum(axis=1), 1.0, atol=1e-6)
    with np.load(tmp_path / training.TEACHER) as saved:
        assert str(saved["teacher"]) == str(teacher_path) and str(saved["tta"]) == "flip"
        np.testing.assert_allclose(saved["probs"], expected, atol=1e-6)
        seconds = float(saved["seconds"])
    # The teacher's pass is part of the run's cost: its time is kept (a run's card adds it to the epochs').
    assert 0 < seconds < 120 and training.teacher_seconds(tmp_path) == seconds
    assert training.teacher_seconds(tmp_path / "nowhere") is None
    np.testing.assert_array_equal(training._targets(student, x, y, TINY), keras.utils.to_categorical(y, 7))


def test_distillation_pulls_the_student_to_the_teacher(synthetic_small, teacher_path):
    """With distill=1 the labels do not count: students trained on wrong labels (the true class + 3),
    with and without the teacher, agree with the teacher's predictions far more with it."""
    train = synthetic_small.subset("Training")
    x, y = train.x(), np.asarray(train.labels)
    teacher_probs = recipes.predict(models.load(teacher_path), x)
    wrong = (y + 3) % 7
    recipe = TINY.replace(epochs=5)
    agree, cross_entropy = {}, {}
    for distill in (0.0, 1.0):
        distilled = recipe.replace(teacher=str(teacher_path) if distill else "", distill=distill)
        student, history = training.fit(models.build("tiny", seed=0), (x, wrong), distilled, verbose=False)
        probs = recipes.predict(student, x)
        agree[distill] = float((probs.argmax(1) == teacher_probs.argmax(1)).mean())
        cross_entropy[distill] = float(-(teacher_probs * np.log(probs + 1e-7)).sum(axis=1).mean())
        assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    assert agree[1.0] > 0.4 and agree[1.0] > agree[0.0] + 0.3, agree  # measured 0.62 and 0.10
    assert cross_entropy[1.0] < cross_entropy[0.0] - 0.5, cross_entropy  # measured 1.34 and 2.59


def test_resume_reads_the_teachers_probabilities_and_refuses_another_teacher(teacher_path, tmp_path, monkeypatch,
                                                                            killed_run):
    out_dir = tmp_path / "run"
    proc = killed_run(out_dir, "epoch_end", done=1, epochs=3, teacher=teacher_path)
    assert proc.returncode == 17, proc.stderr[-2000:]
    with zipfile.ZipFile(out_dir / training.CHECKPOINT) as archive:
        state = json.loads(archive.read(training._STATE))
    assert state["epoch"] == 1 and state["recipe"]["teacher"] == str(teacher_path)
    images = np.random.default_rng(0).integers(0, 256, (128, 48, 48)).astype(np.uint8)
    labels = np.arange(128) % 7
    recipe = TINY.replace(epochs=3, teacher=str(teacher_path), distill=0.5)

    def resume(recipe):
        return training.fit(models.build("tiny", seed=0), (images, labels), recipe, out_dir=out_dir, resume=True,
                            verbose=False)

    other = tmp_path / "other.keras"
    models.build("tiny", seed=9).save(other)
    with pytest.raises(ValueError, match=r"another recipe \(fields \['teacher'\] differ"):
        resume(recipe.replace(teacher=str(other)))
    with pytest.raises(ValueError, match=r"another recipe \(fields \['distill'\] differ"):
        resume(recipe.replace(distill=0.9))
    with pytest.raises(ValueError, match=r"another recipe \(fields \['tta'\] differ"):
        resume(recipe.replace(tta="flip"))
    # A teacher.npz made for other faces (same count, so the same steps per epoch) is refused too.
    npz = out_dir / training.TEACHER
    original = npz.read_bytes()
    with np.load(npz) as saved:
        contents = {k: saved[k] for k in saved.files}
    with open(npz, "wb") as f:
        np.savez(f, **{**contents, "faces": "0123456789abcdef"})
    with pytest.raises(ValueError, match=r"Cannot resume .*teacher.npz' holds the probabilities of teacher "
                                         r".* on faces 0123456789abcdef.*\(they differ in faces\)"):
        resume(recipe)
    npz.write_bytes(original)
    stamp = npz.stat().st_mtime_ns

    def no_teacher_pass(*args, **kwargs):
        raise AssertionError("the teacher's probabilities were computed again on resume")

    monkeypatch.setattr(training, "_teacher_probabilities", no_teacher_pass)
    _, history = resume(recipe.replace(name="renamed"))
    assert list(history["epoch"]) == [0, 1, 2] and np.isfinite(history["loss"]).all()
    assert npz.stat().st_mtime_ns == stamp and npz.read_bytes() == original
    pd.testing.assert_frame_equal(history, pd.read_csv(out_dir / training.HISTORY))


def test_a_teacher_npz_left_by_a_run_killed_before_its_first_checkpoint(teacher_path, tmp_path, monkeypatch):
    """Without a checkpoint there is no run to keep: a matching teacher.npz is used, another replaced."""
    x, y = np.random.default_rng(1).integers(0, 256, (64, 48, 48, 1)).astype(np.float32), np.arange(64) % 7
    student = models.build("tiny", seed=0)
    recipe = TINY.replace(teacher=str(teacher_path), distill=0.5, tta="none")
    first = training._targets(student, x, y, recipe, out=tmp_path)
    calls = []
    compute = training._teacher_probabilities
    monkeypatch.setattr(training, "_teacher_probabilities", lambda *a, **k: calls.append(1) or compute(*a, **k))
    np.testing.assert_array_equal(training._targets(student, x, y, recipe, out=tmp_path), first)
    assert calls == []
    flipped = training._targets(student, x, y, recipe.replace(tta="flip"), out=tmp_path)
    assert calls == [1] and not np.allclose(flipped, first)
    with np.load(tmp_path / training.TEACHER) as saved:
        assert str(saved["tta"]) == "flip"
    (tmp_path / training.TEACHER).write_bytes(b"damaged")
    np.testing.assert_allclose(training._targets(student, x, y, recipe, out=tmp_path), first, atol=1e-6)
    assert calls == [1, 1]
    # A teacher.npz written before fervis kept the pass's time is still used; its time is unknown.
    with np.load(tmp_path / training.TEACHER) as saved:
        older = {k: saved[k] for k in saved.files if k != "seconds"}
    with open(tmp_path / training.TEACHER, "wb") as f:
        np.savez(f, **older)
    np.testing.assert_allclose(training._targets(student, x, y, recipe, out=tmp_path), first, atol=1e-6)
    assert calls == [1, 1] and training.teacher_seconds(tmp_path) is None


# --------------------------------------------------------------------------- real FER2013


@pytest.mark.fer2013
def test_shipped_teacher_on_real_training_faces(fer2013_path):
    from fervis import data

    train = data.load(fer2013_path).subset("Training").sample(500, stratify=True, seed=0)
    student = models.build("vgg", seed=1)
    recipe = recipes.get("fer2013-kd").replace(distill=1.0)
    probs = training._targets(student, train.x(), np.asarray(train.labels), recipe)
    assert probs.shape == (500, 7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    agree = float((probs.argmax(axis=1) == np.asarray(train.labels)).mean())
    assert agree > 0.6, f"the teacher agrees with {agree:.1%} of n=500 Training labels"  # it trained on them


def test_fervis_train_with_the_fer2013_kd_recipe(synthetic_small, tmp_path, capsys):
    """``fervis train --recipe fer2013-kd``: the shipped model teaches (here a tiny student, one epoch)."""
    from fervis import cli

    subset = synthetic_small.take(np.r_[0:150, 700:770])
    data_file = tmp_path / "faces.csv"
    with open(data_file, "w") as f:
        f.write("emotion,pixels,Usage\n")
        for image, label, split in zip(subset.images, subset.labels, subset.splits):
            f.write(f"{label},{' '.join(map(str, image.ravel()))},{split}\n")
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(data_file), "--recipe", "fer2013-kd", "--arch", "tiny", "--epochs", "1",
                     "--out", str(out)]) == 0
    assert "trained tiny with recipe 'fer2013-kd' for 1 epoch" in capsys.readouterr().out
    saved = training.run_recipe(out)
    assert saved.teacher == "pretrained:fer2013-v1" and saved.distill == 0.5 and saved.seed == 1
    with np.load(out / training.TEACHER) as teacher:
        assert teacher["probs"].shape == (150, 7) and str(teacher["tta"]) == "tencrop"
        np.testing.assert_allclose(teacher["probs"].sum(axis=1), 1.0, atol=1e-5)


def test_class_weights_follow_the_true_label_not_the_largest_class_of_a_soft_target(teacher_path, synthetic_small):
    """With a teacher, a face's target is mostly the teacher's guess; its class weight is still its own
    label's (Keras's class_weight would take the target's largest class). One batch, a learning rate
    too small to move the weights: the first epoch's loss is the weighted mean at the initial weights."""
    teacher = models.load(str(teacher_path))
    images = synthetic_small.subset("Training").x()[:64]
    guess = models.predict(teacher, images).argmax(axis=1)
    labels = np.where(np.arange(64) < 24, (guess + 1) % 7, guess)  # 24 faces the teacher gets wrong
    recipe = TINY.replace(epochs=1, batch_size=64, learning_rate=1e-9, flip=False, erasing=0.0,
                          teacher=str(teacher_path), distill=0.9, class_weights=True)
    student = models.build("tiny", seed=0)
    p = np.clip(models.predict(student, images), 1e-7, 1.0 - 1e-7)
    targets = 0.1 * np.eye(7)[labels] + 0.9 * models.predict(teacher, images)
    by_class = training._class_weights(labels, 7)
    own = np.array([by_class[c] for c in labels])
    largest = np.array([by_class.get(c, 0.0) for c in targets.argmax(axis=1)])
    assert not np.allclose(own, largest)  # the two readings weigh these faces differently
    cross_entropy = -(targets * np.log(p)).sum(axis=1)
    _, history = training.fit(student, (images, labels), recipe, verbose=False)
    assert history["loss"].iloc[0] == pytest.approx((own * cross_entropy).mean(), rel=1e-3)
    assert history["loss"].iloc[0] != pytest.approx((largest * cross_entropy).mean(), rel=1e-2)
