"""Tests for fervis.training: fit with checkpoints/resume/history, the model cache, evaluation."""

import json
import os
import pathlib
import zipfile

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")

from fervis import constants, models, recipes, training  # noqa: E402
from fervis.constants import CLASS_NAMES  # noqa: E402


def _arrays(n=128, seed=0, symmetric=False):
    """Random faces and balanced labels; ``symmetric`` faces are their own mirror image."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 48, 48))
    if symmetric:
        images = (images + images[:, :, ::-1]) // 2
    return images.astype(np.uint8), np.arange(n) % 7


TINY4 = recipes.get("tiny").replace(epochs=4)


# --------------------------------------------------------------------------- fit


def test_fit_trains_in_place_and_writes_run(synthetic_small, tmp_path):
    model = models.build("tiny", seed=0)
    before = [w.copy() for w in model.get_weights()]
    trained, history = training.fit(model, synthetic_small, TINY4.replace(epochs=2), out_dir=tmp_path,
                                    validation="PublicTest", verbose=False)
    assert trained is model
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))
    assert list(history["epoch"]) == [0, 1]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(history.columns)
    assert (tmp_path / "checkpoint.keras").exists() and (tmp_path / "history.csv").exists()
    with zipfile.ZipFile(tmp_path / "checkpoint.keras") as archive:
        state = json.loads(archive.read("fervis_state.json"))
    assert state["epoch"] == 2 and state["recipe"]["epochs"] == 2
    final = models.load(tmp_path / "model.keras", num_classes=7)
    np.testing.assert_allclose(final(synthetic_small.x()[:8]), model(synthetic_small.x()[:8]), atol=1e-6)
    assert "augment" not in [layer.name for layer in final.layers]  # the plain classifier is saved


def test_fit_writes_tensorboard_logs(tmp_path):
    pytest.importorskip("tensorboard", reason="TensorFlow >= 2.20 no longer installs tensorboard")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("TensorBoard logs are written with the TensorFlow backend only")
    images, labels = _arrays(64)
    training.fit(models.build("tiny", seed=0), (images, labels), TINY4.replace(epochs=1), out_dir=tmp_path,
                 verbose=False)
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))


def test_fit_is_repeatable_and_learns(synthetic_small):
    recipe = TINY4.replace(epochs=3)
    a, ha = training.fit(models.build("tiny", seed=0), synthetic_small, recipe, verbose=False)
    b, hb = training.fit(models.build("tiny", seed=0), synthetic_small, recipe, verbose=False)
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
    np.testing.assert_array_equal(ha["loss"], hb["loss"])
    assert ha["loss"].iloc[-1] < ha["loss"].iloc[0]


def test_fit_arrays_progress_and_class_weights(capsys):
    images, labels = _arrays(96)
    labels = np.where(np.arange(96) < 80, 3, labels)  # mostly "happy"
    recipe = TINY4.replace(epochs=1, class_weights=True)
    model, history = training.fit(models.build("tiny", seed=0), (images, labels), recipe, verbose=True)
    assert len(history) == 1
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "2/2" in err  # one tqdm bar per epoch, over its 2 batches


def test_mixup_batches_blend_two_faces_of_a_batch_and_their_targets():
    """Faces 0..n-1 as constant images of their index, each its own class: a blended face's value and
    target show which two faces were blended, and with what weight."""
    n, batch = 10, 4
    x = np.repeat(np.arange(n, dtype=np.float32), 48 * 48).reshape(n, 48, 48, 1)
    targets = np.eye(n, dtype=np.float32)
    batches = training._MixUpBatches(x, targets, batch, alpha=0.4, seed=3)
    assert len(batches) == 3
    primaries = []
    for index in range(len(batches)):
        images, mixed = batches[index]
        assert images.shape[1:] == (48, 48, 1) and len(images) == len(mixed) == (2 if index == 2 else batch)
        np.testing.assert_allclose(mixed.sum(axis=1), 1.0, rtol=1e-6)
        for image, target in zip(images, mixed):
            assert np.all(image == image[0, 0])  # a blend of two constant faces is constant
            faces = np.flatnonzero(target > 1e-6)
            assert 1 <= len(faces) <= 2  # itself, and a partner unless it was blended with itself
            np.testing.assert_allclose(image[0, 0, 0], faces @ target[faces], rtol=1e-5)
            primaries.append(faces)
        # every partner is a face of the same batch
        assert set(np.flatnonzero(mixed.sum(axis=0) > 1e-6)) == set(batches.order[index * batch:(index + 1) * batch])
    assert sorted(batches.order) == list(range(n))  # each face once an epoch
    # A batch depends on its epoch and index only: the same again, another epoch another one.
    first = batches[1]
    batches.set_epoch(1)
    assert not np.array_equal(batches[1][0], first[0])
    batches.set_epoch(0)
    np.testing.assert_array_equal(batches[1][0], first[0])
    np.testing.assert_array_equal(batches[1][1], first[1])


def test_fit_with_mixup_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch):
    """A run stopped after one epoch and resumed ends with the weights of one that was not: each epoch's
    batches come from its own epoch number (flips off, so the blend is the only randomness)."""
    images, labels = _arrays(96)
    recipe = TINY4.replace(epochs=2, flip=False, mixup=0.4)
    seen = []
    getitem = training._MixUpBatches.__getitem__
    monkeypatch.setattr(training._MixUpBatches, "__getitem__",
                        lambda self, index: seen.append((self.epoch, index)) or getitem(self, index))
    straight, history = training.fit(models.build("tiny", seed=0), (images, labels), recipe,
                                     out_dir=tmp_path / "a", verbose=False)
    assert seen[-4:] == [(0, 0), (0, 1), (1, 0), (1, 1)]  # 2 batches an epoch (after Keras's look at the first)
    assert np.isfinite(history["loss"]).all()

    class StopAfterFirst(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    training.fit(models.build("tiny", seed=0), (images, labels), recipe, out_dir=tmp_path / "b", verbose=False,
                 callbacks=[StopAfterFirst()])
    seen.clear()
    resumed, _ = training.fit(models.build("tiny", seed=7), (images, labels), recipe, out_dir=tmp_path / "b",
                              resume=True, verbose=False)
    assert seen[-2:] == [(1, 0), (1, 1)]
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # ...and mixup changes what is learned (the same run without it ends elsewhere).
    plain, _ = training.fit(models.build("tiny", seed=0), (images, labels), recipe.replace(mixup=0.0), verbose=False)
    assert any(not np.allclose(a, b) for a, b in zip(plain.get_weights(), straight.get_weights()))


def test_mixup_is_a_training_field_left_out_of_older_recipes_dicts():
    fer = recipes.get("fer2013")
    assert "mixup" not in fer.to_dict()  # cache keys and checkpoints of runs before it stay what they were
    assert fer.replace(mixup=0.2).to_dict()["mixup"] == 0.2
    assert fer.trains_unlike(fer.replace(mixup=0.2)) == ["mixup"]
    for bad in (-0.1, 1.5, float("nan"), True, "0.2"):
        with pytest.raises(ValueError, match=r"'mixup' parameter of fervis\.recipes\.Recipe must be a number >= 0\.0 and <= 1\.0"):
            fer.replace(mixup=bad)


def test_fer2013_wide_recipe_differs_from_fer2013_in_its_architecture_only():
    """Its runs-table row measures the width alone (issue 23)."""
    base, wide = recipes.get("fer2013"), recipes.get("fer2013-wide")
    assert base.trains_unlike(wide) == ["arch"]
    assert wide == base.replace(name="fer2013-wide", arch="vgg-wide")


def test_fer2013_mixup_recipe_differs_from_fer2013_in_mixup_only():
    base, mixup = recipes.get("fer2013"), recipes.get("fer2013-mixup")
    assert base.trains_unlike(mixup) == ["mixup"] and mixup.mixup == 0.2
    assert training._recipe_hash(mixup) != training._recipe_hash(base)  # its own cache key and checkpoints


def test_mixup_weights_follow_beta_and_change_with_the_epoch():
    """``lam`` is Beta(alpha, alpha) (U-shaped at 0.4: a uniform draw fails this), and an epoch's blend is
    its own, not only its order: batch 0 of two epochs has other weights."""
    from scipy import stats

    n = 512
    x = np.zeros((n, 48, 48, 1), dtype=np.float32)
    batches = training._MixUpBatches(x, np.eye(n, dtype=np.float32), 128, alpha=0.4, seed=0)

    def weights(epoch):
        batches.set_epoch(epoch)
        lam = []
        for index in range(len(batches)):
            _, mixed = batches[index]
            rows = batches.order[index * 128:(index + 1) * 128]
            lam.append(mixed[np.arange(len(rows)), rows])  # the face's own share (1 when blended with itself)
        return np.concatenate(lam)

    first = weights(0)
    own = first[first < 1.0]
    assert len(own) > 0.95 * n
    assert stats.kstest(own, stats.beta(0.4, 0.4).cdf).pvalue > 1e-3
    assert stats.kstest(own, stats.uniform().cdf).pvalue < 1e-3
    assert not np.allclose(np.sort(first[:128]), np.sort(weights(1)[:128]))


def test_mixup_blends_class_weights_as_it_blends_targets():
    """A blend of a rare face (weight 5) and a common one (weight 0.5) weighs lam * 5 + (1 - lam) * 0.5,
    not the weight of its larger part's class."""
    n = 12
    x = np.zeros((n, 48, 48, 1), np.float32)
    targets = np.eye(n, dtype=np.float32)
    weights = np.where(np.arange(n) % 3 == 0, 5.0, 0.5).astype(np.float32)
    batches = training._MixUpBatches(x, targets, 6, alpha=0.4, seed=1, weights=weights)
    blended = 0
    for index in range(len(batches)):
        _, mixed, got = batches[index]
        np.testing.assert_allclose(got, mixed @ weights, rtol=1e-5)  # each target row says which faces, how much
        blended += int(((got > 0.5 + 1e-3) & (got < 5.0 - 1e-3)).sum())
    assert blended > 0  # some blends weigh between the two classes' weights
    assert len(training._MixUpBatches(x, targets, 6, alpha=0.4, seed=1)[0]) == 2  # no weights: (images, targets)


def test_fit_with_mixup_validates_in_the_recipe_batches_and_takes_class_weights():
    images, labels = _arrays(96)
    val = _arrays(200, seed=1)
    recipe = TINY4.replace(epochs=1, mixup=0.3, class_weights=True)

    class CountValidationBatches(keras.callbacks.Callback):
        count = 0

        def on_test_batch_end(self, batch, logs=None):
            CountValidationBatches.count += 1

    _, history = training.fit(models.build("tiny", seed=0), (images, labels), recipe, validation=val,
                              callbacks=[CountValidationBatches()], verbose=False)
    assert CountValidationBatches.count == 4  # 200 faces in batches of 64, as without mixup
    assert np.isfinite(history[["loss", "val_loss", "val_accuracy"]].to_numpy()).all()


def test_class_weights_are_inverse_frequency():
    weights = training._class_weights(np.array([0, 0, 0, 1]), 7)
    assert weights == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0)}


def test_fit_user_callbacks_and_learning_rate_schedule():
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((epoch, logs["learning_rate"]))

    images, labels = _arrays(64)
    recipe = TINY4.replace(epochs=3, warmup_epochs=1)
    _, history = training.fit(models.build("tiny", seed=0), (images, labels), recipe, callbacks=[Record()],
                              verbose=False)
    assert [e for e, _ in seen] == [0, 1, 2]
    lr = history["learning_rate"].to_numpy()
    assert lr[0] == pytest.approx(recipe.learning_rate)  # end of warm-up: the peak
    assert lr[0] > lr[1] > lr[2] and lr[2] == pytest.approx(0.0, abs=1e-9)  # cosine down to zero


@pytest.mark.parametrize("data, kwargs, match", [
    ("not data", {}, "'dataset_or_arrays' parameter of fervis.training.fit must be a fervis Dataset or a tuple"),
    ((np.zeros((4, 32, 32)), np.zeros(4, int)), {}, r"images shaped \(n,\) \+ \(48, 48, 1\).*\(4, 32, 32, 1\)"),
    ((np.zeros((4, 48, 48)), np.zeros(3, int)), {}, "one label per image. Got 4 images"),
    ((np.zeros((4, 48, 48)), -np.ones(4, int)), {}, "must be labelled, but 4 of its 4 images"),
    ((np.zeros((4, 48, 48)), np.array([0, 1, 2, 9])), {}, "labels up to 9, but model 'tiny' outputs 7 classes"),
    ((np.zeros((4, 48, 48)), np.zeros(4)), {}, "integer labels"),
    ((np.zeros((4, 48, 48)), np.zeros(4, int)), {"resume": True}, "needs an out_dir to resume from"),
    ((np.zeros((4, 48, 48)), np.zeros(4, int)), {"validation": "PublicTest"}, "may name a split only"),
    ((np.zeros((4, 48, 48)), np.zeros(4, int)), {"recipe": "huge"}, "'recipe' parameter must be a Recipe"),
])
def test_fit_bad_input(data, kwargs, match):
    kwargs = {"recipe": TINY4, **kwargs}
    with pytest.raises(ValueError, match=match):
        training.fit(models.build("tiny", seed=0), data, verbose=False, **kwargs)


def test_fit_refuses_to_overwrite_or_mix_runs(tmp_path):
    images, labels = _arrays(64)
    training.fit(models.build("tiny", seed=0), (images, labels), TINY4.replace(epochs=1), out_dir=tmp_path,
                 verbose=False)
    with pytest.raises(ValueError, match="already holds a checkpoint.*pass resume=True"):
        training.fit(models.build("tiny", seed=0), (images, labels), TINY4.replace(epochs=1), out_dir=tmp_path,
                     verbose=False)
    with pytest.raises(ValueError, match=r"another recipe \(fields \['epochs', 'learning_rate'\] differ"):
        training.fit(models.build("tiny", seed=0), (images, labels), TINY4.replace(epochs=2, learning_rate=0.1),
                     out_dir=tmp_path, resume=True, verbose=False)
    with pytest.raises(ValueError, match="does not fit model"):
        training.fit(models.build("compact", seed=0), (images, labels), TINY4.replace(epochs=1, arch="tiny"),
                     out_dir=tmp_path, resume=True, verbose=False)
    (tmp_path / "checkpoint.keras").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="damaged or not a fervis checkpoint"):
        training.fit(models.build("tiny", seed=0), (images, labels), TINY4.replace(epochs=1), out_dir=tmp_path,
                     resume=True, verbose=False)


def _rewrite_state(checkpoint, change):
    """Rewrite the training state inside a checkpoint archive with ``change(state)``."""
    with zipfile.ZipFile(checkpoint) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    state = json.loads(entries[training._STATE])
    change(state)
    entries[training._STATE] = json.dumps(state)
    with zipfile.ZipFile(checkpoint, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)


def test_resume_and_run_recipe_read_the_training_fields_only(tmp_path):
    """A run's name and test-time augmentation do not change its weights: resuming under another name or
    TTA continues it. A checkpoint from before a Recipe field existed reads it as its default; one with a
    field this fervis does not know is refused, naming it."""
    images, labels = _arrays(64)
    first, _ = training.fit(models.build("tiny", seed=0), (images, labels), TINY4.replace(epochs=1),
                            out_dir=tmp_path, verbose=False)
    assert training.run_recipe(tmp_path) == TINY4.replace(epochs=1)
    again, _ = training.fit(models.build("tiny", seed=3), (images, labels),
                            TINY4.replace(epochs=1, name="renamed", tta="flip-rotate"),
                            out_dir=tmp_path, resume=True, verbose=False)
    assert all(np.array_equal(a, b) for a, b in zip(first.get_weights(), again.get_weights()))
    checkpoint = tmp_path / training.CHECKPOINT
    _rewrite_state(checkpoint, lambda state: state["recipe"].pop("erasing"))
    assert training.run_recipe(tmp_path).erasing == 0.0
    training.fit(models.build("tiny", seed=3), (images, labels), TINY4.replace(epochs=1), out_dir=tmp_path,
                 resume=True, verbose=False)
    _rewrite_state(checkpoint, lambda state: state["recipe"].update(cutmix=0.2))
    with pytest.raises(ValueError, match=r"recipe saved in checkpoint .*checkpoint.keras' is not a fervis Recipe: "
                                         r"unknown fields \['cutmix'\]"):
        training.run_recipe(tmp_path)
    _rewrite_state(checkpoint, lambda state: state["recipe"].pop("arch"))
    with pytest.raises(ValueError, match=r"unknown fields \['cutmix'\]; missing fields \['arch'\]"):
        training.fit(models.build("tiny", seed=3), (images, labels), TINY4.replace(epochs=1), out_dir=tmp_path,
                     resume=True, verbose=False)
    with pytest.raises(ValueError, match=r"is not a fervis training run: it has no checkpoint.keras"):
        training.run_recipe(tmp_path / "elsewhere")
    _rewrite_state(checkpoint, lambda state: state.update(recipe=["tiny"]))
    with pytest.raises(ValueError, match=r"recipe saved in checkpoint .* must be a dict of Recipe fields"):
        training.run_recipe(tmp_path)


def test_resume_of_a_finished_run_returns_it(tmp_path):
    images, labels = _arrays(64)
    first, h1 = training.fit(models.build("tiny", seed=0), (images, labels), TINY4.replace(epochs=2),
                             out_dir=tmp_path, verbose=False)
    again, h2 = training.fit(models.build("tiny", seed=5), (images, labels), TINY4.replace(epochs=2),
                             out_dir=tmp_path, resume=True, verbose=False)
    assert all(np.array_equal(a, b) for a, b in zip(first.get_weights(), again.get_weights()))
    pd.testing.assert_frame_equal(h1, h2)


@pytest.mark.parametrize("where", ["mid_epoch", "epoch_end", "torn_history", "after_checkpoint"])
def test_kill_and_resume(tmp_path, where, killed_run):
    out_dir = tmp_path / "run"
    proc = killed_run(out_dir, "mid_epoch" if where == "torn_history" else where, done=2, epochs=4)
    assert proc.returncode == 17, proc.stderr[-2000:]
    with zipfile.ZipFile(out_dir / "checkpoint.keras") as archive:
        saved = json.loads(archive.read("fervis_state.json"))["epoch"]
    assert saved == 2  # killed in epoch 3 (or right after epoch 2): at most one epoch lost
    if where == "after_checkpoint":  # the checkpoint of epoch 2 is there, its history row is not
        assert list(pd.read_csv(out_dir / "history.csv")["epoch"]) == [0]
    if where == "torn_history":
        # As if the kill came after the history row of epoch 2 but before its checkpoint,
        # and in the middle of writing the next line.
        with open(out_dir / "history.csv", "a") as f:
            f.write("2,0.1,0.003,1.5\n3,0.2")
    images, labels = _arrays(128)
    recipe = recipes.get("tiny").replace(epochs=4)
    model, history = training.fit(models.build("tiny", seed=0), (images, labels), recipe, out_dir=out_dir,
                                  resume=True, verbose=False)
    on_disk = pd.read_csv(out_dir / "history.csv")
    assert list(on_disk["epoch"]) == [0, 1, 2, 3]
    pd.testing.assert_frame_equal(history, on_disk)
    # The schedule continued from the checkpoint: the same learning rates as an uninterrupted run.
    _, reference = training.fit(models.build("tiny", seed=0), (images, labels), recipe, verbose=False)
    np.testing.assert_allclose(on_disk["learning_rate"], reference["learning_rate"], rtol=1e-6)
    assert np.isfinite(on_disk["loss"]).all()
    with zipfile.ZipFile(out_dir / "checkpoint.keras") as archive:
        assert json.loads(archive.read("fervis_state.json"))["epoch"] == 4


MIRRORED = """
    import json
    import tensorflow as tf

    # Two logical CPU devices, configured before TensorFlow starts its runtime.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import numpy as np
    from fervis import models, recipes, training

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (256, 48, 48))
    # Mirror-symmetric faces make the recipe's random flip an identity, so replicas drawing
    # other random numbers than a single device still see the same data.
    images = ((images + images[:, :, ::-1]) // 2).astype(np.uint8)
    labels = np.arange(256) % 7
    recipe = recipes.get("tiny").replace(epochs=3)
    single, h1 = training.fit(models.build("tiny", seed=0), (images, labels), recipe, verbose=False)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    mirrored, h2 = training.fit(models.build("tiny", seed=0), (images, labels), recipe, strategy=strategy,
                                verbose=False)
    start = models.build("tiny", seed=0).get_weights()
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "loss_single": h1["loss"].tolist(), "loss_mirrored": h2["loss"].tolist(),
        "weight_diff": max(float(np.abs(a - b).max()) for a, b in zip(single.get_weights(), mirrored.get_weights())),
        "weight_change": max(float(np.abs(a - b).max()) for a, b in zip(single.get_weights(), start)),
    }))
"""


def test_mirrored_strategy_matches_single_device(run_script):
    proc = run_script(MIRRORED, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    np.testing.assert_allclose(result["loss_mirrored"], result["loss_single"], rtol=1e-4)
    assert result["weight_change"] > 1e-3  # it trained
    assert result["weight_diff"] < 1e-4 * max(1.0, result["weight_change"] * 100)


# --------------------------------------------------------------------------- cache, model_for


def test_load_or_train_caches(synthetic_small, monkeypatch):
    recipe = TINY4.replace(epochs=1)
    path = training.cache_path(synthetic_small, recipe)
    assert path.parent == training.fervis_home() / "models"
    assert path.name.startswith(synthetic_small.fingerprint[:16] + "-")
    first = training.load_or_train(synthetic_small, recipe, progress=False)
    assert path.exists() and path.with_suffix(".csv").exists()
    assert not (training.fervis_home() / "runs" / path.stem).exists()

    def no_training(*args, **kwargs):
        raise AssertionError("load_or_train trained again instead of using its cache")

    monkeypatch.setattr(training, "fit", no_training)
    second = training.load_or_train(synthetic_small, recipe, progress=False)
    x = synthetic_small.x()[:16]
    np.testing.assert_allclose(second(x), first(x), atol=1e-6)
    other = training.cache_path(synthetic_small, recipe.replace(seed=1))
    assert other != path


def test_load_or_train_bad_input(synthetic_small):
    with pytest.raises(ValueError, match="'dataset' parameter of fervis.training.load_or_train must be a fervis"):
        training.load_or_train((np.zeros((2, 48, 48)), np.zeros(2, int)))
    test_only = synthetic_small.subset("PublicTest")
    with pytest.raises(ValueError, match=r"must have a 'Training' split to train on. Got splits \['PublicTest'\]"):
        training.load_or_train(test_only, TINY4)


def _fer_like(tmp_path, synthetic_small):
    """A small file in FER2013's CSV layout (synthetic pixels: no real FER2013 data)."""
    from fervis import data

    subset = synthetic_small.take(np.arange(40))
    path = tmp_path / "fer_like.csv"
    with open(path, "w") as f:
        f.write("emotion,pixels,Usage\n")
        for image, label, split in zip(subset.images, subset.labels, subset.splits):
            f.write(f"{label},{' '.join(map(str, image.ravel()))},{split}\n")
    return data.load(path, cache=False)


def test_model_for_auto(synthetic_small, tmp_path, monkeypatch):
    calls = []
    sentinel = models.build("tiny", seed=0)
    monkeypatch.setattr(training, "load_or_train", lambda dataset, recipe: calls.append(recipe) or sentinel)
    monkeypatch.setattr(models, "_PRETRAINED_DIR", tmp_path / "pretrained")
    # Synthetic data: the cached quick model.
    assert training.model_for(synthetic_small) is sentinel and calls == ["quick"]
    # FER2013 without the packaged model: the quick model too.
    fer = _fer_like(tmp_path, synthetic_small)
    assert training.model_for(fer) is sentinel and calls == ["quick", "quick"]
    # FER2013 with the packaged model: that one.
    (tmp_path / "pretrained").mkdir()
    models.build("tiny", seed=4).save(tmp_path / "pretrained" / "fer2013.keras")
    chosen = training.model_for(fer, "auto")
    assert chosen is not sentinel and chosen.output_shape == (None, 7) and len(calls) == 2


@pytest.mark.parametrize("spec, match", [
    ("train:resnet", r"names recipe 'resnet' in 'train:resnet'; recipes are \['fer2013'"),
    ("pretrained:affectnet", r"names pretrained model 'affectnet' in 'pretrained:affectnet'; pretrained models are \['fer2013', 'fer2013-v1', 'synthetic'\]"),
    ("missing.keras", r"must be 'auto', 'train', 'train:<recipe>', 'pretrained:<name>', a keras.Model or an existing "
                      r"\.keras/\.h5 file. Got 'missing.keras' instead, a file that does not exist"),
    (3, r"Got 3 instead\.$"),
])
def test_check_model_spec_rejects(spec, match):
    with pytest.raises(ValueError, match=match):
        training.check_model_spec(spec, "f")


@pytest.mark.parametrize("spec", ["auto", "train", "train:tiny", "pretrained:fer2013", "pretrained:synthetic", "FILE"])
def test_check_model_spec_accepts(spec, tmp_path):
    (tmp_path / "m.keras").write_bytes(b"")  # existence is all the check looks at; loading is model_for's job
    training.check_model_spec(str(tmp_path / "m.keras") if spec == "FILE" else spec, "f")
    training.check_model_spec(tmp_path / "m.keras", "f")


def test_model_for_specs(synthetic_small, tmp_path):
    model = models.build("tiny", seed=0)
    model.save(tmp_path / "m.keras")
    assert training.model_for(synthetic_small, model) is model
    assert training.model_for(synthetic_small, str(tmp_path / "m.keras")).name == "tiny"
    with pytest.raises(ValueError, match="does not exist"):
        training.model_for(synthetic_small, str(tmp_path / "missing.keras"))
    other = keras.Model(*(lambda i: (i, keras.layers.Dense(7, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(i))))(keras.Input((64, 64, 1))), name="big")
    assert training.model_for(synthetic_small, other) is other  # as given: fervis.contract adapts it
    with pytest.raises(ValueError, match="'dataset' parameter of fervis.training.model_for"):
        training.model_for("synthetic")


# --------------------------------------------------------------------------- evaluate


def test_evaluate(tiny_model, synthetic_small):
    from sklearn.metrics import confusion_matrix

    result = training.evaluate(tiny_model, synthetic_small)
    test = synthetic_small.subset("PublicTest")
    y_pred = recipes.predict(tiny_model, test.images).argmax(1)
    assert result["n"] == len(test) and result["split"] == "PublicTest"
    assert result["accuracy"] == pytest.approx((y_pred == test.labels).mean())
    np.testing.assert_array_equal(result["confusion_matrix"], confusion_matrix(test.labels, y_pred, labels=range(7)))
    cm = result["confusion_matrix"]
    assert cm.sum(axis=1).tolist() == np.bincount(test.labels, minlength=7).tolist()  # rows: true classes
    assert list(result["recall"]) == list(CLASS_NAMES)
    happy = CLASS_NAMES.index("happy")
    assert result["recall"]["happy"] == pytest.approx(cm[happy, happy] / cm[happy].sum())
    assert result["balanced_accuracy"] == pytest.approx(np.mean(list(result["recall"].values())))
    flip = training.evaluate(tiny_model, synthetic_small, split="Training", tta="flip")
    assert flip["n"] == len(synthetic_small.subset("Training")) and flip["tta"] == "flip"
    assert training.evaluate(tiny_model, synthetic_small, split=None)["n"] == len(synthetic_small)


def test_tta_views():
    """Each test-time augmentation's views: how many, their shape, and what they show."""
    rng = np.random.default_rng(0)
    faces = rng.integers(50, 256, (3, 48, 48, 1)).astype("float32")
    counts = {tta: len(recipes._tta_views(faces, tta)) for tta in recipes.TTA}
    assert counts == {"none": 1, "flip": 2, "tencrop": 10, "flip-rotate": 10}
    assert recipes.TTA is constants.TTA  # one list; the CLI offers it without importing Keras
    views = recipes._tta_views(faces, "flip-rotate")
    assert all(v.shape == faces.shape and v.dtype == faces.dtype for v in views)
    zero = recipes.TTA_ROTATIONS.index(0.0)
    np.testing.assert_array_equal(views[zero], faces)
    np.testing.assert_array_equal(views[len(recipes.TTA_ROTATIONS) + zero], faces[:, :, ::-1])
    assert sorted(recipes.TTA_ROTATIONS) == sorted(-a for a in recipes.TTA_ROTATIONS)  # symmetric
    # Counter-clockwise, about the centre: a quarter turn is numpy's rot90.
    np.testing.assert_allclose(recipes._rotate(faces, 90.0), np.rot90(faces, 1, axes=(1, 2)), atol=0.01)
    # Mirroring a face turned by +10 degrees gives its mirror turned by -10: the set is mirror-closed.
    np.testing.assert_allclose(recipes._rotate(faces[:, :, ::-1], 10.0)[:, :, ::-1], recipes._rotate(faces, -10.0),
                               atol=0.01)
    turned = recipes._rotate(faces, 10.0)
    assert np.abs(turned - faces).mean() > 10  # it did turn (random pixels decorrelate)
    assert turned.min() >= 50 and turned.max() <= 255  # bilinear, edges repeated: no black corners
    # Any image classifier: colour, not square, not 48 pixels.
    colour = rng.integers(0, 256, (2, 40, 64, 3)).astype("float32")
    for tta in recipes.TTA:
        assert all(v.shape == colour.shape for v in recipes._tta_views(colour, tta))
    inputs = keras.Input((40, 64, 3))
    rgb = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs)))
    probs = recipes.predict(rgb, colour, tta="flip-rotate")
    assert probs.shape == (2, 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match=r"must be one of \['none', 'flip', 'tencrop', 'flip-rotate'\]"):
        recipes.predict(models.build("tiny", seed=0), faces, tta="rotate")


def test_evaluate_bad_input(tiny_model, synthetic_small):
    from fervis import data

    unlabeled = data.Dataset(images=synthetic_small.images[:5], labels=-np.ones(5, int),
                             splits=np.array(["PrivateTest"] * 5))
    with pytest.raises(ValueError, match="Split 'PrivateTest' .* is unlabelled .*evaluate needs labels"):
        training.evaluate(tiny_model, unlabeled, split="PrivateTest")
    with pytest.raises(ValueError, match=r"'split' parameter of fervis.training.evaluate must be one of "
                                         r"\['PublicTest', 'Training'\] or None. Got 'PrivateTest'"):
        training.evaluate(tiny_model, synthetic_small, split="PrivateTest")
    with pytest.raises(ValueError, match="'tta' parameter"):
        training.evaluate(tiny_model, synthetic_small, tta="rotate")
    five = models.build("tiny", num_classes=5, seed=0)
    with pytest.raises(ValueError, match="outputs 5 classes, but the data has 7 classes"):
        training.evaluate(five, synthetic_small)


# --------------------------------------------------------------------------- real FER2013


@pytest.mark.fer2013
def test_short_training_on_real_fer2013(fer2013_path, tmp_path):
    from fervis import data

    dataset = data.load(fer2013_path)
    train = dataset.subset("Training").sample(1400, stratify=True, seed=0)
    test = dataset.subset("PublicTest").sample(350, stratify=True, seed=0)
    recipe = recipes.get("tiny").replace(epochs=3)
    model, history = training.fit(models.build("tiny", seed=0), train, recipe, out_dir=tmp_path, validation=test,
                                  verbose=False)
    assert list(history["epoch"]) == [0, 1, 2] and np.isfinite(history["loss"]).all()
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    result = training.evaluate(model, test, split="PublicTest")
    assert result["n"] == 350 and result["confusion_matrix"].sum() == 350
    assert result["accuracy"] > 1 / 7  # better than chance after three short epochs


# --------------------------------------------------------------------------- batch-norm recalibration


def _norm_input_stats(model, norm, images):
    """The mean and variance of ``norm``'s input over ``images``, the model in inference mode, by hand."""
    inner = keras.Model(model.inputs, norm.input)
    a = np.asarray(inner.predict(images, verbose=0), dtype=np.float64)
    return a.mean(axis=(0, 1, 2)), a.var(axis=(0, 1, 2))


def _norms(model):
    return [layer for _, layer in models.named_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]


def test_recalibrate_batchnorm_sets_each_layers_input_statistics():
    """Every batch-norm layer ends with the exact mean and variance of its input over the images, each
    layer seeing the earlier ones recalibrated; the batch size does not change the result."""
    images = _arrays(96)[0][..., None].astype(np.float32)
    model = models.build("compact", seed=0)
    norms = _norms(model)
    assert len(norms) >= 4
    for norm in norms:  # statistics far from any face's, as if left by augmented training
        norm.moving_mean.assign(np.full(norm.moving_mean.shape, 5.0, np.float32))
        norm.moving_variance.assign(np.full(norm.moving_variance.shape, 9.0, np.float32))
    assert training.recalibrate_batchnorm(model, images[..., 0], batch_size=40, progress=False) is model
    for norm in norms:
        mean, var = _norm_input_stats(model, norm, images)
        np.testing.assert_allclose(norm.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(norm.moving_variance.numpy(), var, rtol=1e-3, atol=1e-5)
    once = [w.copy() for w in model.get_weights()]
    training.recalibrate_batchnorm(model, images, batch_size=512, progress=False)
    for a, b in zip(once, model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # The recording call is gone: each layer calls its class's own again.
    assert all("call" not in vars(norm) for norm in norms)


def test_recalibrate_batchnorm_reaches_ensemble_members_and_skips_models_without_it(residual_model):
    images = _arrays(48)[0][..., None].astype(np.float32)
    a, b = models.build("compact", seed=1), models.build("compact", seed=2)
    combined = models.ensemble([a, b])
    training.recalibrate_batchnorm(combined, images, progress=False)
    for member in models.ensemble_members(combined):
        for norm in _norms(member):
            mean, _ = _norm_input_stats(member, norm, images)
            np.testing.assert_allclose(norm.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
    # The oneDNN trap model (a 1x1 stride-2 shortcut) has no batch norm: nothing to do, nothing changes.
    before = [w.copy() for w in residual_model.get_weights()]
    training.recalibrate_batchnorm(residual_model, images, progress=False)
    assert all(np.array_equal(x, y) for x, y in zip(before, residual_model.get_weights()))


def test_recalibrate_batchnorm_survives_the_onednn_trap():
    """The trap's shortcut with batch norm after it: forward passes only, no crash, statistics set."""
    inputs = keras.Input((48, 48, 1), name="pixels")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    shortcut = keras.layers.Conv2D(8, 1, strides=2, name="shortcut_conv")(x)
    y = keras.layers.Conv2D(8, 3, strides=2, padding="same")(x)
    x = keras.layers.BatchNormalization(name="res_bn")(keras.layers.Add()([y, shortcut]))
    outputs = keras.layers.Dense(7, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    images = _arrays(32)[0][..., None].astype(np.float32)
    training.recalibrate_batchnorm(model, images, progress=False)
    mean, var = _norm_input_stats(model, model.get_layer("res_bn"), images)
    np.testing.assert_allclose(model.get_layer("res_bn").moving_variance.numpy(), var, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"images": np.zeros((4, 32, 32))}, r"'images' parameter .* shaped \(n,\) \+ \(48, 48, 1\).*Got shape \(4, 32, 32, 1\)"),
    ({"images": np.zeros((0, 48, 48))}, r"'images' parameter .* n >= 1"),
    ({"batch_size": 0}, r"'batch_size' parameter .* an int >= 1. Got 0"),
    ({"model": "vgg"}, r"'model' parameter .* must be a keras.Model"),
])
def test_recalibrate_batchnorm_bad_input(kwargs, match):
    model = models.build("compact", seed=0)
    before = [w.copy() for w in model.get_weights()]
    args = {"model": model, "images": np.zeros((4, 48, 48)), **kwargs}
    with pytest.raises(ValueError, match=match):
        training.recalibrate_batchnorm(args.pop("model"), args.pop("images"), progress=False, **args)
    assert all(np.array_equal(x, y) for x, y in zip(before, model.get_weights()))  # nothing half-done


def test_recalibrate_batchnorm_interrupted_keeps_the_old_statistics(monkeypatch):
    model = models.build("compact", seed=0)
    before = [np.array(w) for w in model.non_trainable_weights]
    one, calls = training._recalibrate_one, []

    def second_fails(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        one(*args)

    monkeypatch.setattr(training, "_recalibrate_one", second_fails)
    with pytest.raises(KeyboardInterrupt):
        training.recalibrate_batchnorm(model, _arrays(16)[0], progress=False)
    assert len(calls) == 2  # the first layer had been recalibrated, and is put back
    assert all(np.array_equal(a, np.array(b)) for a, b in zip(before, model.non_trainable_weights))


def test_fit_recalibrates_after_the_last_epoch_and_a_finished_run_takes_it_on_resume(tmp_path):
    """``recalibrate_bn`` is a step after the last epoch: the saved model has its training images'
    statistics, and a run trained without it is resumed with it (only the step runs)."""
    images, labels = _arrays(64)
    recipe = TINY4.replace(arch="compact", epochs=1)
    plain, _ = training.fit(models.build("compact", seed=0), (images, labels), recipe, out_dir=tmp_path, verbose=False)
    first = _norms(plain)[0]
    mean, _ = _norm_input_stats(plain, first, images[..., None].astype(np.float32))
    assert not np.allclose(first.moving_mean.numpy(), mean, rtol=1e-3, atol=1e-4)  # training left other statistics
    weights = [np.array(w) for w in plain.trainable_weights]
    again, history = training.fit(models.build("compact", seed=4), (images, labels), recipe.replace(recalibrate_bn=True),
                                  out_dir=tmp_path, resume=True, verbose=False)
    assert len(history) == 1 and all(np.array_equal(w, np.array(v)) for w, v in zip(weights, again.trainable_weights))
    saved = models.load(tmp_path / training.FINAL, num_classes=7)
    for norm in _norms(saved):
        mean, var = _norm_input_stats(saved, norm, images[..., None].astype(np.float32))
        np.testing.assert_allclose(norm.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(norm.moving_variance.numpy(), var, rtol=1e-3, atol=1e-5)


# --------------------------------------------------------------------------- hardening: one run per folder, no debris


def test_second_run_into_one_out_dir_is_refused_naming_the_other(tmp_path):
    images, labels = _arrays(64)
    with training._run_lock(tmp_path, "test"):  # as a run in another process holds it
        with pytest.raises(ValueError, match=rf"names '{tmp_path}', where another training run is writing "
                                             rf"\(process {os.getpid()}, .*python"):
            training.fit(models.build("tiny", seed=0), (images, labels), TINY4.replace(epochs=1),
                         out_dir=tmp_path, verbose=False)
    assert not (tmp_path / "checkpoint.keras").exists()
    # Released when the holder ends: the run goes ahead.
    training.fit(models.build("tiny", seed=0), (images, labels), TINY4.replace(epochs=1), out_dir=tmp_path,
                 verbose=False)
    assert (tmp_path / "checkpoint.keras").exists()


def test_full_disk_names_the_checkpoint_and_leaves_no_temporary(tmp_path):
    class HalfSaved:
        def save(self, path):
            pathlib.Path(path).write_bytes(b"PK\x03\x04 half")
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match=rf"Cannot write checkpoint '{tmp_path / 'checkpoint.keras'}' "
                                      r"\(via \.checkpoint\.keras\..*\): No space left on device"):
        training._write_checkpoint(HalfSaved(), tmp_path, {"epoch": 1})
    assert os.listdir(tmp_path) == []


def test_temporaries_left_by_a_killed_run_are_removed_and_no_empty_val_columns(tmp_path):
    debris = [tmp_path / ".checkpoint.keras.k2j4_x.keras", tmp_path / f".checkpoint.keras.{os.getpid()}.tmp.keras",
              tmp_path / ".history.csv.abcd.tmp"]
    for path in debris:
        path.write_bytes(b"PK\x03\x04 half")
    images, labels = _arrays(64)
    _, history = training.fit(models.build("tiny", seed=0), (images, labels), TINY4.replace(epochs=1),
                              out_dir=tmp_path, verbose=False)
    assert not any(path.exists() for path in debris)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.keras", "history.csv", "model.keras"] + (
        ["tb"] if (tmp_path / "tb").exists() else [])
    # Without validation there are no val_* columns of NaN (Keras' CSVLogger wrote them as NA).
    assert not [c for c in history.columns if c.startswith("val_")]
    assert history.notna().all().all()


def test_empty_out_dir_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    images, labels = _arrays(64)
    with pytest.raises(ValueError, match=r"'out_dir' parameter .* Got '' instead \(an empty path"):
        training.fit(models.build("tiny", seed=0), (images, labels), TINY4.replace(epochs=1), out_dir="",
                     verbose=False)
    assert os.listdir(tmp_path) == []


def test_a_diverging_run_stops_keeps_its_last_good_checkpoint_and_says_so(tmp_path):
    """A loss that becomes NaN (here: weights poisoned at the start of epoch 2) ends training at once with a
    message naming the epoch; the checkpoint and history.csv keep the good epoch, and no model is saved."""
    import keras

    class Poison(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                layer = self.model.layers[-1].layers[-1] if hasattr(self.model.layers[-1], "layers") else None
                target = layer if layer is not None and layer.weights else self.model.layers[-1]
                target.weights[0].assign(np.full(target.weights[0].shape, np.nan, np.float32))

    images, labels = _arrays(64)
    with pytest.raises(ValueError, match=r"training diverged in epoch 2 of 3: the loss became NaN or inf.*"
                                         r"still holds the 1 good epochs before it.*lower learning_rate"):
        training.fit(models.build("tiny", seed=0), (images, labels), TINY4.replace(epochs=3), out_dir=tmp_path,
                     verbose=False, callbacks=[Poison()])
    history = pd.read_csv(tmp_path / training.HISTORY)
    assert list(history["epoch"]) == [0] and history.notna().all().all()
    assert not (tmp_path / training.FINAL).exists()
    model, history = training.fit(models.build("tiny", seed=0), (images, labels), TINY4.replace(epochs=3),
                                  out_dir=tmp_path, resume=True, verbose=False)  # resumed from the good epoch
    assert all(np.isfinite(w).all() for w in model.get_weights()) and list(history["epoch"]) == [0, 1, 2]
    with pytest.raises(ValueError, match=r"training diverged in epoch 2 of 3"):  # without out_dir too
        training.fit(models.build("tiny", seed=0), (images, labels), TINY4.replace(epochs=3), verbose=False,
                     callbacks=[Poison()])
