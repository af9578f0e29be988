"""Tests for fervis.saliency: the seven methods against references, bad input, region
numbers, deletion/insertion, the randomisation check, plots, the widget and the notebook."""

import dataclasses
import pathlib
import re

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from fervis import models, plots, regions, saliency, synthetic  # noqa: E402
from fervis.constants import CLASS_NAMES  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "01_saliency_maps.ipynb"
MOUTH = regions.REGION_NAMES.index("mouth")


@pytest.fixture(scope="module")
def tiny():
    return models.build("tiny", seed=0)


@pytest.fixture(scope="module")
def faces():
    images, labels, region_maps = synthetic.generate(6, seed=5)
    return images, labels, region_maps


def _linear(weights=None, name="linear"):
    """Pixels -> Dense(7, softmax): gradients and IG are known in closed form; no conv layer."""
    inputs = keras.Input((48, 48, 1), name="pixels")
    x = keras.layers.Flatten(name="flat")(inputs)
    outputs = keras.layers.Dense(7, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        model.get_layer("predictions").set_weights([weights.astype("float32"), np.zeros(7, "float32")])
    return model


def _mouth_model():
    """Class 0's logit is 0.02 x the mean grey of the template's mouth; every other logit is 0."""
    w = np.zeros((48 * 48, 7))
    mouth = (regions.template() == MOUTH).ravel()
    w[mouth, 0] = 0.02 / mouth.sum()
    return _linear(w, "mouth"), w[:, 0].reshape(48, 48)


def _third_party():
    """Someone else's 64x64 RGB classifier in [-1, 1], brought to 48x48 faces by models.adapt."""
    inputs = keras.Input((64, 64, 3), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="tp_conv1")(inputs)
    x = keras.layers.Conv2D(6, 3, strides=2, activation="relu", name="tp_conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="tp_gap")(x)
    outputs = keras.layers.Dense(7, name="tp_logits")(x)
    return models.adapt(keras.Model(inputs, outputs, name="third_party"), (64, 64, 3), (-1.0, 1.0), "logits")


# --------------------------------------------------------------------------- explain


@pytest.mark.parametrize("method", saliency.METHODS)
def test_explain_every_method_shapes_and_range(tiny, faces, method):
    images = faces[0]
    maps = saliency.explain(tiny, images, method, samples=3, steps=3, top_n=4, batch_size=4)
    assert maps.shape == (6, 48, 48) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0
    peaks = maps.reshape(6, -1).max(axis=1)
    assert np.allclose(peaks[peaks > 0], 1.0)
    # uint8 (n, 48, 48) and float (n, 48, 48, 1) give the same maps.
    again = saliency.explain(tiny, images[..., None].astype("float32"), method, samples=3, steps=3, top_n=4,
                             batch_size=4)
    np.testing.assert_allclose(maps, again, atol=1e-6)


@pytest.mark.parametrize("method", saliency.METHODS)
def test_explain_survives_the_onednn_trap(residual_model, faces, method):
    """Eager input gradients through the 1x1 stride-2 shortcut crash the process: graphs do not."""
    maps = saliency.explain(residual_model, faces[0], method, samples=2, steps=2, top_n=3)
    assert maps.shape == (6, 48, 48) and np.isfinite(maps).all()


@pytest.mark.parametrize("method", saliency.METHODS)
def test_explain_adapted_third_party_model(faces, method):
    adapted = _third_party()
    maps = saliency.explain(adapted, faces[0], method, samples=2, steps=2, normalize=False)
    assert maps.shape == (6, 48, 48) and np.isfinite(maps).all()
    if method == "gradient":  # the same gradient as written out by hand through the adapter
        logits = models.to_logits(adapted)
        x = tf.constant(faces[0][..., None].astype("float32"))

        @tf.function
        def manual(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                z = logits(x)
                score = tf.gather(z, tf.argmax(z, axis=1), axis=1, batch_dims=1)
            return tape.gradient(score, x)

        np.testing.assert_allclose(maps, np.abs(manual(x).numpy()[..., 0]), rtol=1e-4, atol=1e-7)


def test_cam_layer_inside_the_adapted_model(faces):
    adapted = _third_party()
    first = saliency.explain(adapted, faces[0], "gradcam", layer_name="tp_conv1")
    last = saliency.explain(adapted, faces[0], "gradcam")  # default: tp_conv2, the last conv layer
    assert first.shape == last.shape == (6, 48, 48)
    assert not np.allclose(first, last)


def test_gradient_matches_an_eager_tape_on_logits(tiny, faces):
    x = faces[0][..., None].astype("float32")
    classes = np.arange(6) % 7
    logits = models.to_logits(tiny)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:  # the tiny model has no 1x1 stride-2 conv: eager is safe here
        tape.watch(xt)
        score = tf.gather(logits(xt), classes, axis=1, batch_dims=1)
    expected = np.abs(tape.gradient(score, xt).numpy()[..., 0])
    got = saliency.explain(tiny, x, "gradient", class_idx=classes, normalize=False)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("method, visualizer", [
    ("gradcam", "tf_keras_vis.gradcam.Gradcam"),
    ("gradcam++", "tf_keras_vis.gradcam_plus_plus.GradcamPlusPlus"),
    ("layercam", "tf_keras_vis.layercam.Layercam"),
])
def test_cams_match_tf_keras_vis(tiny, faces, method, visualizer):
    """tf-keras-vis runs eagerly, so only on the tiny model, which has no crashing convolution."""
    import importlib

    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    module, name = visualizer.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    classes = [0, 1, 2, 3, 4, 5]
    x = faces[0][..., None].astype("float32")
    ref = cls(tiny, model_modifier=ReplaceToLinear(), clone=True)(
        CategoricalScore(classes), x, penultimate_layer="block2_act", expand_cam=False, normalize_cam=False,
        seek_penultimate_conv_layer=False)  # else tf-keras-vis steps back from an activation to its conv
    ref = np.maximum(tf.image.resize(np.asarray(ref)[..., None], (48, 48))[..., 0].numpy(), 0)
    # Each map scaled to a maximum of 1: Grad-CAM++ there multiplies by exp(score), one factor per map.
    ref = ref / np.where(ref.max(axis=(1, 2)) > 0, ref.max(axis=(1, 2)), 1)[:, None, None]
    got = saliency.explain(tiny, x, method, class_idx=np.array(classes))
    assert ref.max() > 0
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4)  # float32 order of operations


def test_scorecam_matches_tf_keras_vis_and_top_n(tiny, faces):
    from tf_keras_vis.scorecam import Scorecam
    from tf_keras_vis.utils.scores import CategoricalScore

    classes = [0, 1, 2, 3, 4, 5]
    x = faces[0][..., None].astype("float32")
    # tf-keras-vis applies a softmax to the outputs: on logits that gives the probabilities fervis uses.
    ref = Scorecam(models.to_logits(tiny))(CategoricalScore(classes), x, penultimate_layer="block2_act",
                                          expand_cam=False, normalize_cam=False, seek_penultimate_conv_layer=False)
    ref = tf.image.resize(np.asarray(ref)[..., None], (48, 48))[..., 0].numpy()
    got = saliency.explain(tiny, x, "scorecam", class_idx=np.array(classes))
    for a, b in zip(got, ref):
        if b.max() > 0:  # masks are resized differently (scipy zoom there): equal up to that
            assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95
    every = saliency.explain(tiny, x, "scorecam", class_idx=np.array(classes), top_n=16)  # 16 = all channels
    np.testing.assert_allclose(every, got, atol=1e-5)
    fewer = saliency.explain(tiny, x, "scorecam", class_idx=np.array(classes), top_n=2)
    assert not np.allclose(fewer, got)


def test_smoothgrad_noise_seed_and_step_cap(tiny, faces, monkeypatch):
    x = faces[0]
    plain = saliency.explain(tiny, x, "gradient")
    np.testing.assert_allclose(saliency.explain(tiny, x, "smoothgrad", noise=0.0, samples=3), plain, atol=1e-6)
    a = saliency.explain(tiny, x, "smoothgrad", samples=4, seed=1)
    np.testing.assert_array_equal(a, saliency.explain(tiny, x, "smoothgrad", samples=4, seed=1))
    assert not np.allclose(a, saliency.explain(tiny, x, "smoothgrad", samples=4, seed=2))
    monkeypatch.setenv("FERVIS_MAX_STEPS", "2")
    np.testing.assert_array_equal(saliency.explain(tiny, x, "smoothgrad", samples=2),
                                  saliency.explain(tiny, x, "smoothgrad", samples=9))


def test_integrated_gradients_closed_form_on_a_linear_model(faces):
    w = np.random.default_rng(0).normal(size=(48 * 48, 7))
    model = _linear(w)
    x = faces[0].astype("float32")
    classes = np.array([3, 0, 6, 2, 1, 5])
    got = saliency.explain(model, x, "integrated_gradients", class_idx=classes, steps=5, normalize=False)
    expected = np.abs(x * w[:, classes].T.reshape(6, 48, 48))  # (x - 0) * dlogit/dx
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
    grad = saliency.explain(model, x, "gradient", class_idx=classes, normalize=False)
    np.testing.assert_allclose(grad, np.abs(w[:, classes].T.reshape(6, 48, 48)), rtol=1e-5)


def test_class_idx_forms(tiny, faces):
    x = faces[0]
    predicted = saliency.predict(tiny, x).argmax(axis=1)
    np.testing.assert_array_equal(saliency.explain(tiny, x, "gradcam"),
                                  saliency.explain(tiny, x, "gradcam", class_idx=predicted))
    np.testing.assert_array_equal(saliency.explain(tiny, x, "gradcam", class_idx=np.int64(2)),
                                  saliency.explain(tiny, x, "gradcam", class_idx=np.full(6, 2)))
    assert not np.allclose(saliency.explain(tiny, x, "gradient", class_idx=0),
                           saliency.explain(tiny, x, "gradient", class_idx=1))


def test_one_graph_reused_across_batches_and_calls(faces):
    model = models.build("tiny", seed=1)
    for batch_size in (2, 4, 5):
        saliency.explain(model, faces[0], "gradient", batch_size=batch_size)
    saliency.explain(model, faces[0][:1], "gradient")
    assert saliency._gradient_graph(model).experimental_get_tracing_count() == 1


def test_predict_matches_the_model(tiny, faces):
    x = faces[0][..., None].astype("float32")
    np.testing.assert_allclose(saliency.predict(tiny, x, batch_size=4), tiny(x).numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "saliency"}, r"'method' parameter .* must be one of \['gradient', 'smoothgrad'"),
    ({"method": None}, r"'method' parameter"),
    ({"class_idx": 7}, r"'class_idx' parameter .* a class index in \[0, 7\), a name in \('angry'.* Got 7 instead"),
    ({"class_idx": -1}, r"'class_idx' parameter"),
    ({"class_idx": True}, r"'class_idx' parameter"),
    ({"class_idx": [0, 1]}, r"'class_idx' parameter .* a sequence of 6 of those.*Got \(2,\)"),
    ({"class_idx": np.array([0, 1, 2, 3, 4, 9])}, r"'class_idx' parameter .* Got 9 at position 5"),
    ({"class_idx": np.zeros(6, float)}, r"'class_idx' parameter .* Got 0\.0 at position 0"),
    ({"images": np.zeros((2, 32, 32))},
     r"'images' parameter .* shaped \(n, 48, 48, 1\) or \(n, 48, 48\).* \(2, 32, 32\)"),
    ({"images": np.zeros((48, 48))}, r"'images' parameter .* Got shape \(48, 48\)"),
    ({"images": np.zeros((2, 48, 48, 3))}, r"'images' parameter"),
    ({"images": np.zeros((2, 48, 48), bool)}, r"'images' parameter .* numeric array .* dtype bool"),
    ({"images": np.full((2, 48, 48), "a")}, r"'images' parameter .* numeric array"),
    ({"images": np.full((2, 48, 48), np.nan)}, r"'images' parameter .* finite"),
    ({"batch_size": 0}, r"'batch_size' parameter .* int >= 1"),
    ({"method": "smoothgrad", "samples": 0}, r"'samples' parameter"),
    ({"method": "smoothgrad", "noise": -0.1}, r"'noise' parameter"),
    ({"method": "integrated_gradients", "steps": 1.5}, r"'steps' parameter"),
    ({"method": "scorecam", "top_n": 0}, r"'top_n' parameter"),
    ({"method": "gradcam", "layer_name": "nope"}, r"'layer_name' parameter .*\['block1_conv', 'block2_conv'\].*'nope'"),
    ({"method": "gradcam", "layer_name": "predictions"}, r"'layer_name' parameter .* not a \(n, h, w, channels\)"),
    ({"method": "layercam", "layer_name": 3}, r"'layer_name' parameter"),
    ({"method": "gradcam", "layer_name": []}, r"'layer_name' parameter .* a list of distinct ones. Got \[\]"),
    ({"method": "gradcam", "layer_name": ["block2_conv", "block2_conv"]}, r"'layer_name' parameter .* distinct"),
    ({"method": "scorecam", "layer_name": ["block2_conv", "nope"]}, r"'layer_name' parameter .* Got 'nope' .*no such"),
])
def test_explain_bad_input(tiny, faces, kwargs, match):
    args = {"images": faces[0], "method": "gradient", **kwargs}
    with pytest.raises(ValueError, match=match):
        saliency.explain(tiny, **args)


@pytest.mark.parametrize("method", saliency.CAM_METHODS)
def test_cam_on_a_model_without_conv_layers(faces, method):
    with pytest.raises(ValueError, match=r"'method' parameter .* needs a convolution layer.*'gradient'"):
        saliency.explain(_linear(), faces[0], method)


def test_explain_bad_model():
    with pytest.raises(ValueError, match=r"'model' parameter .* keras.Model"):
        saliency.explain("model.keras", np.zeros((1, 48, 48)))


def test_explain_no_images(tiny):
    assert saliency.explain(tiny, np.zeros((0, 48, 48)), "smoothgrad").shape == (0, 48, 48)


# --------------------------------------------------------------------------- galleries and regions


@pytest.mark.parametrize("labels, probs, expected", [
    ([0, 0, 1], [[.9, .1], [.6, .4], [.7, .3]], [0, 2]),  # class 1 never right: its likeliest face
    ([1, 1], [[.2, .8], [.1, .9]], [-1, 1]),  # no face of class 0
    ([0, 0], [[.4, .6], [.8, .2]], [1, -1]),
])
def test_pick_examples(labels, probs, expected):
    np.testing.assert_array_equal(saliency.pick_examples(np.array(labels), np.array(probs)), expected)


def test_class_mean_maps():
    ramp = np.arange(16.0).reshape(4, 4)
    maps = np.stack([ramp * v for v in (1.0, 3.0, 5.0, 7.0)] + [np.zeros((4, 4)), np.full((4, 4), np.nan)])
    means, counts, excluded = saliency.class_mean_maps(maps, np.array([0, 0, 1, 1, 0, 1]),
                                                       np.array([0, 0, 1, 0, 0, 0]), num_classes=3)
    assert means.shape == (2, 3, 4, 4)
    assert means[0, 0, 0, 1] == 2.0 and means[0, 1, 0, 1] == 5.0 and means[1, 1, 0, 1] == 7.0
    assert np.isnan(means[1, 0]).all() and np.isnan(means[0, 2]).all()
    np.testing.assert_array_equal(counts, [[2, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(excluded, [[1, 0, 0], [0, 1, 0]])  # the empty and the NaN map, counted


def test_map_problems_and_note():
    maps = np.stack([np.zeros((4, 4)), np.eye(4), np.full((4, 4), 0.3), np.full((4, 4), np.inf), np.eye(4) * 1e-30])
    assert saliency.map_problems(maps).tolist() == ["empty", "", "constant", "non-finite", ""]
    note = saliency.degenerate_note(maps, "Grad-CAM on block2_act")
    assert note.startswith("Warning: 3 of 5 Grad-CAM on block2_act maps are degenerate (1 empty, 1 constant, "
                           "1 non-finite)")
    assert saliency.degenerate_note(maps[1:2]) == ""
    with pytest.raises(ValueError, match=r"'maps' parameter .* \(n, h, w\)"):
        saliency.map_problems(np.array(["a"]))


def test_region_shares_and_concentration():
    template = regions.template()
    on_mouth = (template == MOUTH).astype(float)
    maps = np.stack([on_mouth, np.ones((48, 48)), on_mouth])
    labels = np.array([3, 3, 0])
    shares = saliency.region_shares(maps, template, labels, regions.REGION_NAMES)
    assert list(shares.index) == ["angry", "happy", "all"]
    assert "occluder" not in shares.columns  # absent from every face
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    area = on_mouth.mean()
    assert shares.loc["angry", "mouth"] == pytest.approx(1.0)
    assert shares.loc["happy", "mouth"] == pytest.approx(1.0)  # the constant map is left out, and counted
    assert shares.attrs["n"].to_dict() == {"angry": 1, "happy": 1, "all": 2}
    assert shares.attrs["excluded"].to_dict() == {"angry": 0, "happy": 1, "all": 1}
    dense = saliency.region_shares(maps, template, labels, regions.REGION_NAMES, normalize="area")
    assert dense.loc["angry", "mouth"] == pytest.approx(1.0 / area)
    assert dense.loc["angry", "eyes"] == 0.0
    # Two complementary checkerboards: together exactly as much mass per region as its area.
    board = (np.indices((48, 48)).sum(axis=0) % 2).astype(float)
    uniform = saliency.region_shares(np.stack([board, 1 - board] * 10), template, np.full(20, 1),
                                     regions.REGION_NAMES, normalize="area")
    np.testing.assert_allclose(uniform.to_numpy(), 1.0)
    low, high = uniform.attrs["low"].to_numpy(), uniform.attrs["high"].to_numpy()
    assert np.isfinite(low).all() and (low <= 1.0 + 1e-9).all() and (high >= 1.0 - 1e-9).all()


def test_region_share_intervals_cover_and_narrow():
    template = regions.template()
    rng = np.random.default_rng(0)
    maps = rng.random((200, 48, 48)) * (1 + 3 * (template == MOUTH))  # 4x denser on the mouth, noisy
    labels = np.repeat([3, 4], 100)
    dense = saliency.region_shares(maps, template, labels, regions.REGION_NAMES, normalize="area")
    low, high = dense.attrs["low"], dense.attrs["high"]
    assert (low.loc[["happy", "sad"], "mouth"] > 1).all()  # denser than its area, beyond chance
    assert (low.to_numpy() <= dense.to_numpy() + 1e-12).all() and (dense.to_numpy() <= high.to_numpy() + 1e-12).all()
    assert ((high - low).loc["all"] < (high - low).loc["happy"]).all()  # more faces, narrower
    one = saliency.region_shares(maps[:1], template, labels[:1], regions.REGION_NAMES)
    assert one.attrs["low"].isna().all().all()  # one face: no interval
    broken = np.stack([maps[0], np.full((48, 48), -np.inf), np.full((48, 48), np.nan)])
    table = saliency.region_shares(broken, template, np.array([3, 3, 3]), regions.REGION_NAMES)
    assert table.attrs["n"]["happy"] == 1 and table.attrs["excluded"]["happy"] == 2  # left out, not refused
    assert np.isfinite(table.to_numpy()).all()


@pytest.mark.parametrize("kwargs, match", [
    ({"normalize": "size"}, r"'normalize' parameter .* \[None, 'area'\]"),
    ({"maps": -np.ones((2, 48, 48))}, r"'maps' parameter .* non-negative"),
    ({"regions": np.full((48, 48), 12)}, r"'regions' parameter .* ids in \[0, 9\)"),
    ({"regions": np.zeros((3, 48, 48), int)}, r"'regions' parameter"),
    ({"labels": np.array([0, 7])}, r"'labels' parameter"),
    ({"n_boot": 0}, r"'n_boot' parameter .* int >= 1"),
])
def test_region_shares_bad_input(kwargs, match):
    args = {"maps": np.ones((2, 48, 48)), "regions": regions.template(), "labels": np.array([0, 1]),
            "region_names": regions.REGION_NAMES, **kwargs}
    with pytest.raises(ValueError, match=match):
        saliency.region_shares(**args)


def test_region_functions_take_a_dataset_for_its_regions(synthetic_small):
    from fervis.dataset import Dataset

    faces = synthetic_small.take(np.arange(12))
    maps = np.random.default_rng(2).uniform(0, 1, (12, 48, 48))
    by_dataset = saliency.region_shares(maps, faces, faces.labels, faces.region_names)
    by_array = saliency.region_shares(maps, faces.regions, faces.labels, faces.region_names)
    pd.testing.assert_frame_equal(by_dataset, by_array)
    plain = Dataset(faces.images, faces.labels, faces.splits)  # no regions: the template for every face
    by_template = saliency.region_shares(maps, plain, plain.labels, regions.REGION_NAMES)
    pd.testing.assert_frame_equal(by_template, saliency.region_shares(maps, regions.template(), plain.labels,
                                                                      regions.REGION_NAMES))
    with pytest.raises(ValueError, match=r"'regions' parameter .* \(3, 48, 48\) maps"):
        saliency.region_shares(maps[:3], faces, faces.labels[:3], faces.region_names)  # 12 faces for 3 maps


def test_cue_check_counts_cue_regions():
    template = regions.template()
    mouth = (template == MOUTH).astype(float)
    board = (np.indices((48, 48)).sum(axis=0) % 2).astype(float)
    cues = saliency.cue_check(np.stack([mouth, board, 1 - board, np.zeros((48, 48))]), template,
                              np.array([3, 4, 4, 4]), regions.REGION_NAMES,
                              {"happy": ("mouth", "cheeks"), "sad": ("brows", "mouth")})
    cheeks = (template == regions.REGION_NAMES.index("cheeks")).mean()
    assert cues.loc["happy", "cue_share"] == pytest.approx(1.0)
    assert cues.loc["happy", "area_share"] == pytest.approx(mouth.mean() + cheeks)
    assert cues.loc["sad", "ratio"] == pytest.approx(1.0)  # uniform on average: as much as the area
    assert cues.loc["sad", "faces"] == 2 and cues.loc["sad", "excluded"] == 1  # the empty map
    with pytest.raises(ValueError, match=r"'cue_regions' parameter .* \['teeth'\]"):
        saliency.cue_check(np.ones((1, 48, 48)), template, np.array([3]), regions.REGION_NAMES, {"happy": ("teeth",)})


def test_occlusion_finds_the_only_region_the_model_reads(faces):
    model, _ = _mouth_model()
    images = faces[0]
    table = saliency.occlusion_check(model, images, regions.template(), np.zeros(6, int), regions.REGION_NAMES)
    assert list(table.index) == ["angry"]
    row = table.loc["angry"]
    assert abs(row["mouth"]) > 1e-3
    np.testing.assert_allclose(row.drop("mouth").to_numpy(), 0.0, atol=1e-6)
    # Intervals simultaneous over the row's regions are wider than each region's own.
    k = table.shape[1]
    assert table.attrs["family_level"] == pytest.approx(1 - 0.05 / k)
    assert table.attrs["family_low"].loc["angry", "mouth"] <= table.attrs["low"].loc["angry", "mouth"]
    assert table.attrs["family_high"].loc["angry", "mouth"] >= table.attrs["high"].loc["angry", "mouth"]


def test_occlusion_on_synthetic_regions_and_residual_model(residual_model, faces):
    images, labels, region_maps = faces
    table = saliency.occlusion_check(residual_model, images, region_maps, labels, synthetic.REGION_NAMES)
    assert set(table.columns) <= set(synthetic.REGION_NAMES) and np.isfinite(table.to_numpy()).any()


# --------------------------------------------------------------------------- deletion / insertion


def test_deletion_insertion_oracle_beats_random():
    model, weights = _mouth_model()
    # Dark faces with a bright mouth: blurring dims the mouth, so insertion has something to restore.
    x = np.random.default_rng(1).uniform(100, 255, (8, 48, 48)) * (regions.template() == MOUTH)
    oracle = np.broadcast_to(weights, (8, 48, 48))
    rand = np.random.default_rng(2).random((8, 48, 48))
    good = saliency.deletion_insertion(model, x, oracle, class_idx=0, steps=8)
    bad = saliency.deletion_insertion(model, x, rand, class_idx=0, steps=8)
    assert good["deletion"].shape == (8, 9) and good["fractions"][[0, -1]].tolist() == [0.0, 1.0]
    p = saliency.predict(model, x)[:, 0]
    np.testing.assert_allclose(good["deletion"][:, 0], p, rtol=1e-5)  # nothing removed yet
    flat = np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape)  # everything deleted: the mean grey
    np.testing.assert_allclose(good["deletion"][:, -1], saliency.predict(model, flat)[:, 0], rtol=1e-5)
    assert good["deletion_auc"].mean() < bad["deletion_auc"].mean()
    assert good["insertion_auc"].mean() > bad["insertion_auc"].mean()
    # faithfulness' paired test: face by face against the random map on the same face.
    assert saliency._paired_p(good["deletion_auc"], bad["deletion_auc"], "less") < 0.05
    assert saliency._paired_p(good["insertion_auc"], bad["insertion_auc"], "greater") < 0.05
    assert saliency._paired_p(good["deletion_auc"], bad["deletion_auc"], "greater") > 0.5
    assert np.isnan(saliency._paired_p(good["deletion_auc"], good["deletion_auc"], "less"))  # no difference at all


def test_deletion_insertion_bad_maps(tiny, faces):
    with pytest.raises(ValueError, match=r"'maps' parameter .* \(6, 48, 48\)"):
        saliency.deletion_insertion(tiny, faces[0], np.ones((5, 48, 48)))


def test_faithfulness_table_on_the_residual_model(residual_model, faces):
    result = saliency.faithfulness(residual_model, faces[0], ["gradient", "gradcam", "scorecam"], steps=4,
                                   explain_kwargs={"scorecam": {"top_n": 2}})
    assert list(result.table.index) == ["gradient", "gradcam", "scorecam", "random"]
    assert {"deletion_auc", "insertion_auc", "score", "beats_random"} <= set(result.table.columns)
    aucs = result.table[["deletion_auc", "insertion_auc"]].to_numpy()
    assert ((aucs >= 0) & (aucs <= 1)).all()
    assert result.curves["gradient"]["insertion"].shape == (6, 5)
    with pytest.raises(ValueError, match=r"'methods' parameter"):
        saliency.faithfulness(residual_model, faces[0], "gradient")


# --------------------------------------------------------------------------- randomisation


def test_randomization_check_cascades_and_restores(faces):
    model = models.build("tiny", seed=2)
    before = [w.copy() for w in model.get_weights()]
    maps = saliency.explain(model, faces[0], "gradient")
    result = saliency.randomization_check(model, faces[0], ["gradient", "gradcam"])
    assert result.stages == ["trained", "predictions", "block2_conv", "block1_conv"]
    assert result.maps["gradient"].shape == (4, 6, 48, 48)
    np.testing.assert_array_equal(result.maps["gradient"][0], maps)
    np.testing.assert_allclose(result.correlation.iloc[0], 1.0)
    assert (result.correlation.iloc[1:] < 0.999).all().all()  # re-initialised layers change the maps
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_randomization_of_an_adapted_model_leaves_fervis_plumbing_alone(faces):
    """Reordered classes add fervis's "class_order" Dense: a permutation, not a trained weight to randomise."""
    inner = models.build("tiny", seed=2)
    adapted = models.adapt(inner, input_shape=(48, 48, 1), scale="0-255", class_order=sorted(CLASS_NAMES))
    assert "class_order" in models.layer_paths(adapted)
    result = saliency.randomization_check(adapted, faces[0][:3], ["gradient"])
    assert result.stages == ["trained", "predictions", "block2_conv", "block1_conv"]  # the wrapped model's own
    np.testing.assert_array_equal(models.find_layer(adapted, "class_order").get_weights()[0].sum(axis=0), np.ones(7))
    # Still told apart after the usual freeze-then-unfreeze (Keras sets every inner layer trainable again)...
    adapted.trainable = False
    adapted.trainable = True
    assert [layer.name for layer in models.adapter_layers(adapted)] == ["class_order", "predictions"]
    # ...and in an ensemble of adapted members (renamed "member_a", "member_b").
    twin = models.adapt(models.build("tiny", seed=4), input_shape=(48, 48, 1), scale="0-255",
                        class_order=sorted(CLASS_NAMES))
    both = saliency.randomization_check(models.ensemble([adapted, twin]), faces[0][:3], ["gradient"])
    assert not any("class_order" in stage for stage in both.stages) and len(both.stages) == 1 + 2 * 3


def test_randomization_restores_weights_on_error(faces, monkeypatch):
    model = models.build("tiny", seed=3)
    before = [w.copy() for w in model.get_weights()]
    calls = []
    real = saliency.explain

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("interrupted")
        return real(*args, **kwargs)

    monkeypatch.setattr(saliency, "explain", failing)
    with pytest.raises(RuntimeError):
        saliency.randomization_check(model, faces[0], ["gradient"])
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_randomization_on_the_residual_model(residual_model, faces):
    result = saliency.randomization_check(residual_model, faces[0][:3], ["smoothgrad", "layercam"],
                                          explain_kwargs={"smoothgrad": {"samples": 2}})
    assert result.stages[0] == "trained" and result.stages[1] == "predictions" and len(result.stages) == 6


# --------------------------------------------------------------------------- ground truth


def test_quick_model_looks_at_the_cues():
    """Ground truth on synthetic faces, with the default quick model (training.model_for: the
    packaged copy for the embedded faces, else trained once and cached in FERVIS_HOME; the tiny
    fixture is too weak to look anywhere in particular): Grad-CAM and SmoothGrad put clearly
    more than the area share of their mass on each class's cue regions."""
    from fervis import data, training

    dataset = data.load("synthetic")
    model = training.model_for(dataset, "auto")
    test = dataset.subset("PublicTest").sample(210, stratify=True, seed=0)
    for method in ("gradcam", "smoothgrad"):
        maps = saliency.explain(model, test.images, method, class_idx=test.labels, samples=8)
        cues = saliency.cue_check(maps, test.regions, test.labels, test.region_names, synthetic.CUE_REGIONS)
        assert len(cues) == 7
        assert (cues["ratio"] > 1.25).all(), f"{method}:\n{cues}"


# --------------------------------------------------------------------------- describe, plots, widget


def _occlusion_table(drops, n):
    """An occlusion table as occlusion_check gives it, with its intervals: drop +- 0.05."""
    table = pd.DataFrame(drops).T
    table.attrs = {"low": table - 0.05, "high": table + 0.05, "n": table * 0 + n, "level": 0.95}
    return table


def test_describe_states_only_what_the_intervals_hold():
    template = regions.template()
    mouth = (template == MOUTH).astype(float)
    rng = np.random.default_rng(0)
    maps = np.concatenate([mouth * (1 + rng.random((12, 48, 48))), rng.random((9, 48, 48)) + mouth,
                           np.zeros((2, 48, 48))])
    labels = np.array([3] * 12 + [1] * 9 + [3] * 2)
    shares = saliency.region_shares(maps, template, labels, regions.REGION_NAMES)
    dense = saliency.region_shares(maps, template, labels, regions.REGION_NAMES, normalize="area")
    lines = saliency.describe(shares, dense, method="Grad-CAM on block2_act")
    assert lines[0] == "2 of 23 Grad-CAM on block2_act maps are empty, constant or non-finite and left out of the " \
                       "region figures."
    k = dense.shape[1]
    assert lines[1] == (f"Each 95 % interval below holds for all {k} regions of its class at once (Bonferroni), "
                        "since the regions named were picked among them.")
    lines = lines[:1] + lines[2:]
    assert lines[1] == "For disgust: too few faces (n = 9) to tell where Grad-CAM on block2_act puts the mass."
    low, high = dense.attrs["family_low"].loc["happy", "mouth"], dense.attrs["family_high"].loc["happy", "mouth"]
    assert low > 1
    assert dense.attrs["family_level"] == pytest.approx(1 - 0.05 / k)
    assert low <= dense.attrs["low"].loc["happy", "mouth"] and high >= dense.attrs["high"].loc["happy", "mouth"]
    assert lines[2] == (f"For happy (n = 12), Grad-CAM on block2_act puts 100 % of the mass on the mouth "
                        f"({dense.loc['happy', 'mouth']:.1f}x its area, 95 % interval {low:.1f}-{high:.1f}).")
    # The claim rests on the row's simultaneous interval: one region's own interval above 1 is not enough
    # when the sentence picked it among k regions.
    doubtful = dense.copy()
    doubtful.attrs = {key: (v.copy() if hasattr(v, "copy") else v) for key, v in dense.attrs.items()}
    doubtful.attrs["family_low"].loc["happy", "mouth"] = 0.9
    assert doubtful.attrs["low"].loc["happy", "mouth"] > 1
    assert saliency.describe(shares, doubtful, method="gradcam")[3] == (
        "For happy (n = 12), no region holds more of gradcam's mass than its share of the area beyond chance.")
    occlusion = _occlusion_table({"happy": {"mouth": 0.2, "eyes": 0.3, "nose": 0.01}}, 12)
    occlusion.attrs["n"].loc["happy", "eyes"] = 9  # the larger drop rests on too few faces
    lines = saliency.describe(shares, dense, occlusion=occlusion, method="gradcam")
    assert lines[-1].endswith("; the largest drop in p(happy) comes from greying out the mouth: 20.0 points "
                              "(95 % interval 15.0-25.0, n = 12).")
    occlusion = _occlusion_table({"happy": {"mouth": 0.02, "eyes": 0.01}}, 12)  # intervals include 0
    lines = saliency.describe(occlusion=occlusion)
    assert lines == ["For happy, greying out no single region lowers p(happy) beyond chance."]
    lines = saliency.describe(occlusion=_occlusion_table({"disgust": {"occluder": 0.2}}, 9))
    assert lines == ["For disgust, too few faces (n = 9) to tell what greying out a region does."]


def test_describe_faithfulness_and_randomization_sentences():
    faith = saliency.Faithfulness(
        table=pd.DataFrame({"deletion_auc": [0.2, 0.3, 0.35], "insertion_auc": [0.7, 0.6, 0.5],
                            "score": [0.5, 0.3, 0.15],
                            "n": [40, 40, 40], "degenerate": [0, 0, 0], "deletion_p": [0.001, 0.2, np.nan],
                            "insertion_p": [0.001, 0.01, np.nan], "beats_random": [True, False, False]},
                           index=["gradcam", "gradient", "random"]),
        fractions=np.linspace(0, 1, 3), curves={})
    line, = saliency.describe(faith=faith)
    assert line.startswith("Deletion/insertion on 40 faces: 1 of 2 methods beat random maps on both curves "
                           "(paired Wilcoxon test, p < 0.05 on each;")
    assert line.endswith("the highest score of those is gradcam's, not tested against the others (deletion 0.200, "
                         "insertion 0.700).")
    few = dataclasses.replace(faith, table=faith.table.assign(n=8))
    assert saliency.describe(faith=few) == [
        "Deletion/insertion: too few faces (n = 8) to tell whether the maps beat random ones."]
    check = saliency.Randomization(stages=["trained", "dense"], maps={},
                                   correlation=pd.DataFrame({"gradcam": [1.0, 0.1], "layercam": [np.nan, np.nan]}),
                                   undefined=pd.DataFrame({"gradcam": [2, 3], "layercam": [12, 12]}), n=12)
    line, = saliency.describe(randomization=check)
    assert "gradcam 0.10 (3 of 12 faces undefined: empty or constant maps, left out)" in line
    assert "layercam undefined (every map empty or constant)" in line and "nan" not in line


def test_plots_mark_degenerate_maps(faces):
    images = faces[0][:2]
    maps = {"gradcam": np.stack([np.zeros((48, 48)), np.eye(48)])}
    fig = plots.saliency_gallery(images, maps, problems={"gradcam": saliency.map_problems(maps["gradcam"])})
    marks = [t.get_text() for ax in fig.axes for t in ax.texts if t.get_bbox_patch() is not None]
    assert marks == ["empty map", "empty map"]  # the bare map and the overlay of face 0; face 1 is fine
    means, counts, excluded = saliency.class_mean_maps(maps["gradcam"], np.array([0, 0]), np.array([0, 0]))
    fig = plots.class_mean_grid(means, counts, excluded=excluded, title="Grad-CAM on block2_act")
    assert fig.axes[0].get_title() == "angry (n=1, 1 left out)" and fig._suptitle.get_text() == "Grad-CAM on block2_act"
    check = saliency.Randomization(stages=["trained"], maps={"gradcam": np.zeros((1, 2, 48, 48))},
                                   correlation=pd.DataFrame({"gradcam": [np.nan]}), undefined=None, n=2)
    fig = plots.randomization_strip(check, "gradcam", faces=1, label="Grad-CAM on block2_act")
    assert fig.axes[0].get_title() == "trained\nρ undefined"
    assert fig._suptitle.get_text().startswith("Grad-CAM on block2_act: layers re-initialised")


def test_method_label_and_per_class_exclusion(tiny):
    assert saliency.method_label(tiny, "smoothgrad") == "SmoothGrad"
    assert saliency.method_label(tiny, "scorecam") == "Score-CAM on block2_act"
    assert saliency.method_label(tiny, "gradcam", layer_name="block1_conv") == "Grad-CAM on block1_conv"
    with pytest.raises(ValueError, match=r"'method' parameter of fervis.saliency.method_label .* Got 'cam'"):
        saliency.method_label(tiny, "cam")
    labels = np.array([0, 0, 0, 1, 1])
    picked = saliency.per_class(labels, 5, num_classes=2, exclude=np.array([True, False, False, False, True]))
    assert picked.tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match=r"'exclude' parameter .* bool array shaped \(5,\)"):
        saliency.per_class(labels, 2, num_classes=2, exclude=np.zeros(4, bool))


def test_plots(faces):
    images, labels, region_maps = faces
    maps = {"gradient": np.random.default_rng(0).random((3, 48, 48)), "gradcam": np.ones((3, 48, 48))}
    fig = plots.saliency_gallery(images[:3], maps, titles=["a", "b", "c"])
    assert len(fig.axes) == 3 * 4 and fig.axes[0].get_title() == "a"
    fig = plots.saliency_panel(images[0], maps["gradient"][0], title="t")
    assert len(fig.axes) == 3 and fig._suptitle.get_text() == "t"
    means = np.random.default_rng(0).random((2, 7, 48, 48))
    means[1, 1] = np.nan
    fig = plots.class_mean_grid(means, np.ones((2, 7), int))
    assert fig.axes[0].get_title() == "angry (n=1)" and fig.axes[8].get_title() == "disgust (none)"
    table = saliency.region_shares(maps["gradient"], region_maps[:3], labels[:3], synthetic.REGION_NAMES)
    ax = plots.table_heatmap(table, title="shares")
    assert ax.get_title() == "shares" and len(ax.texts) == np.isfinite(table.to_numpy()).sum()
    ax = plots.region_template(images.mean(axis=0), regions.template(), regions.REGION_NAMES)
    assert len(ax.get_legend().get_texts()) == 8  # every region but the occluder
    cues = saliency.cue_check(maps["gradient"], region_maps[:3], labels[:3], synthetic.REGION_NAMES,
                              synthetic.CUE_REGIONS)
    ax = plots.cue_bars({"gradient": cues})
    assert len(ax.patches) == 2 * len(cues)


def test_result_plots(tiny, faces):
    result = saliency.faithfulness(tiny, faces[0], ["gradient"], steps=3)
    fig = plots.faithfulness_curves(result)
    assert [len(ax.lines) for ax in fig.axes] == [2, 2]
    check = saliency.randomization_check(tiny, faces[0], ["gradcam"])
    fig = plots.randomization_strip(check, "gradcam", images=faces[0], faces=2)
    assert len(fig.axes) == 2 * (1 + len(check.stages))
    assert fig.axes[1].get_title().startswith("trained\nρ 1.00")


def test_saliency_explorer_redraws(tiny, faces):
    from fervis import widgets

    box = widgets.saliency_explorer(tiny, faces[0], labels=faces[1], methods=["gradient", "smoothgrad"], samples=2)
    assert box.noise.disabled and "#0" in box.figure._suptitle.get_text()
    box.face.value = 3
    assert "#3" in box.figure._suptitle.get_text()
    box.target.value = 5
    assert box.figure._suptitle.get_text().endswith("map for surprise")
    box.method.value = "smoothgrad"
    assert not box.noise.disabled and box.figure._suptitle.get_text().startswith("SmoothGrad")  # method_label
    with pytest.raises(ValueError, match=r"'methods' parameter .*'layercam', 'lime'\]. Got \['nope'\]"):
        widgets.saliency_explorer(tiny, faces[0], methods=["nope"])
    assert "lime" not in widgets.saliency_explorer(tiny, faces[0], methods=None).method.options  # not unasked
    box = widgets.saliency_explorer(tiny, faces[0], methods=["gradient", "lime"])  # asked for: LIME's maps too
    box.method.value = "lime"
    assert box.noise.disabled and box.figure._suptitle.get_text().startswith("LIME: #0")


# --------------------------------------------------------------------------- LIME and options behind explain


def _quadrant(class_idx=2):
    """Class ``class_idx``'s logit is the mean grey of the top-left 18x18 corner (a linear model)."""
    w = np.zeros((48, 48, 7))
    w[:18, :18, class_idx] = 0.05 / (18 * 18)
    return _linear(w.reshape(-1, 7), "quadrant")


def test_lime_behind_explain_shape_range_and_seed(tiny, faces):
    images = faces[0]
    maps = saliency.explain(tiny, images, "lime", options={"samples": 60, "seed": 1})
    assert maps.shape == (6, 48, 48) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0  # the evidence for the class only
    peaks = maps.reshape(6, -1).max(axis=1)
    assert np.allclose(peaks[peaks > 0], 1.0)  # normalised like the other methods
    np.testing.assert_array_equal(maps, saliency.explain(tiny, images, "lime", options={"samples": 60, "seed": 1}))
    assert not np.array_equal(maps, saliency.explain(tiny, images, "lime", options={"samples": 60, "seed": 2}))
    # The positive map is the signed weights clipped at 0 and scaled; the same engine as labels.lime_explain.
    from fervis import labels

    signed = saliency.explain(tiny, images, "lime", normalize=False, options={"samples": 60, "seed": 1,
                                                                                "sign": "signed"})
    assert signed.min() < 0
    np.testing.assert_array_equal(signed, labels.lime_explain(tiny, images, num_samples=60, seed=1, batch_size=64))
    positive = np.clip(signed, 0, None)
    peak = positive.reshape(6, -1).max(axis=1)
    np.testing.assert_allclose(maps, positive / np.where(peak > 0, peak, 1)[:, None, None], rtol=1e-6)
    # A face's map does not depend on the faces explained with it; uint8 and float pixels agree.
    alone = saliency.explain(tiny, images[2:3, ..., None].astype("float32"), "lime", options={"samples": 60, "seed": 1})
    np.testing.assert_array_equal(alone[0], maps[2])
    assert saliency.explain(tiny, np.zeros((0, 48, 48)), "lime").shape == (0, 48, 48)


def test_lime_finds_the_pixels_the_model_reads_and_its_maps_feed_every_number(faces):
    model = _quadrant(class_idx=0)
    images, labels_, region_maps = faces
    blocks = np.broadcast_to(np.kron(np.arange(64).reshape(8, 8), np.ones((6, 6), int)), images.shape)
    maps = saliency.explain(model, images, "lime", class_idx=0, options={"samples": 300, "segments": blocks,
                                                                          "hide_color": 0})
    corner = maps[:, :18, :18].sum(axis=(1, 2)) / maps.sum(axis=(1, 2))
    assert (corner > 0.8).all(), corner  # the corner is 14 % of the face
    assert (saliency.map_problems(maps) == "").all()
    # Region tables, deletion/insertion and faithfulness take LIME maps like any other.
    table = saliency.region_shares(maps, region_maps, labels_, synthetic.REGION_NAMES, n_boot=50)
    assert np.isfinite(table.loc["all"].to_numpy()).all() and table.loc["all"].sum() == pytest.approx(1.0)
    result = saliency.faithfulness(model, images, ["gradient", "lime"], class_idx=0, steps=4,
                                   explain_kwargs={"lime": {"options": {"samples": 300, "segments": blocks,
                                                                        "hide_color": 0}}})
    assert list(result.table.index) == ["gradient", "lime", "random"]
    assert result.table.loc["lime", "n"] == 6 and np.isfinite(result.table.loc["lime", "deletion_auc"])
    assert saliency.method_label(model, "lime") == "LIME"


def test_lime_on_the_residual_model_and_other_channel_counts(residual_model, faces):
    maps = saliency.explain(residual_model, faces[0][:2], "lime", options={"samples": 40})
    assert maps.shape == (2, 48, 48) and np.isfinite(maps).all()
    rgb_in = keras.Input((32, 32, 3))
    rgb = keras.Model(rgb_in, keras.layers.Dense(7, activation="softmax")(keras.layers.Flatten()(rgb_in)))
    x = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    maps = saliency.explain(rgb, x, "lime", options={"samples": 40, "num_segments": 20})
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all()
    two_in = keras.Input((16, 16, 2))
    two = keras.Model(two_in, keras.layers.Dense(7, activation="softmax")(keras.layers.Flatten()(two_in)))
    with pytest.raises(ValueError, match=r"'method' parameter .* 'lime', which perturbs grey or RGB images.*2 "
                                         r"channels"):
        saliency.explain(two, np.zeros((1, 16, 16, 2)), "lime")


@pytest.mark.parametrize("method, options, match", [
    ("smoothgrad", {"steps": 3}, r"'options' parameter .* holds 'steps', which method 'smoothgrad' does not take. "
                                 r"Its options are \['samples', 'noise', 'seed'\]"),
    ("gradient", {"samples": 3}, r"holds 'samples', which method 'gradient' does not take. Its options are \[\]"),
    ("lime", {"num_samples": 10}, r"holds 'num_samples', which method 'lime' does not take. Its options are "
                                  r"\['samples', 'num_segments', 'segments', 'seed', 'kernel_width', 'hide_color', "
                                  r"'sign'\]"),
    ("gradcam", ["layer_name"], r"'options' parameter .* must be a mapping"),
    ("lime", {"samples": 1}, r"'samples' parameter of fervis.saliency.explain \(method 'lime'\) must be an int >= 2"),
    ("lime", {"sign": "both"}, r"'sign' parameter .* \['positive', 'signed'\]. Got 'both'"),
    ("lime", {"kernel_width": 0}, r"'kernel_width' parameter"),
    ("lime", {"num_segments": 1}, r"'num_segments' parameter .* \[2, 2304\]"),
    ("lime", {"segments": np.zeros((6, 48, 48))}, r"'segments' parameter .* integer superpixel ids shaped "
                                                  r"\(6, 48, 48\)"),
    ("smoothgrad", {"noise": 11}, r"'noise' parameter of fervis.saliency.explain \(method 'smoothgrad'\)"),
    ("smoothgrad", {"seed": 1.5}, r"'seed' parameter of fervis.saliency.explain \(method 'smoothgrad'\) must be an "
                                  r"int. Got 1.5"),
    ("scorecam", {"top_n": 0}, r"'top_n' parameter"),
    ("gradcam", {"layer_name": "nope"}, r"'layer_name' parameter .*'nope'"),
])
def test_explain_refuses_unknown_or_bad_options(tiny, faces, method, options, match):
    with pytest.raises(ValueError, match=match):
        saliency.explain(tiny, faces[0], method, options=options)


def test_options_and_the_old_keywords_give_the_same_maps(tiny, faces):
    x = faces[0]
    for method, kwargs in [("smoothgrad", {"samples": 3, "noise": 0.3, "seed": 4}),
                           ("integrated_gradients", {"steps": 5}),
                           ("scorecam", {"top_n": 3, "layer_name": "block1_conv"}),
                           ("gradcam", {"layer_name": "block1_conv"}),
                           ("lime", {"samples": 30, "seed": 2})]:
        np.testing.assert_array_equal(saliency.explain(tiny, x, method, **kwargs),
                                      saliency.explain(tiny, x, method, options=kwargs))
    # The defaults are the table's; a keyword a method does not take is ignored, as it always was.
    np.testing.assert_array_equal(saliency.explain(tiny, x, "smoothgrad"),
                                  saliency.explain(tiny, x, "smoothgrad", options=dict(
                                      saliency.METHOD_OPTIONS["smoothgrad"])))
    np.testing.assert_array_equal(saliency.explain(tiny, x, "gradient", samples=3, top_n=2),
                                  saliency.explain(tiny, x, "gradient"))
    np.testing.assert_array_equal(saliency.explain(tiny, x, "smoothgrad", samples=3, options={"samples": 3}),
                                  saliency.explain(tiny, x, "smoothgrad", samples=3))
    with pytest.raises(ValueError, match=r"'samples' parameter .* is 3, but options\['samples'\] is 4: give it once"):
        saliency.explain(tiny, x, "smoothgrad", samples=3, options={"samples": 4})
    assert saliency.method_label(tiny, "gradcam", options={"layer_name": "block1_conv"}) == "Grad-CAM on block1_conv"
    with pytest.raises(TypeError):
        saliency.METHOD_OPTIONS["gradient"]["samples"] = 3  # the table of defaults is read-only
    assert set(saliency.METHOD_OPTIONS) == set(saliency.ALL_METHODS) == set(saliency.METHOD_NAMES)
    assert "lime" not in saliency.METHODS  # loops over METHODS (notebook 1, faithfulness' default) run no LIME


# --------------------------------------------------------------------------- the notebook on FER2013


@pytest.mark.fer2013
def test_default_cams_on_real_faces(fer2013_path):
    """The shipped model on 240 PublicTest faces: at most 1 % degenerate maps for every CAM method at its
    default layer (at block4_conv2, before its batch norm and ReLU, Grad-CAM++ and Score-CAM were empty on
    most faces), and every table built from them is finite."""
    from fervis import data

    faces = data.load(fer2013_path).subset("PublicTest").sample(240, stratify=True, seed=0)
    model = models.load_pretrained("fer2013")
    assert saliency.method_label(model, "gradcam") == "Grad-CAM on block4_act2"
    for method in saliency.CAM_METHODS:
        maps = saliency.explain(model, faces.images, method, top_n=16)
        bad = (saliency.map_problems(maps) != "").mean()
        assert bad <= 0.01, f"{method}: {bad:.1%} degenerate maps"
        table = saliency.region_shares(maps, regions.template(), faces.labels, regions.REGION_NAMES,
                                       normalize="area")
        assert np.isfinite(table.to_numpy()).all() and np.isfinite(table.attrs["low"].to_numpy()).all()
    lines = saliency.describe(table, table, method=saliency.method_label(model, "layercam"))
    assert lines and not any(re.search(r"\b(nan|inf)\b", line) for line in lines)


@pytest.mark.fer2013
def test_lime_behind_explain_on_real_faces(fer2013_path):
    """The shipped model on 10 PublicTest faces: LIME through explain gives usable (n, 48, 48) maps in
    [0, 1], the same for the same seed, that region_shares and faithfulness take."""
    from fervis import data

    faces = data.load(fer2013_path).subset("PublicTest").sample(10, stratify=True, seed=0)
    model = models.load_pretrained("fer2013")
    maps = saliency.explain(model, faces.images, "lime", options={"samples": 300})
    assert maps.shape == (10, 48, 48) and maps.min() >= 0 and maps.max() == pytest.approx(1.0)
    assert (saliency.map_problems(maps) != "").sum() <= 1  # a face with no evidence for its class is possible
    np.testing.assert_array_equal(maps, saliency.explain(model, faces.images, "lime", options={"samples": 300}))
    table = saliency.region_shares(maps, regions.template(), faces.labels, regions.REGION_NAMES, n_boot=100)
    assert np.isfinite(table.loc["all"].to_numpy()).all()
    result = saliency.faithfulness(model, faces.images, ["lime"], steps=4,
                                   explain_kwargs={"lime": {"options": {"samples": 300}}})
    assert np.isfinite(result.table.loc["lime", ["deletion_auc", "insertion_auc"]].to_numpy(float)).all()


@pytest.mark.fer2013
def test_notebook_runs_on_fer2013(fer2013_path, tmp_path, run_notebook):
    """papermill quick run on FERVIS_FER2013 (CI): the notebook completes and its numbers are sane."""
    import json

    out = run_notebook(NOTEBOOK.name, tmp_path / "01.ipynb", {"DATA": fer2013_path, "BUDGET": "quick"})
    cells = json.loads(out.read_text())["cells"]
    texts = ["".join(o.get("text", "")) for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
    accuracy = [t for t in texts if t.startswith("accuracy on")]
    assert accuracy, "the notebook printed no accuracy"
    value = float(accuracy[0].split(":")[1].split()[0])
    assert 0.2 < value <= 1.0  # better than chance (1/7) on FER2013
    assert any("of the mass on the" in t for t in texts)  # the closing answer, written from the numbers


# --------------------------------------------------------------------------- invariants on a zoo of architectures


@pytest.fixture(scope="module")
def trained_zoo(zoo, residual_model, synthetic_small):
    """The zoo models and the residual model, each fitted a few epochs on synthetic faces."""
    train = synthetic_small.subset("Training")
    out = dict(zoo)
    # A copy: the session's residual_model must stay uncompiled and untrained for other modules' tests.
    residual = keras.models.clone_model(residual_model)
    residual.set_weights(residual_model.get_weights())
    out["residual"] = (residual, "res_out")
    for name, (model, _) in out.items():
        keras.utils.set_random_seed(0)
        if name == "residual":  # its shortcut's weight gradient aborts oneDNN (docs/architecture.md)
            model.get_layer("shortcut_conv").trainable = False
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(train.x(), train.labels, epochs=4, batch_size=32, verbose=0)
    return out


@pytest.mark.parametrize("name", ["bn_separate", "act_inside", "leaky", "all_conv", "nested", "residual"])
def test_default_cams_are_sound_on_every_architecture(trained_zoo, synthetic_small, name):
    model, layer = trained_zoo[name]
    test = synthetic_small.subset("PublicTest").sample(42, stratify=True, seed=0)
    assert saliency.method_label(model, "gradcam") == f"Grad-CAM on {layer}"
    maps = {m: saliency.explain(model, test.images, m, top_n=8) for m in saliency.CAM_METHODS}
    for method, m in maps.items():
        assert (saliency.map_problems(m) == "").all(), f"{method} on {name}: {saliency.map_problems(m)}"
    assert not np.array_equal(maps["gradcam"], maps["layercam"])  # bit-identical on a 7-channel classifier conv
    for normalize in (None, "area"):
        table = saliency.region_shares(maps["gradcam"], regions.template(), test.labels, regions.REGION_NAMES,
                                       normalize=normalize)
        for frame in (table, table.attrs["low"], table.attrs["high"]):
            assert np.isfinite(frame.to_numpy()).all()
        assert table.attrs["n"]["all"] == len(test) and table.attrs["excluded"]["all"] == 0
    occlusion = saliency.occlusion_check(model, test.images, regions.template(), test.labels, regions.REGION_NAMES,
                                         n_boot=200)
    for frame in (occlusion, occlusion.attrs["low"], occlusion.attrs["high"]):
        assert np.isfinite(frame.to_numpy()).all()
    per_class = np.bincount(test.labels, minlength=7)
    assert (occlusion.attrs["n"].to_numpy() == per_class[per_class > 0, None]).all()  # every face has every region


def test_faithfulness_and_randomization_tables_are_finite(trained_zoo, synthetic_small):
    model, _ = trained_zoo["bn_separate"]
    test = synthetic_small.subset("PublicTest").sample(14, stratify=True, seed=0)
    faith = saliency.faithfulness(model, test.images, ["gradient", "gradcam"], steps=4)
    methods = faith.table.drop(index="random")
    assert np.isfinite(faith.table[["deletion_auc", "insertion_auc", "score"]].to_numpy()).all()
    assert ((methods[["deletion_p", "insertion_p"]] > 0) & (methods[["deletion_p", "insertion_p"]] <= 1)).all().all()
    assert (faith.table["n"] == 14).all() and (faith.table["degenerate"] == 0).all()
    assert faith.table["beats_random"].tolist() == [bool(p < 0.05 and q < 0.05) for p, q in
                                                    zip(faith.table["deletion_p"], faith.table["insertion_p"])]
    check = saliency.randomization_check(model, test.images[:6], ["gradcam", "layercam"])
    assert np.isfinite(check.correlation.to_numpy()).all() and check.n == 6
    assert check.undefined.shape == check.correlation.shape and (check.undefined.to_numpy() >= 0).all()


def test_spearman_is_undefined_for_constant_maps():
    from fervis import monitoring

    rng = np.random.default_rng(0)
    a = rng.random((3, 20))
    b = np.stack([a[0], np.zeros(20), np.full(20, 2.0)])
    rho = saliency.spearman(a, b)
    assert rho[0] == pytest.approx(1.0) and np.isnan(rho[1:]).all()  # as monitoring.spearman: NaN, not 0
    assert np.isnan(monitoring.spearman(a[1:2].reshape(1, 4, 5), b[1:2].reshape(1, 4, 5))).all()


def test_randomization_counts_empty_maps_as_undefined(tiny, faces):
    images = faces[0]
    # Black faces: every feature map is flat, so is every Grad-CAM map, at every stage.
    check = saliency.randomization_check(tiny, np.zeros_like(images), ["gradcam"])
    assert check.correlation.isna().all().all()
    assert (check.undefined["gradcam"] == len(images)).all()
    assert "gradcam undefined (every map empty or constant)" in saliency.describe(randomization=check)[0]


@pytest.mark.fer2013
@pytest.mark.slow
def test_notebook_runs_on_fer2013_quick(fer2013_path, tmp_path, run_notebook, notebook_text):
    import re

    out = run_notebook("01_saliency_maps.ipynb", tmp_path / "01.ipynb", {"DATA": fer2013_path, "BUDGET": "quick"})
    text = notebook_text(out)  # no inf or NaN anywhere
    assert "model contract: vgg: 48×48×1 input, pixels in 0–255 (detected)" in text
    warnings = re.findall(r"Warning: (\d+) of (\d+) (.+?) maps are degenerate", text)
    assert all(int(bad) <= 0.01 * int(total) for bad, total, _ in warnings), warnings  # at most 1 % per method
    assert "registration of 600 faces against their mean face" in text
    assert "occluder" not in text.split("registration of")[1]  # no synthetic-only region in FER2013's tables


def test_bootstrap_means_in_bounded_chunks_equal_one_matrix_product():
    """Many faces are resampled in chunks (bounded memory); the draws and the means are the same."""
    values = np.random.default_rng(1).random((5000, 9))
    values[::7, 3] = np.nan  # a region some faces do not have
    chunked = saliency._boot_means(values, 1000, np.random.default_rng(0))  # 5000 faces: 838 resamples a chunk
    rng = np.random.default_rng(0)
    weights = rng.multinomial(5000, np.full(5000, 1 / 5000), size=1000).astype(np.float64)
    finite = np.isfinite(values)
    expected = (weights @ np.where(finite, values, 0.0)) / (weights @ finite)
    np.testing.assert_allclose(chunked, expected)
