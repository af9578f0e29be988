"""Tests for fervis.monitoring (notebook 4): callbacks, their files, TensorBoard events, plots."""

import dataclasses
import json
import os
import types

import keras
import numpy as np
import pandas as pd
import pytest

from fervis import monitoring, plots, recipes, training, widgets
from fervis.data import Dataset

EPOCHS = 4  # the shared run: killed after epoch 2, resumed to 4


class _Killed(Exception):
    pass


class _Kill(keras.callbacks.Callback):
    """Stands in for a kill: the run dies at the end of one epoch, after its checkpoint."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at:
            raise _Killed(f"killed after epoch {epoch + 1}")


class _Logs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(dict(logs))


@pytest.fixture(scope="module")
def small(synthetic_small):
    train = synthetic_small.subset("Training").sample(192, seed=1)
    val = synthetic_small.subset("PublicTest").sample(70, seed=1)
    return train, val


@pytest.fixture(scope="module")
def run(small, tmp_path_factory):
    """One monitored ``training.fit`` run of the tiny model: killed after epoch 2, resumed."""
    train, val = small
    out = tmp_path_factory.mktemp("monitored") / "run"
    recipe = recipes.get("tiny").replace(epochs=EPOCHS, batch_size=64)
    model = keras.models.clone_model(monitoring_model())
    cbs = monitoring.callbacks(val, log_dir=out, patience=2)
    with pytest.raises(_Killed):
        training.fit(model, train, recipe, out_dir=out, validation=val, callbacks=cbs + [_Kill(1)], verbose=False)
    before = monitoring.history(out)
    cbs = monitoring.callbacks(val, log_dir=out, patience=2, resume=True)
    logs = _Logs()
    model, hist = training.fit(model, train, recipe, out_dir=out, validation=val, resume=True,
                               callbacks=cbs + [logs], verbose=False)
    return types.SimpleNamespace(dir=out, before=before, monitor=cbs[0], live=cbs[-1], logs=logs, fit_history=hist,
                                 model=model)


def monitoring_model():
    from fervis import models

    return models.build("tiny", seed=0)


# --------------------------------------------------------------------------- compute


def test_probe_set_one_face_per_class_with_its_regions(synthetic_small):
    val = synthetic_small.subset("PublicTest")
    probes = monitoring.probe_set(val, seed=3)
    present = sorted(set(val.labels.tolist()))
    assert probes.labels.tolist() == present
    assert probes.images.shape == (len(present), 48, 48) and probes.images.dtype == np.uint8
    for image, label, regions in zip(probes.images, probes.labels, probes.regions):
        idx = [i for i in range(len(val)) if np.array_equal(val.images[i], image)]
        assert idx and val.labels[idx[0]] == label
        assert np.array_equal(val.regions[idx[0]], regions)
    assert probes.region_names == val.region_names
    assert "angry" in repr(probes)


def test_probe_set_uses_the_template_without_regions(synthetic_small):
    from fervis import regions

    val = synthetic_small.subset("PublicTest")
    plain = Dataset(images=val.images, labels=val.labels, splits=val.splits)
    probes = monitoring.probe_set(plain)
    assert all(np.array_equal(r, regions.template()) for r in probes.regions)
    assert probes.region_names == tuple(regions.REGION_NAMES)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((3, 48, 48)), "must be a fervis Dataset"),
    ("synthetic", "must be a fervis Dataset"),
])
def test_probe_set_rejects_non_datasets(bad, match):
    with pytest.raises(ValueError, match=match):
        monitoring.probe_set(bad)


def test_probe_set_rejects_unlabelled_faces(synthetic_small):
    val = synthetic_small.subset("PublicTest")
    unlabelled = Dataset(images=val.images[:5], labels=np.full(5, -1), splits=val.splits[:5])
    with pytest.raises(ValueError, match="labelled faces"):
        monitoring.probe_set(unlabelled)


@pytest.mark.parametrize("b_of_a, expected", [
    (lambda a: a.copy(), 1.0),
    (lambda a: a ** 3 + 7, 1.0),  # any increasing transform keeps the ranks
    (lambda a: -a, -1.0),
])
def test_spearman_is_a_rank_correlation(b_of_a, expected):
    a = np.random.default_rng(0).normal(size=(3, 48, 48))
    assert np.allclose(monitoring.spearman(a, b_of_a(a)), expected)


def test_spearman_matches_scipy_and_gives_nan_for_flat_maps():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(1)
    a, b = rng.random((2, 6, 6)), rng.random((2, 6, 6))
    b[1] = 0.5
    got = monitoring.spearman(a, b)
    assert np.isclose(got[0], spearmanr(a[0].ravel(), b[0].ravel())[0])
    assert np.isnan(got[1])
    with pytest.raises(ValueError, match="one shape"):
        monitoring.spearman(a, b[:, :3])


def test_one_spearman_for_drift_and_randomization():
    """monitoring.spearman is saliency.spearman: the drift curve and the randomisation check agree,
    also on a map that is not finite (undefined: NaN in both; monitoring used to rank an inf)."""
    from fervis import saliency

    rng = np.random.default_rng(2)
    a, b = rng.random((4, 6, 6)), rng.random((4, 6, 6))
    b[1], b[2, 0, 0], b[3, 0, 0] = 0.0, np.inf, np.nan
    got = monitoring.spearman(a, b)
    np.testing.assert_array_equal(got, saliency.spearman(a, b))
    assert np.isfinite(got[0]) and np.isnan(got[1:]).all()


@pytest.mark.parametrize("val_loss, loss, patience, expected", [
    ([2, 1, 1.5, 2], [3, 2, 1, 0.5], 2, [0, 0, 0, 1]),
    ([2, 1, 1.5, 2], [3, 2, 1, 0.5], 3, [0, 0, 0, 0]),            # rose only twice
    ([2, 1, 1.5, 2], [3, 2, 2.5, 3], 2, [0, 0, 0, 0]),            # training loss rose too
    ([3, 2, 2.5, 2.4, 2.6, 2.8], [6, 5, 4, 3, 2, 1], 2, [0, 0, 0, 0, 0, 1]),
    ([1, 2, 3, 4, 5], [5, 4, 3, 2, 1], 1, [0, 1, 1, 1, 1]),
])
def test_overfitting_flags(val_loss, loss, patience, expected):
    history = pd.DataFrame({"loss": loss, "val_loss": val_loss})
    assert monitoring.overfitting(history, patience).astype(int).tolist() == expected


def test_overfitting_is_silent_on_the_shipped_history():
    from fervis import models

    history = pd.read_csv(models.pretrained_path("fer2013").with_name("fer2013_history.csv"))
    val = history["val_loss"]
    assert len(history) == 100 and val.iloc[-1] <= 1.004 * val.min()  # ends within 0.4 % of its minimum
    for patience in (1, 2, 3):
        assert not monitoring.overfitting(history, patience).any()
    # Its local rises are there: counting any rise, three epochs of it are flagged.
    assert monitoring.overfitting(history, 3, min_rise=0.0).any()


def test_overfitting_fires_on_a_model_that_memorises_its_faces(synthetic_small):
    """A small unregularised network on 60 faces: training loss falls towards 0 while
    validation loss climbs well above its early best."""
    keras.utils.set_random_seed(0)
    train, val = synthetic_small.subset("Training").sample(60, seed=0), synthetic_small.subset("PublicTest")
    model = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Rescaling(1 / 255.0), keras.layers.Flatten(),
                              keras.layers.Dense(512, activation="relu"), keras.layers.Dense(7, activation="softmax")])
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    fit = model.fit(train.x(), train.labels, validation_data=(val.x(), val.labels), epochs=50, batch_size=10,
                    verbose=0)
    history = pd.DataFrame(fit.history)
    assert history["loss"].iloc[-1] < 0.3  # memorised: its 60 faces are nearly all fitted
    assert history["val_loss"].iloc[-1] > 1.1 * history["val_loss"].min()
    flags = monitoring.overfitting(history, patience=2)
    assert flags.any() and flags[-15:].any()
    assert monitoring.summarize(history, patience=2)["overfitting_from"] is not None


def test_overfitting_without_validation_and_bad_patience():
    assert not monitoring.overfitting(pd.DataFrame({"loss": [3, 2, 1]}), 1).any()
    with pytest.raises(ValueError, match="'patience' parameter .* int >= 1"):
        monitoring.overfitting(pd.DataFrame({"loss": [1.0]}), 0)
    with pytest.raises(ValueError, match="'history' parameter .* DataFrame"):
        monitoring.overfitting([1, 2, 3])
    with pytest.raises(ValueError, match="'min_rise' parameter .* >= 0"):
        monitoring.overfitting(pd.DataFrame({"loss": [1.0]}), 1, min_rise=-0.1)


@pytest.mark.parametrize("column, values, expected", [
    ("val_loss", [2.0, 1.0, 1.5], 1),
    ("val_accuracy", [0.2, 0.5, 0.4], 1),
    ("val_accuracy", [0.2, 0.4, 0.5], 2),
    ("val_loss", [np.nan, np.nan, np.nan], None),
])
def test_best_epoch(column, values, expected):
    assert monitoring.best_epoch(pd.DataFrame({column: values}), column) == expected


def test_best_epoch_names_the_columns_for_an_unknown_monitor():
    with pytest.raises(ValueError, match=r"'monitor' parameter .*\['loss'\].*'val_loss'"):
        monitoring.best_epoch(pd.DataFrame({"loss": [1.0]}))


def test_summarize_reports_numbers_counted_from_one():
    history = pd.DataFrame({
        "epoch": [0, 1, 2, 3], "loss": [2.0, 1.5, 1.0, 0.8], "val_loss": [1.8, 1.2, 1.4, 1.6],
        "val_accuracy": [0.3, 0.6, 0.55, 0.5],
        "val_recall_happy": [0.2, 0.7, 0.8, 0.9], "val_recall_sad": [0.0, 0.1, 0.2, 0.3],
        "drift_mean": [np.nan, 0.5, 0.85, 0.9], "share_mouth": [0.2, 0.3, 0.4, 0.5], "share_eyes": [0.1] * 4,
    })
    s = monitoring.summarize(history, patience=2)
    assert s["best_epoch"] == 2 and s["best"]["val_accuracy"] == 0.6
    assert s["overfitting_from"] == 4
    assert s["learned_at"] == {"happy": 2, "sad": None}
    # With precision (the Monitor keeps it), a class the model calls for most faces is not "learned" by
    # its recall alone: sad's recall is 0.9 from epoch 1, its precision reaches 0.5 at epoch 4.
    called_sad = history.assign(val_recall_sad=[0.9] * 4, val_precision_sad=[0.15, 0.3, np.nan, 0.55],
                                val_precision_happy=[0.9] * 4)
    assert monitoring.summarize(called_sad, patience=2)["learned_at"] == {"happy": 2, "sad": 4}
    assert s["settled_at"] == 3
    assert list(s["top_regions"]) == ["mouth", "eyes"]
    assert "n_val" not in s["best"] and "val_accuracy_low" not in s["best"]
    # Given the validation faces behind it, the best accuracy carries its n and Wilson interval.
    from scipy.stats import binomtest

    best = monitoring.summarize(history, patience=2, n_val=400)["best"]
    ci = binomtest(240, 400).proportion_ci(0.95, method="wilson")
    assert best["n_val"] == 400 and best["val_accuracy"] == 0.6
    assert (best["val_accuracy_low"], best["val_accuracy_high"]) == pytest.approx((ci.low, ci.high))
    with pytest.raises(ValueError, match=r"'n_val' parameter of fervis.monitoring.summarize"):
        monitoring.summarize(history, n_val=0)
    # an n that cannot be behind the accuracies: 0.3 x 350 = 105 faces, but 0.55 x 350 = 192.5 (epoch 3)
    with pytest.raises(ValueError, match=r"'n_val' .* epoch 3's val_accuracy 0.55 x 350 = 192.50 is not a whole"):
        monitoring.summarize(history, n_val=350)
    # Keras logs float32: 2379 of 3589 faces logged as float32 is accepted
    logged = history.assign(val_accuracy=np.float32([1000 / 3589, 2379 / 3589, 2000 / 3589, 1900 / 3589]))
    assert monitoring.summarize(logged, patience=2, n_val=3589)["best"]["n_val"] == 3589
    many = history.assign(val_accuracy=np.float32([k / 1_000_003 for k in (300_001, 654_321, 550_002, 500_001)]))
    assert monitoring.summarize(many, patience=2, n_val=1_000_003)["best"]["n_val"] == 1_000_003


# --------------------------------------------------------------------------- the callbacks in a run


def test_history_is_one_continuous_run_across_kill_and_resume(run):
    assert run.before["epoch"].tolist() == [0, 1]
    h = monitoring.history(run.dir)
    assert h["epoch"].tolist() == list(range(EPOCHS))
    # the epochs before the kill are kept exactly as they were measured
    pd.testing.assert_frame_equal(h.iloc[:2].reset_index(drop=True), run.before[h.columns], check_dtype=False)
    # drift at the first resumed epoch compares with the map saved before the kill
    assert np.isnan(h["drift_mean"].iloc[0]) and np.isfinite(h["drift_mean"].iloc[1:]).all()
    assert h.loc[:, h.columns.str.startswith("drift_")].iloc[1:].abs().le(1).all().all()
    # training.fit's own history agrees with the monitor's on the shared columns
    merged = run.fit_history.merge(h, on="epoch", suffixes=("_fit", "_mon"))
    assert len(merged) == EPOCHS
    assert np.allclose(merged["val_loss_fit"], merged["val_loss_mon"])


def test_history_columns_and_values(run, small):
    _, val = small
    h = monitoring.history(run.dir)
    names = val.class_names
    for column in (["loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "val_balanced_accuracy",
                    "drift_mean", "overfitting"] + [f"val_recall_{c}" for c in names]
                   + [f"val_precision_{c}" for c in names]
                   + [f"share_{r}" for r in val.region_names]):
        assert column in h, column
    shares = h[[f"share_{r}" for r in val.region_names]].to_numpy()
    assert np.allclose(shares.sum(axis=1), 1)
    recall = h[[f"val_recall_{c}" for c in names]].to_numpy()
    assert np.nanmin(recall) >= 0 and np.nanmax(recall) <= 1
    # balanced accuracy is the mean recall; the learning rate follows the recipe's schedule
    assert np.allclose(h["val_balanced_accuracy"], np.nanmean(recall, axis=1))
    precision = h[[f"val_precision_{c}" for c in names]].to_numpy()
    assert np.nanmin(precision) >= 0 and np.nanmax(precision) <= 1
    # each precision carries its n: the faces predicted as the class, all of them over the classes
    predicted = h[[f"val_predicted_{c}" for c in names]].to_numpy()
    assert (predicted.sum(axis=1) == len(val)).all()
    assert np.array_equal(np.isnan(precision), predicted == 0)
    hits = precision * predicted
    assert np.allclose(hits[predicted > 0], np.round(hits[predicted > 0]))  # a whole number of faces
    assert h["learning_rate"].iloc[-1] < h["learning_rate"].iloc[0]


def test_monitor_adds_its_measurements_to_the_logs(run):
    last = run.logs.seen[-1]
    h = monitoring.history(run.dir)
    assert np.isclose(last["drift_mean"], h["drift_mean"].iloc[-1])
    assert "val_recall_happy" in last and "share_mouth" in last


def test_probe_maps_on_disk_and_in_memory(run):
    ph = monitoring.probe_maps(run.dir)
    assert ph.epochs.tolist() == list(range(EPOCHS))
    assert ph.maps.shape == (EPOCHS, len(ph.probes), 48, 48)
    assert np.allclose(ph.maps.reshape(EPOCHS, len(ph.probes), -1).max(axis=2), 1, atol=1e-3)
    assert ph.confusion.shape == (EPOCHS, 7, 7) and ph.confusion[0].sum() == 70
    h = monitoring.history(run.dir)
    # drift recomputed from the (float16) stored maps agrees with the measured one
    assert np.allclose(np.nanmean(ph.drift[1:], axis=1), h["drift_mean"].iloc[1:], atol=0.02)
    mem = monitoring.probe_maps(run.monitor)
    assert mem.epochs.tolist() == list(range(EPOCHS))
    assert np.allclose(mem.maps, ph.maps, atol=1e-3)


def _accumulator(path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = event_accumulator.EventAccumulator(str(path), size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    by_kind = {}
    for tag in acc.Tags()["tensors"]:
        kind = acc.SummaryMetadata(tag).plugin_data.plugin_name
        by_kind.setdefault(kind, {})[tag] = sorted({e.step for e in acc.Tensors(tag)})
    return by_kind


def test_tensorboard_events_hold_every_tag_for_every_epoch(run, small):
    _, val = small
    tags = _accumulator(run.dir / "tb" / "monitor")
    every = list(range(EPOCHS))
    scalars = tags["scalars"]
    expected = (["loss/train", "loss/validation", "accuracy/train", "accuracy/validation", "learning_rate",
                 "accuracy/validation_balanced", "overfitting"]
                + [f"recall/{c}" for c in val.class_names] + [f"predicted/{c}" for c in val.class_names]
                + [f"region_share/{r}" for r in val.region_names])
    for tag in expected:
        assert scalars.get(tag) == every, tag
    # precision is undefined (NaN, not written) at an epoch where the class was never predicted
    h = monitoring.history(run.dir)
    for c in val.class_names:
        defined = [e for e, v in zip(every, h[f"val_precision_{c}"]) if np.isfinite(v)]
        assert scalars.get(f"precision/{c}", []) == defined, c
    for tag in ["drift/mean"] + [f"drift/{c}" for c in val.class_names]:
        assert scalars.get(tag) == every[1:], tag  # no previous map at the first epoch
    variables = [v.path.replace(":", "_") for v in monitoring_model().trainable_variables]
    assert variables
    for name in variables:
        assert tags["histograms"].get(f"weights/{name}") == every, name
        assert tags["histograms"].get(f"gradients/{name}") == every, name
    assert tags["images"] == {"confusion_matrix": every, "probe_saliency": every}


def test_event_tags_reads_the_same_without_tensorboard(run):
    table = monitoring.event_tags(run.dir / "tb")
    mine = table[table["run"] == "monitor"]
    counts = mine.groupby("kind").size().to_dict()
    tb = _accumulator(run.dir / "tb" / "monitor")
    assert counts == {kind: len(tags) for kind, tags in tb.items()}
    assert set(table["run"]) >= {"monitor", "train", "validation"}  # training.fit's own runs beside
    assert (mine[mine["tag"] == "loss/train"]["steps"] == EPOCHS).all()
    with pytest.raises(ValueError, match="existing directory"):
        monitoring.event_tags(run.dir / "nowhere")


def test_tensorboard_images_are_pngs(run):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = event_accumulator.EventAccumulator(str(run.dir / "tb" / "monitor"),
                                             size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    width, height, png = acc.Tensors("probe_saliency")[-1].tensor_proto.string_val
    assert png.startswith(b"\x89PNG") and int(width) > int(height) > 0


def test_live_curves_redraw_one_figure(run):
    live = run.live
    assert live.redraws >= 2 and live.figure is not None
    titles = [ax.get_title() for ax in live.figure.get_axes()]
    assert any("best epoch" in t for t in titles)
    assert "validation recall per class" in titles
    assert any("explanation drift" in t for t in titles)


# --------------------------------------------------------------------------- plain model.fit, any model


def _fit(model, x, y, callbacks, epochs=2):
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    onehot = keras.utils.to_categorical(y, 7)
    return model.fit(x, onehot, validation_data=(x, onehot), epochs=epochs, batch_size=32, verbose=0,
                     callbacks=callbacks)


def _drive(model, callbacks, epochs, initial_epoch=0):
    """Call the callbacks as ``model.fit`` does (through a CallbackList), with made-up logs
    and slightly moved weights each epoch instead of the cost of training steps."""
    hooks = keras.callbacks.CallbackList(list(callbacks), model=model)
    rng = np.random.default_rng(initial_epoch)
    hooks.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        hooks.on_epoch_begin(epoch)
        model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in model.get_weights()])
        logs = {"loss": 2.0 - 0.1 * epoch, "accuracy": 0.2 + 0.05 * epoch,
                "val_loss": 1.9 - 0.1 * epoch, "val_accuracy": 0.25}
        hooks.on_epoch_end(epoch, logs)
    hooks.on_train_end()


def test_callbacks_on_the_residual_model_run_gradients_in_graphs(residual_model, small, tmp_path):
    """Input gradients through a 1x1 stride-2 shortcut crash oneDNN when taken eagerly.

    The shortcut's *weight* gradient (Conv2DBackpropFilter) aborts TF 2.21 even inside a
    graph, so Keras cannot train this model at all; the monitor is run on the model as it is,
    and a monitored training run freezes the shortcut.
    """
    _, val = small
    probes = monitoring.probe_set(val)
    monitor = monitoring.Monitor(val, probes, method="smoothgrad")
    monitor.set_model(residual_model)
    row = monitor.measure(0, {})
    assert np.isfinite(row["share_mouth"]) and np.isnan(row["learning_rate"])  # not compiled: no optimizer
    assert monitor.probe_maps().maps.shape == (1, len(probes), 48, 48)

    model = keras.models.clone_model(residual_model)
    model.get_layer("shortcut_conv").trainable = False
    cbs = monitoring.callbacks((val.images[:48], val.labels[:48]), probes, log_dir=tmp_path / "res", patience=1)
    _fit(model, val.x()[:48], val.labels[:48], cbs)
    h = monitoring.history(tmp_path / "res")
    assert len(h) == 2 and np.isfinite(h["drift_mean"].iloc[1])
    tags = monitoring.event_tags(tmp_path / "res" / "tb")
    grads = tags[tags["tag"].str.startswith("gradients/")]
    assert any("res_conv1" in t for t in grads["tag"]) and (grads["steps"] == 2).all()
    assert not any("shortcut_conv" in t for t in grads["tag"])  # frozen: no gradient to show


def test_monitor_method_is_a_saliency_method(small):
    from fervis import saliency

    _, val = small
    with pytest.raises(ValueError, match=r"'method' parameter of fervis.monitoring.Monitor must be one of"):
        monitoring.Monitor(val, method="lime")
    assert all(m in saliency.METHODS for m in ("gradient", "smoothgrad", "gradcam"))
    monitoring.Monitor(val, method="gradcam")  # every saliency method, not a private pair of two


def test_monitor_in_memory_in_any_callback_order(small, monkeypatch):
    from fervis import regions

    _, val = small
    monitor = monitoring.Monitor(val)
    live = monitoring.LiveCurves(monitor, display=False)
    logs = _Logs()
    model = monitoring_model()
    calls = []
    shares = regions.shares

    def counting(*args, **kwargs):
        calls.append(1)
        return shares(*args, **kwargs)

    monkeypatch.setattr(monitoring.regions, "shares", counting)
    _drive(model, [live, logs, monitor], epochs=2)  # live curves first
    assert monitor.history["epoch"].tolist() == [0, 1]
    assert "drift_mean" in logs.seen[0]  # measured when the live curves asked, before later callbacks
    assert len(calls) == 2  # once per epoch, although two callbacks asked
    # a second fit of the same monitor continues the run, from the epoch it starts at
    _drive(model, [monitor], epochs=1)
    assert monitor.history["epoch"].tolist() == [0]


def test_live_curves_alone_draw_the_logs(small):
    _, val = small
    live = monitoring.LiveCurves(patience=1, display=False)
    _drive(monitoring_model(), [live], epochs=2)
    assert live.history["epoch"].tolist() == [0, 1]
    assert len(live.figure.get_axes()) == 2  # loss and accuracy: no recall, no drift without a monitor


def test_live_curves_update_one_output_area(small, monkeypatch):
    import IPython
    import IPython.display

    shown = []

    class Handle:
        def update(self, obj):
            shown.append(("update", obj))

    def display(obj, display_id=None):
        shown.append(("display", obj))
        return Handle()

    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display", display)
    _, val = small
    live = monitoring.LiveCurves()
    _drive(monitoring_model(), [live], epochs=3)
    kinds = [k for k, _ in shown]
    assert kinds[0] == "display" and kinds.count("display") == 1 and kinds.count("update") >= 3
    assert all(obj is live.figure for _, obj in shown)


# --------------------------------------------------------------------------- log directories


def test_a_log_dir_holding_a_run_is_not_overwritten_unless_asked(run, small):
    _, val = small
    with pytest.raises(ValueError, match=r"'log_dir' parameter .*already holds a monitored run.*epochs 1-4"):
        monitoring.Monitor(val, log_dir=run.dir)
    with pytest.raises(ValueError, match="already holds 2 TensorBoard event file"):
        monitoring.TensorBoardWriter(run.dir / "tb" / "monitor", monitoring.Monitor(val))
    with pytest.raises(ValueError, match="exclude each other"):
        monitoring.Monitor(val, log_dir=run.dir, overwrite=True, resume=True)
    assert monitoring.history(run.dir)["epoch"].tolist() == list(range(EPOCHS))  # untouched


def test_overwrite_replaces_and_resume_refuses_another_run(small, tmp_path):
    _, val = small
    model = monitoring_model()
    log = tmp_path / "log"
    _drive(model, monitoring.callbacks(val, log_dir=log, live=False), epochs=2)
    # another run: other probe faces
    other = monitoring.probe_set(val, seed=5)
    other = monitoring.Probes(other.images, other.labels[::-1].copy(), other.regions, other.region_names)
    with pytest.raises(ValueError, match="holds another run: its \\['probe_labels'\\] differ"):
        _drive(model, [monitoring.Monitor(val, other, log_dir=log, resume=True)], epochs=1)
    _drive(model, monitoring.callbacks(val, log_dir=log, live=False, overwrite=True), epochs=1)
    assert monitoring.history(log)["epoch"].tolist() == [0]
    assert len(list((log / "probe_maps").glob("*.npz"))) == 1
    assert len(list((log / "tb" / "monitor").glob("events.out.tfevents*"))) == 1
    assert json.loads((log / "monitoring.json").read_text())["num_validation"] == len(val)


def test_an_unwritable_log_dir_is_a_clear_error(small, tmp_path):
    _, val = small
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match=r"'log_dir' parameter of fervis.monitoring.Monitor must be a directory "
                                         r"fervis can write to"):
        monitoring.Monitor(val, log_dir=blocker / "run")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ValueError, match="can write to"):
            monitoring.callbacks(val, log_dir=locked / "run")


def test_run_dir_protects_earlier_runs(tmp_path):
    first = monitoring.run_dir("nb04", root=tmp_path)
    (first / "monitoring.csv").write_text("epoch,loss\n0,1.0\n1,0.5\n")
    with pytest.raises(ValueError, match=r"already holds a run \(monitored epochs 1-2\); pass resume=True"):
        monitoring.run_dir("nb04", root=tmp_path)
    assert monitoring.run_dir("nb04", root=tmp_path, resume=True) == first
    assert (first / "monitoring.csv").exists()
    assert monitoring.run_dir("nb04", root=tmp_path, overwrite=True) == first
    assert not any(first.iterdir())
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="not a fervis run"):
        monitoring.run_dir("mine", root=tmp_path, overwrite=True)
    assert (tmp_path / "mine" / "thesis.tex").exists()
    for bad in ("../escape", "", "a/b", 3):
        with pytest.raises(ValueError, match="plain directory name"):
            monitoring.run_dir(bad, root=tmp_path)


def test_tensorboard_command_avoids_machine_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("FERVIS_HOME", str(tmp_path))
    assert monitoring.tensorboard_command(tmp_path / "monitoring" / "x" / "tb") == \
        'tensorboard --logdir "$FERVIS_HOME/monitoring/x/tb"'
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FERVIS_HOME", str(tmp_path / "elsewhere"))
    assert monitoring.tensorboard_command(tmp_path / "runs") == 'tensorboard --logdir "runs"'
    monkeypatch.delenv("FERVIS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir("/")
    assert monitoring.tensorboard_command(tmp_path / "home" / "r" / "tb") == 'tensorboard --logdir "~/r/tb"'


def test_epoch_table_counts_epochs_from_one_and_rounds():
    table = monitoring.epoch_table(_history(), decimals=2)
    assert table.index.tolist() == [1, 2, 3, 4, 5, 6] and table.index.name == "epoch"
    assert list(table.columns) == ["loss", "val_loss", "accuracy", "val_accuracy", "drift_mean"]
    assert table["loss"].iloc[1] == round(_history()["loss"].iloc[1], 2)
    lr = monitoring.epoch_table(pd.DataFrame({"epoch": [0], "learning_rate": [0.0012345]}), decimals=2)
    assert lr["learning_rate"].iloc[0] == 0.00123  # small numbers keep their digits
    first = monitoring.epoch_table(pd.DataFrame({"epoch": [0, 1], "loss": [2.0, 1.5], "drift_mean": [np.nan, 0.3]}))
    assert first["drift_mean"].tolist() == ["—", 0.3] and "NaN" not in first.to_string()  # no drift before epoch 1


def test_region_focus_is_mass_share_over_area_share(run):
    from fervis import regions

    ph = monitoring.probe_maps(run.dir)
    focus = monitoring.region_focus(ph)
    names = list(ph.probes.region_names)
    had = [name for i, name in enumerate(names) if (ph.probes.regions == i).any()]
    assert focus.index.tolist() == list(range(1, EPOCHS + 1)) and list(focus.columns) == had
    expected = np.nanmean(regions.shares(ph.maps[-1], ph.probes.regions, normalize="area"), axis=0)
    assert np.allclose(focus.iloc[-1].to_numpy(), expected[[names.index(n) for n in had]])
    # A region no probe face has (the occluder on FER2013's template) is not shown, not a NaN column.
    gone = names.index(had[-1])
    probes = dataclasses.replace(ph.probes, regions=np.where(ph.probes.regions == gone, 0, ph.probes.regions))
    without = monitoring.region_focus(dataclasses.replace(ph, probes=probes))
    assert list(without.columns) == had[:-1] and not without.isna().all().any()
    flat = monitoring.ProbeHistory(ph.epochs[:1], np.ones_like(ph.maps[:1]), ph.shares[:1], ph.confusion[:1],
                                   ph.probes)
    present = monitoring.region_focus(flat).iloc[0].dropna()
    assert np.allclose(present, 1.0)  # a uniform map is spread like the area
    with pytest.raises(ValueError, match="ProbeHistory"):
        monitoring.region_focus(ph.maps)


@pytest.mark.parametrize("kwargs, match", [
    ({"validation": "faces"}, "'validation' parameter .* Dataset or a tuple"),
    ({"validation": (np.zeros((4, 48, 48)), np.array([0, 1, 2, -1]))}, r"must be labelled, but 1 of its 4 images in the arrays have no label"),
    ({"validation": (np.zeros((4, 48, 48)), np.array([0, 1, 2, 3]))}, "'probes' parameter .* is needed"),
    ({"probes": "faces"}, r"'probes' parameter .*Probes \(see probe_set\)"),
    ({"patience": 0}, "'patience' parameter"),
])
def test_monitor_bad_input(small, kwargs, match):
    _, val = small
    args = {"validation": val, **kwargs}
    with pytest.raises(ValueError, match=match):
        monitoring.Monitor(**args)


def test_other_callbacks_bad_input(small, tmp_path):
    _, val = small
    with pytest.raises(ValueError, match="'monitor' parameter .*Monitor or None"):
        monitoring.LiveCurves(monitor="m")
    with pytest.raises(ValueError, match="'every' parameter"):
        monitoring.LiveCurves(every=0)
    with pytest.raises(ValueError, match="'grad_batch' parameter"):
        monitoring.TensorBoardWriter(tmp_path, monitoring.Monitor(val), grad_batch=0)
    with pytest.raises(ValueError, match="needs a log_dir"):
        monitoring.callbacks(val, tensorboard=True)


def test_monitor_rejects_a_model_with_other_inputs(small):
    _, val = small
    inputs = keras.Input((32, 32, 1))
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(keras.layers.Flatten()(inputs)))
    monitor = monitoring.Monitor(val)
    monitor.set_model(model)
    with pytest.raises(ValueError, match=r"images shaped \(n,\) \+ \(32, 32, 1\)"):
        monitor.measure(0, {})


# --------------------------------------------------------------------------- the notebook's plan


def test_training_plan_is_a_fresh_copy_on_a_sample(synthetic_small):
    tiny_model = monitoring_model()
    tiny_model.set_weights([w + 1 for w in tiny_model.get_weights()])  # stands in for training
    session = types.SimpleNamespace(dataset=synthetic_small, model=tiny_model, budget="quick",
                                    evaluation=synthetic_small.subset("PublicTest"))
    plan = monitoring.training_plan(session, n_train=100, n_val=50, epochs=2)
    assert len(plan.train) == 100 and set(plan.train.splits) == {"Training"}
    assert len(plan.validation) == 50 and plan.recipe.epochs == 2 and plan.recipe.batch_size == 32
    assert [layer.name for layer in plan.model.layers] == [layer.name for layer in tiny_model.layers]
    assert not np.allclose(plan.model.get_weights()[0], tiny_model.get_weights()[0])  # untrained
    assert np.allclose(plan.model.get_weights()[0], monitoring_model().get_weights()[0])  # seeded initialisers
    assert "100 training faces" in repr(plan)
    assert plan.probes.labels.tolist() == sorted(set(plan.validation.labels.tolist()))
    full = monitoring.training_plan(types.SimpleNamespace(**{**vars(session), "budget": "full"}))
    assert len(full.train) == 700 and full.recipe.epochs == recipes.get("quick").epochs
    # Real faces (no synthetic regions): the quick budget trains the small architecture, which
    # leaves FER2013's "always happy" plateau within its minutes, on more faces.
    real = dataclasses.replace(synthetic_small, regions=None, region_names=None)
    plan = monitoring.training_plan(types.SimpleNamespace(**{**vars(session), "dataset": real}), n_train=100)
    assert plan.model.name == "small" and plan.recipe.epochs == 8 and plan.recipe.batch_size == 64
    # ...and says so: the user's own model is named as the one it stands in for.
    assert plan.stands_in_for == tiny_model.name and f"in place of the session's model {tiny_model.name!r}" in repr(plan)
    assert full.stands_in_for is None and "in place of" not in repr(full)
    assert len(plan.train) == 100 and len(plan.validation) == 280  # the evaluation split, under 350 faces
    with pytest.raises(ValueError, match="'epochs' parameter .* an int >= 1"):
        monitoring.training_plan(session, epochs=0)
    with pytest.raises(ValueError, match="'session' parameter .*Session"):
        monitoring.training_plan(synthetic_small)


# --------------------------------------------------------------------------- plots and widgets


def _history(n=6, flag=False):
    rng = np.random.default_rng(0)
    val_loss = [2.0, 1.5, 1.2, 1.3, 1.4, 1.6][:n] if flag else list(np.linspace(2, 1, n))
    frame = pd.DataFrame({"epoch": range(n), "loss": np.linspace(2.2, 0.8, n), "val_loss": val_loss,
                          "accuracy": np.linspace(0.2, 0.8, n), "val_accuracy": np.linspace(0.2, 0.6, n)})
    for c in ("happy", "sad"):
        frame[f"val_recall_{c}"] = rng.random(n)
        frame[f"drift_{c}"] = [np.nan] + list(rng.random(n - 1))
    frame["drift_mean"] = frame[["drift_happy", "drift_sad"]].mean(axis=1)
    frame["share_mouth"], frame["share_eyes"] = 0.6, 0.4
    return frame


@pytest.mark.parametrize("flag, title", [(False, "no overfitting flag"), (True, "overfitting from epoch 5")])
def test_training_curves_mark_best_epoch_and_overfitting(flag, title):
    h = _history(flag=flag)
    fig = plots.training_curves(h, best=monitoring.best_epoch(h), flags=monitoring.overfitting(h, 2), patience=2)
    axes = fig.get_axes()
    assert [ax.get_title().split(" (")[0] for ax in axes] == ["loss", "accuracy", "validation recall per class"]
    best = 3 if flag else 6
    assert axes[0].get_title() == f"loss (best epoch {best})"
    assert fig._suptitle.get_text().startswith(title)
    assert len(axes[2].get_lines()) >= 2


def test_training_curves_only_draw_what_monitoring_computed(tmp_path):
    h = _history(flag=True)
    # the compatible path: monitoring.history stores the best epoch and the flags per patience
    (tmp_path / monitoring.HISTORY).write_text(h.to_csv(index=False))
    stored = monitoring.history(tmp_path)
    assert stored.attrs["best_epoch"] == monitoring.best_epoch(h) == 2
    assert stored.attrs["overfitting"][2] == monitoring.overfitting(h, 2).tolist()
    fig = plots.training_curves(stored, patience=2)
    assert fig.get_axes()[0].get_title() == "loss (best epoch 3)"
    assert fig._suptitle.get_text().startswith("overfitting from epoch 5")
    # what is given is drawn, whatever the history would say
    fig = plots.training_curves(stored, best=0, flags=np.zeros(len(h), bool), patience=2)
    assert fig.get_axes()[0].get_title() == "loss (best epoch 1)"
    assert fig._suptitle.get_text().startswith("no overfitting flag")
    with pytest.raises(ValueError, match="'flags' parameter of fervis.plots.training_curves must be the"):
        plots.training_curves(h, patience=2)  # a plain frame: nothing computed to draw
    with pytest.raises(ValueError, match="must be 6 booleans"):
        plots.training_curves(h, best=2, flags=[True], patience=2)
    with pytest.raises(ValueError, match="'flags' parameter .* is needed for patience 11"):
        plots.training_curves(stored, patience=11)


def test_training_curves_fill_each_left_out_verdict_from_the_history(tmp_path):
    h = _history(flag=True)
    (tmp_path / monitoring.HISTORY).write_text(h.to_csv(index=False))
    stored = monitoring.history(tmp_path)
    # best given: the flags still come from the history (they used to be required)
    fig = plots.training_curves(stored, best=0, patience=2)
    assert fig.get_axes()[0].get_title() == "loss (best epoch 1)"
    assert fig._suptitle.get_text().startswith("overfitting from epoch 5")
    # flags given: the best epoch still comes from the history (it used to be dropped silently)
    fig = plots.training_curves(stored, flags=np.zeros(len(h), bool), patience=2)
    assert fig.get_axes()[0].get_title() == "loss (best epoch 3)"
    assert fig._suptitle.get_text().startswith("no overfitting flag")
    # a plain frame has no best epoch stored: none is drawn
    fig = plots.training_curves(h, flags=np.zeros(len(h), bool), patience=2)
    assert fig.get_axes()[0].get_title() == "loss"
    for best in (6, -1, 1.0, True):
        with pytest.raises(ValueError, match=r"'best' parameter of fervis\.plots\.training_curves must be an int "
                                             r"in \[0, 5\]"):
            plots.training_curves(stored, best=best, patience=2)


def test_explanation_drift_and_dashboard():
    fig = plots.explanation_drift(_history())
    drift_ax, share_ax = fig.get_axes()
    assert "Spearman" in drift_ax.get_title()
    assert len(drift_ax.get_lines()) == 3  # two probes and the mean
    assert len(share_ax.collections) == 2  # one band per region
    named = plots.explanation_drift(_history(), method="Grad-CAM on block3_act2").get_axes()
    assert "drift of Grad-CAM on block3_act2" in named[0].get_title() and "block3_act2" in named[1].get_title()
    h = _history()
    dash = plots.training_dashboard(h, patience=2, best=monitoring.best_epoch(h), flags=monitoring.overfitting(h, 2))
    assert len(dash.get_axes()) == 5


def test_probe_maps_grid(run):
    ph = monitoring.probe_maps(run.dir)
    fig = plots.probe_maps_grid(ph, max_epochs=3)
    axes = fig.get_axes()
    assert len(axes) == 3 * len(ph.probes)
    assert [axes[i].get_title() for i in range(len(ph.probes))] == ph.probes.names
    assert any(t.get_text().startswith("ρ") for t in axes[-1].texts)
    with pytest.raises(ValueError, match="monitored epochs"):
        plots.probe_maps_grid(ph, epochs=[99])
    one = plots.probe_maps_grid(ph, epochs=[2])
    assert len(one.get_axes()) == len(ph.probes)


def test_probe_browser_moves_through_epochs(run):
    box = widgets.probe_browser(monitoring.probe_maps(run.dir))
    assert box.epoch.value == EPOCHS - 1 and "n/a" not in box.summary.value
    box.epoch.value = 0
    assert box.summary.value.startswith("epoch 1: mean ρ with the previous epoch n/a")
    assert len(box.figure.get_axes()) == 7
    with pytest.raises(ValueError, match="at least one monitored epoch"):
        widgets.probe_browser(types.SimpleNamespace(epochs=np.array([], int)))


# --------------------------------------------------------------------------- the notebook on FER2013


@pytest.mark.fer2013
@pytest.mark.slow
def test_notebook_quick_run_on_fer2013(fer2013_path, tmp_path, run_notebook, notebook_text):
    out = run_notebook("04_training_monitoring.ipynb", tmp_path / "04.ipynb",
                       {"DATA": fer2013_path, "BUDGET": "quick", "OVERWRITE": True, "RUN": "04_fer2013_quick"})
    text = notebook_text(out)  # no inf or NaN anywhere
    assert "best epoch" in text
    best = float(text.split("validation accuracy at the best epoch: ")[1].split("%")[0])
    assert 45 <= best <= 100  # the quick budget leaves the "always happy" plateau (25 %) on real faces
    assert "occluder" not in text  # a region FER2013 does not have


@pytest.mark.fer2013
def test_region_focus_leaves_out_the_synthetic_occluder_on_fer2013(fer2013_path):
    from fervis import data

    probes = monitoring.probe_set(data.load(fer2013_path).subset("PublicTest"))
    assert "occluder" in probes.region_names and not (probes.regions == probes.region_names.index("occluder")).any()
    maps = np.random.default_rng(0).random((2, len(probes), 48, 48)).astype(np.float32)
    history = monitoring.ProbeHistory(np.arange(2), maps, np.zeros((2, len(probes), len(probes.region_names))),
                                      np.zeros((2, 7, 7), np.int64), probes)
    focus = monitoring.region_focus(history)
    assert "occluder" not in focus.columns and np.isfinite(focus.to_numpy()).all()


def test_one_confusion_matrix_for_labels_training_and_the_monitor(small):
    """The three places that count predictions (notebook 3's table, evaluate, the monitor's epochs)
    give one matrix: fervis.models.confusion_matrix."""
    from fervis import labels, models

    _, val = small
    model = monitoring_model()
    val = Dataset(images=val.images, labels=val.labels, splits=np.full(len(val), "PublicTest"))
    monitor = monitoring.Monitor(val, monitoring.probe_set(val))
    monitor.set_model(model)
    row = monitor.measure(0, {})
    from_monitor = monitor.probe_maps().confusion[0]
    from_training = training.evaluate(model, val, split="PublicTest")["confusion_matrix"]
    probs = models.predict(model, val.images)
    from_labels = labels.confusion(val, probs).to_numpy()
    by_hand = np.zeros((7, 7), int)
    np.add.at(by_hand, (val.labels, probs.argmax(axis=1)), 1)
    for counts in (from_monitor, from_training, from_labels):
        np.testing.assert_array_equal(counts, by_hand)
    assert row["val_recall_happy"] == pytest.approx(training.evaluate(model, val)["recall"]["happy"], nan_ok=True)
    called_happy = by_hand[:, 3].sum()
    assert row["val_precision_happy"] == pytest.approx(by_hand[3, 3] / called_happy if called_happy else np.nan, nan_ok=True)
