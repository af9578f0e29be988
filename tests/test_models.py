"""Tests for fervis.models: builders, safe loading, adapters, layer lookup and surgery."""

import os
import pathlib
import pickle
import zipfile

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from fervis import models  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return models.build("tiny", seed=0)


@pytest.fixture(scope="module")
def faces():
    return np.random.default_rng(0).integers(0, 256, (6, 48, 48, 1)).astype("float32")


def _third_party(shape=(64, 64, 1), activation="softmax", name="third_party"):
    """A stand-in for someone else's classifier: another input size, its own layer names."""
    inputs = keras.Input(shape, name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="tp_conv1")(inputs)
    x = keras.layers.Conv2D(6, 3, strides=2, activation="relu", name="tp_conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="tp_gap")(x)
    outputs = keras.layers.Dense(7, activation=activation, name="tp_out")(x)
    return keras.Model(inputs, outputs, name=name)


def _manual(images, size, low, high, channels):
    """What an adapter must do, written out by hand."""
    x = tf.image.resize(images, size, method="bilinear") if size != (48, 48) else tf.constant(images)
    x = x / 255.0 * (high - low) + low
    return tf.repeat(x, channels, axis=-1) if channels > 1 else x


class _Marker:
    """Unpickling this creates a file: the proof that a loader unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.path),)


# --------------------------------------------------------------------------- build


@pytest.mark.parametrize("name, convs", [("tiny", 2), ("compact", 6), ("vgg", 8), ("vgg-wide", 8)])
def test_build_names_and_contract(name, convs):
    model = models.build(name, seed=0)
    assert model.input_shape == (None, 48, 48, 1)
    assert model.output_shape == (None, 7)
    assert model.get_layer("predictions").activation.__name__ == "softmax"
    assert len(models.conv_layers(model)) == convs
    assert models.conv_layers(model)[0].startswith("block1_conv")


def test_vgg_wide_widens_the_last_block_only():
    """``vgg-wide`` (issue 23) is ``vgg`` with 384 filters in its last block: the same layers, every
    other width the same, within the 5 M parameters a shipped model may have."""
    vgg, wide = models.build("vgg", seed=0), models.build("vgg-wide", seed=0)
    assert [layer.name for layer in vgg.layers] == [layer.name for layer in wide.layers]
    widths = {m: {layer.name: layer.filters for layer in m.layers if hasattr(layer, "filters")} for m in (vgg, wide)}
    assert {k for k in widths[vgg] if widths[vgg][k] != widths[wide][k]} == {"block4_conv1", "block4_conv2"}
    assert widths[wide]["block4_conv2"] == 384
    assert vgg.count_params() < wide.count_params() == 2_160_679 < 5_000_000


def test_build_seed_is_repeatable():
    a, b = models.build("tiny", seed=3), models.build("tiny", seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "resnet"}, "'name' parameter of fervis.models.build"),
    ({"num_classes": 1}, r"'num_classes' parameter of fervis\.models\.build must be an int >= 2\. Got 1"),
    ({"num_classes": True}, r"'num_classes' parameter of fervis\.models\.build must be an int >= 2"),
    ({"num_classes": 7.0}, r"'num_classes' parameter of fervis\.models\.build must be an int >= 2"),
])
def test_build_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.build(**kwargs)


def test_build_takes_a_numpy_int_for_num_classes():
    # the one int check (_checks.positive_int): numpy ints are ints, as everywhere else
    model = models.build("tiny", num_classes=np.int64(5), seed=0)
    assert model.output_shape == (None, 5)


# --------------------------------------------------------------------------- load


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_load_round_trip(tmp_path, tiny, faces, suffix):
    path = tmp_path / f"model{suffix}"
    tiny.save(path)
    loaded = models.load(path, num_classes=7)
    np.testing.assert_allclose(loaded(faces), tiny(faces), atol=1e-6)
    assert models.load(str(path)).name == "tiny"


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_load_refuses_lambda_under_safe_mode(tmp_path, suffix):
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Lambda(lambda t: t / 255.0, name="my_lambda")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(x))
    path = tmp_path / f"lambda{suffix}"
    model.save(path)
    with pytest.raises(ValueError, match=r"Lambda layer.*'my_lambda'.*unsafe deserialization.*safe_mode"):
        models.load(path)


@pytest.mark.parametrize("name", ["model.keras", "model.h5", "model.pkl", "model"])
def test_load_refuses_pickle_and_never_unpickles(tmp_path, name):
    # The payload works: unpickling it creates its marker file.
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Marker(proof)))
    assert proof.exists()

    marker = tmp_path / "unpickled"
    path = tmp_path / name
    path.write_bytes(pickle.dumps(_Marker(marker)))
    with pytest.raises(ValueError, match="pickle.*never unpickles"):
        models.load(path)
    assert not marker.exists()


def test_load_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist") as info:
        models.load(tmp_path / "missing.keras")
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("make, match", [
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.write_text("hello"), "neither a Keras .keras archive nor an HDF5 file"),
    (lambda p: np.save(p, np.zeros(3)), "NumPy array file"),
])
def test_load_refuses_other_formats(tmp_path, make, match):
    path = tmp_path / "thing.keras"
    make(path)
    if not path.exists():  # np.save appends .npy
        os.replace(str(path) + ".npy", path)
    with pytest.raises(ValueError, match=match):
        models.load(path)


def test_load_refuses_zip_without_config(tmp_path):
    path = tmp_path / "other.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "not a model")
    with pytest.raises(ValueError, match="not a Keras model.*no config.json"):
        models.load(path)


def test_load_refuses_extension_content_mismatch(tmp_path, tiny):
    path = tmp_path / "model.h5"
    tiny.save(path)
    os.replace(path, tmp_path / "model.keras")
    with pytest.raises(ValueError, match="extension says .keras but its content is a hdf5 file"):
        models.load(tmp_path / "model.keras")


def test_load_refuses_weights_only_h5(tmp_path, tiny):
    path = tmp_path / "model.weights.h5"
    tiny.save_weights(path)
    with pytest.raises(ValueError, match="no model architecture"):
        models.load(path)


def test_load_refuses_directory_and_bad_type(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        models.load(tmp_path)
    with pytest.raises(ValueError, match="'path' parameter of fervis.models.load"):
        models.load(42)


def test_load_refuses_class_mismatch_naming_both_numbers(tmp_path, tiny):
    path = tmp_path / "model.keras"
    tiny.save(path)
    with pytest.raises(ValueError, match="outputs 7 classes, but the data has 5 classes"):
        models.load(path, num_classes=5)


def test_load_refuses_unknown_layer_class(tmp_path, tiny):
    path = tmp_path / "model.keras"
    tiny.save(path)
    custom = tmp_path / "custom.keras"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(custom, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item == "config.json":
                data = data.replace(b'"class_name": "Flatten"', b'"class_name": "MyFlatten"')
            dst.writestr(item, data)
    with pytest.raises(ValueError, match="Cannot load model file .*custom.keras"):
        models.load(custom)


# --------------------------------------------------------------------------- pretrained, resolve


def test_load_pretrained_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "_PRETRAINED_DIR", tmp_path)
    with pytest.raises(ValueError, match="pretrained model 'fer2013' is not installed") as info:
        models.load_pretrained("fer2013")
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(ValueError, match="not installed"):
        models.resolve("pretrained:fer2013")


def test_load_pretrained_and_resolve(tmp_path, monkeypatch, tiny, faces):
    monkeypatch.setattr(models, "_PRETRAINED_DIR", tmp_path)
    tiny.save(tmp_path / "fer2013.keras")
    np.testing.assert_allclose(models.load_pretrained("fer2013", num_classes=7)(faces), tiny(faces), atol=1e-6)
    np.testing.assert_allclose(models.resolve("pretrained:fer2013")(faces), tiny(faces), atol=1e-6)
    np.testing.assert_allclose(models.resolve(tmp_path / "fer2013.keras")(faces), tiny(faces), atol=1e-6)
    assert models.resolve(tiny) is tiny
    assert models.pretrained_path("fer2013") == tmp_path / "fer2013.keras"


def test_packaged_pretrained_model_when_present():
    path = models.pretrained_path("fer2013")
    if not path.exists():
        pytest.skip("the packaged FER2013 model is not built yet")
    model = models.load_pretrained("fer2013", num_classes=7)
    assert model.input_shape == (None, 48, 48, 1)
    assert model.get_layer("predictions").activation.__name__ == "softmax"


@pytest.mark.parametrize("call, match", [
    (lambda: models.load_pretrained("imagenet"), r"must be one of \['fer2013', 'fer2013-v1', 'synthetic'\]"),
    (lambda: models.resolve(3.5), "'spec' parameter of fervis.models.resolve"),
    (lambda: models.resolve(models.build("tiny"), num_classes=3), "outputs 7 classes, but the data has 3"),
])
def test_pretrained_and_resolve_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --------------------------------------------------------------------------- adapt


@pytest.mark.parametrize("shape, scale, output", [
    ((64, 64, 1), (-1.0, 1.0), "probabilities"),
    ((32, 32, 3), (0.0, 1.0), "logits"),
    ((48, 48, 3), (0, 255), "probabilities"),
])
def test_adapt_matches_manual_preprocessing(faces, shape, scale, output):
    third = _third_party(shape, activation="softmax" if output == "probabilities" else None)
    adapted = models.adapt(third, input_shape=shape, scale=scale, output=output)
    assert adapted.input_shape == (None, 48, 48, 1)
    expected = third(_manual(faces, shape[:2], *scale, shape[2]))
    if output == "logits":
        expected = tf.nn.softmax(expected)
        assert adapted.get_layer("predictions").activation.__name__ == "softmax"
    np.testing.assert_allclose(adapted(faces), expected, atol=1e-5)
    assert adapted.get_layer("third_party") is third
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in adapted.layers)


def test_adapt_default_is_64_by_64_minus_one_to_one(faces):
    third = _third_party()
    adapted = models.adapt(third)
    np.testing.assert_allclose(adapted(faces), third(_manual(faces, (64, 64), -1.0, 1.0, 1)), atol=1e-5)


def test_adapt_saves_and_loads_under_safe_mode(tmp_path, faces):
    adapted = models.adapt(_third_party((40, 40, 3)), input_shape=None, scale=(0.0, 1.0))
    adapted.save(tmp_path / "adapted.keras")
    loaded = models.load(tmp_path / "adapted.keras", num_classes=7)
    np.testing.assert_allclose(loaded(faces), adapted(faces), atol=1e-6)
    assert models.conv_layers(loaded) == ["tp_conv1", "tp_conv2"]


@pytest.mark.parametrize("kwargs, match", [
    ({"input_shape": (32, 32, 1)}, r"must match the input of model 'third_party', which is \(64, 64, 1\)"),
    ({"input_shape": (64, 64)}, "'input_shape' parameter of fervis.models.adapt"),
    ({"scale": (1.0, -1.0)}, "'scale' parameter of fervis.models.adapt"),
    ({"output": "scores"}, "'output' parameter of fervis.models.adapt"),
])
def test_adapt_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.adapt(_third_party(), **kwargs)


def test_adapt_refuses_non_model():
    with pytest.raises(ValueError, match="'model' parameter of fervis.models.adapt must be a keras.Model"):
        models.adapt("model.keras")


# --------------------------------------------------------------------------- layer lookup


@pytest.mark.parametrize("query, expected", [
    ("block2_conv", "block2_conv"),
    ("conv", "block1_conv"),
    ("Conv2D", "block1_conv"),
    ("conv2d", "block1_conv"),
    ("dense", "predictions"),
    ("pool", "block1_pool"),
])
def test_find_layer_by_name_or_type(tiny, query, expected):
    assert models.find_layer(tiny, query).name == expected


def test_find_layer_by_class_and_inside_adapted():
    adapted = models.adapt(_third_party())
    assert models.find_layer(adapted, keras.layers.Dense).name == "tp_out"
    assert models.find_layer(adapted, "tp_conv2").name == "tp_conv2"
    assert models.find_layer(adapted, "conv").name == "tp_conv1"
    assert models.find_layer(adapted, "third_party").name == "third_party"


def test_find_layer_unknown_lists_layers(tiny):
    with pytest.raises(ValueError, match=r"no layer named or of type 'block9_conv'.*Available layers: \['pixels', "
                                         r"'scale', 'block1_conv'"):
        models.find_layer(tiny, "block9_conv")
    with pytest.raises(ValueError, match="'name_or_type' parameter of fervis.models.find_layer"):
        models.find_layer(tiny, 3)


def test_conv_layers_and_last_conv(tiny, residual_model):
    assert models.conv_layers(tiny) == ["block1_conv", "block2_conv"]
    assert models.last_conv_layer(tiny) == "block2_conv"
    assert set(models.conv_layers(residual_model)) == {"stem_conv", "shortcut_conv", "res_conv1", "res_conv2"}
    adapted = models.adapt(_third_party())
    assert models.conv_layers(adapted) == ["tp_conv1", "tp_conv2"]
    assert models.last_conv_layer(adapted) == "tp_conv2"


def test_last_conv_layer_without_convs():
    inputs = keras.Input((48, 48, 1))
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax", name="predictions")(
        keras.layers.Flatten(name="flat")(inputs)), name="mlp")
    with pytest.raises(ValueError, match=r"Model 'mlp' has no convolution layer. Available layers: .*'flat'"):
        models.last_conv_layer(model)


# --------------------------------------------------------------------------- surgery


def test_truncate_at_outer_layer_shares_weights(tiny, faces):
    trunk = models.truncate_at(tiny, "block2_conv")
    assert trunk.output_shape == (None, 24, 24, 16)
    assert trunk.get_layer("block2_conv") is tiny.get_layer("block2_conv")
    expected = keras.Model(tiny.input, tiny.get_layer("block2_conv").output)(faces)
    np.testing.assert_allclose(trunk(faces), expected, atol=1e-6)


@pytest.mark.parametrize("nested_name", ["tp_conv1", "tp_conv2", "tp_gap"])
def test_truncate_at_inside_adapted_model(faces, nested_name):
    third = _third_party((64, 64, 3))
    adapted = models.adapt(third, input_shape=(64, 64, 3), scale=(-1.0, 1.0))
    trunk = models.truncate_at(adapted, nested_name)
    assert trunk.input_shape == (None, 48, 48, 1)
    inner = keras.Model(third.input, third.get_layer(nested_name).output)
    np.testing.assert_allclose(trunk(faces), inner(_manual(faces, (64, 64), -1.0, 1.0, 3)), atol=1e-5)
    # The adapted model still works after the surgery.
    assert adapted(faces).shape == (6, 7)


def test_truncate_at_inside_sequential(faces):
    seq = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Conv2D(3, 3, name="s_conv"),
                            keras.layers.Flatten(name="s_flat"),
                            keras.layers.Dense(7, activation="softmax", name="s_out")], name="seq")
    adapted = models.adapt(seq, input_shape=(32, 32, 1), scale=(0.0, 1.0))
    assert models.truncate_at(adapted, "s_conv")(faces).shape == (6, 30, 30, 3)


def test_truncate_at_unknown_layer(tiny):
    with pytest.raises(ValueError, match=r"no layer named .*'nope'.*Available layers"):
        models.truncate_at(tiny, "nope")
    with pytest.raises(ValueError, match="no layer named 'conv'"):
        models.truncate_at(tiny, "conv")  # a type is not a layer name here


def _separate_softmax():
    """A classifier whose softmax is its own ``Softmax`` layer after a linear Dense (a common homework head)."""
    inputs = keras.Input((48, 48, 1), name="pixels")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(keras.layers.Rescaling(1 / 255.0, name="scale")(inputs))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Softmax(name="softmax")(keras.layers.Dense(7, name="dense")(x)))


@pytest.mark.parametrize("kind", ["fervis", "adapted_probabilities", "adapted_logits", "residual", "separate_softmax"])
def test_to_logits_is_pre_softmax_and_leaves_original(kind, tiny, residual_model, faces):
    model = {
        "fervis": tiny,
        "adapted_probabilities": models.adapt(_third_party()),
        "adapted_logits": models.adapt(_third_party(activation=None), output="logits"),
        "residual": residual_model,
        "separate_softmax": _separate_softmax(),  # rebuilt graphs call a Softmax with `mask`: the copy must take it
    }[kind]
    before = np.asarray(model(faces))
    logits = models.to_logits(model)
    scores = np.asarray(logits(faces))
    np.testing.assert_allclose(tf.nn.softmax(scores), before, atol=1e-5)
    assert not np.allclose(scores.sum(axis=1), 1.0)
    # the original is untouched
    np.testing.assert_allclose(model(faces), before, atol=1e-7)
    assert [layer.name for layer in logits.layers] == [layer.name for layer in model.layers]


def test_to_logits_input_gradient_in_tf_function(residual_model, faces):
    logits = models.to_logits(residual_model)

    @tf.function
    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            score = logits(x)[:, 3]
        return tape.gradient(score, x)

    g = grad(tf.constant(faces))
    assert g.shape == faces.shape and np.isfinite(g.numpy()).all()


def test_to_logits_of_a_model_in_memory_with_a_lambda_layer(faces):
    """A student's own model, passed as an object, may hold a Lambda (files with one stay refused): its logits
    copy shares the Lambda instead of rebuilding it, which safe mode refused with a deep Keras error."""
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Lambda(lambda t: t / 127.5 - 1.0, name="to_unit")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="conv")(x))
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax", name="predictions")(x))
    logits = models.to_logits(model)
    assert logits.get_layer("to_unit") is model.get_layer("to_unit")
    np.testing.assert_allclose(keras.ops.softmax(logits(faces)), model(faces), atol=1e-6)


def test_to_logits_needs_softmax_output():
    with pytest.raises(ValueError, match="must come from a softmax \\(or sigmoid\\) layer.*'tp_out'"):
        models.to_logits(_third_party(activation=None))
    # A final sigmoid has logits before it too: bypassed in place as to_logits copies it.
    sigmoid = _third_party(activation="sigmoid")
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 1)).astype("float32")
    scores = np.asarray(sigmoid(x))
    with models.bypass_softmax(sigmoid):
        inside = np.asarray(sigmoid(x))
    np.testing.assert_allclose(inside, np.asarray(models.to_logits(sigmoid)(x)), atol=1e-6)
    np.testing.assert_allclose(1 / (1 + np.exp(-inside)), scores, atol=1e-6)
    np.testing.assert_allclose(np.asarray(sigmoid(x)), scores)  # restored on leaving the block


def _ensemble():
    """Two copies of one architecture averaged: every layer name occurs twice, inside member_a and member_b."""
    members = []
    for name, seed in (("member_a", 0), ("member_b", 1)):
        built = models.build("tiny", seed=seed)
        members.append(keras.Model(built.input, built.output, name=name))
    inputs = keras.Input((48, 48, 1), name="faces")
    outputs = keras.layers.Average(name="mean_probs")([member(inputs) for member in members])
    return keras.Model(inputs, outputs, name="ensemble"), members


def test_layers_that_share_a_name_go_by_their_path(faces):
    """In an ensemble of two copies of one model each name must still pick one layer: a plain name that
    would pick either is refused, and layers go by their path instead (Grad-CAM's default layer included)."""
    from fervis import filters, labels, saliency

    ensemble, (a, b) = _ensemble()
    assert models.conv_layers(ensemble) == ["member_a/block1_conv", "member_a/block2_conv",
                                            "member_b/block1_conv", "member_b/block2_conv"]
    assert models.last_conv_layer(ensemble) == "member_b/block2_conv"
    paths = models.layer_paths(ensemble)
    assert {"faces", "member_a", "member_b", "mean_probs"} <= set(paths) and len(set(paths)) == len(paths)
    assert models.find_layer(ensemble, "member_b/block2_conv") is b.get_layer("block2_conv")
    assert models.path_of(ensemble, a.get_layer("block1_conv")) == "member_a/block1_conv"
    with pytest.raises(ValueError, match=r"Layer name 'block2_conv' is ambiguous in model 'ensemble': 2 layers .*"
                                         r"\['member_a/block2_conv', 'member_b/block2_conv'\]"):
        models.find_layer(ensemble, "block2_conv")
    np.testing.assert_allclose(np.asarray(models.truncate_at(ensemble, "member_b/block2_conv")(faces)),
                               np.asarray(models.truncate_at(b, "block2_conv")(faces)), atol=1e-5)
    # Explanations read the member they name, not whichever comes first.
    cam_a = saliency.explain(ensemble, faces, method="gradcam", layer_name="member_a/block2_conv", normalize=False)
    cam_b = saliency.explain(ensemble, faces, method="gradcam", normalize=False)
    np.testing.assert_allclose(cam_b, saliency.explain(ensemble, faces, method="gradcam",  # the CAM layer rule
                                                       layer_name="member_b/block2_act", normalize=False))
    assert not np.allclose(cam_a, cam_b)
    assert filters.block_layers(ensemble, "member_b/block1_conv")[0] == "member_b/block1_conv"
    assert all("/" in name for name in filters.block_layers(ensemble, "member_b/block1_conv"))
    maps = filters.feature_maps(ensemble, faces[:2], "member_a/block1_conv")
    np.testing.assert_allclose(maps, np.asarray(models.truncate_at(a, "block1_conv")(faces[:2])), atol=1e-5)
    features = labels.penultimate_features(ensemble, faces)
    assert features.shape[0] == len(faces)


def test_ensemble_averages_logits_and_saves_under_safe_mode(tmp_path, tiny, residual_model, faces):
    """Two models of one architecture plus an adapted third-party model: the ensemble's logits are the
    members' mean, its probabilities their softmax, the members are copies under their own paths, and the
    file loads under safe_mode with the same outputs."""
    from fervis import saliency

    other = models.build("tiny", seed=1)
    adapted = models.adapt(_third_party())
    members = [tiny, other, adapted]
    both = models.ensemble(members)
    member_logits = [np.asarray(models.to_logits(m)(faces)) for m in members]
    np.testing.assert_allclose(np.asarray(models.to_logits(both)(faces)), np.mean(member_logits, axis=0), atol=1e-4)
    np.testing.assert_allclose(np.asarray(both(faces)), np.asarray(keras.ops.softmax(np.mean(member_logits, axis=0))),
                               atol=1e-5)
    # Names the members share go by path; a name only one member has stays bare.
    assert {"member_a", "member_b", "member_c", "member_a/block1_conv", "member_b/block1_conv", "tp_conv2"} <= set(
        models.layer_paths(both))
    assert models.last_conv_layer(both) == "tp_conv2"
    assert models.find_layer(both, "member_b/block1_conv") is not other.get_layer("block1_conv")  # a copy
    path = tmp_path / "ensemble.keras"
    both.save(path)
    loaded = models.load(path, num_classes=7)
    np.testing.assert_allclose(np.asarray(loaded(faces)), np.asarray(both(faces)), atol=1e-5)
    # The trap model (residual 1x1 stride-2 shortcut) inside an ensemble: its gradients still run in a graph.
    trap = models.ensemble([residual_model, tiny])
    maps = saliency.explain(trap, faces[:2], method="gradcam", layer_name=models.last_conv_layer(residual_model))
    assert maps.shape == (2, 48, 48) and np.isfinite(maps).all() and maps.max() > 0
    grads = saliency.explain(trap, faces[:2], method="gradient")
    assert grads.shape == (2, 48, 48) and np.isfinite(grads).all() and grads.max() > 0


def test_grad_cam_of_an_ensemble_explains_every_member(tiny, faces):
    """An ensemble's class score is its members' mean logit, so its Grad-CAM weighs each member's last
    rectified feature map by that member's share of the gradient; computed here by hand from the members alone."""
    import tensorflow as tf

    from fervis import saliency

    other = models.build("tiny", seed=1)
    both = models.ensemble([tiny, other])
    assert models.last_conv_layers(both) == ["member_a/block2_conv", "member_b/block2_conv"]
    assert models.last_conv_layers(tiny) == [models.last_conv_layer(tiny)] == ["block2_conv"]
    assert models.cam_layers(both) == ["member_a/block2_act", "member_b/block2_act"]  # after the ReLU
    x = tf.constant(faces[:4].astype("float32"))
    logits = [models.to_logits(m) for m in (tiny, other)]
    chosen = np.mean([np.asarray(m(x)) for m in logits], axis=0).argmax(axis=1)
    expected = 0.0
    for m in logits:
        probe = keras.Model(m.input, [m.get_layer("block2_act").output, m.output])
        with tf.GradientTape() as tape:
            acts, z = probe(x)
            score = tf.gather(z, chosen, axis=1, batch_dims=1) / 2.0  # the member's share of the mean
        grads = tape.gradient(score, acts)
        cam = tf.reduce_sum(tf.reduce_mean(grads, axis=[1, 2], keepdims=True) * acts, axis=-1)
        expected = expected + tf.image.resize(cam[..., None], (48, 48), method="bilinear")[..., 0]
    maps = saliency.explain(both, faces[:4], method="gradcam", normalize=False)
    np.testing.assert_allclose(maps, np.maximum(np.asarray(expected), 0.0), rtol=1e-3, atol=1e-5)
    assert maps.max() > 0
    np.testing.assert_allclose(maps, saliency.explain(both, faces[:4], method="gradcam", normalize=False,
                                                      layer_name=models.cam_layers(both)))
    # Not one member's map: each alone differs from the whole.
    for name in models.cam_layers(both):
        assert not np.allclose(maps, saliency.explain(both, faces[:4], method="gradcam", layer_name=name,
                                                      normalize=False), atol=1e-4)
    # Score-CAM pools both members' channels (16 each), so top_n may exceed one layer's count (16).
    pooled = saliency.explain(both, faces[:2], method="scorecam", top_n=20)
    assert pooled.shape == (2, 48, 48) and np.isfinite(pooled).all() and pooled.max() > 0
    for method in ("gradcam++", "layercam"):
        out = saliency.explain(both, faces[:2], method=method)
        assert np.isfinite(out).all() and out.max() == pytest.approx(1.0)


def test_an_ensembles_features_are_its_members_side_by_side(tiny, faces):
    """The ensemble's averaged logits weigh every member's penultimate features, so its features are all of
    them in member order (not only the last member's); an explicit list of layers reads them the same way."""
    from fervis import labels

    other = models.build("tiny", seed=1)
    both = models.ensemble([tiny, other])
    assert [m.name for m in models.ensemble_members(both)] == ["member_a", "member_b"]
    assert models.ensemble_members(tiny) == [] and models.ensemble_members(_ensemble()[0]) == []
    features = labels.penultimate_features(both, faces)
    np.testing.assert_allclose(features, np.concatenate([labels.penultimate_features(tiny, faces),
                                                         labels.penultimate_features(other, faces)], axis=1),
                               atol=1e-5)
    names = ("member_a/flatten", "member_b/flatten")
    np.testing.assert_allclose(labels.penultimate_features(both, faces, layer_name=names), features)
    with pytest.raises(ValueError, match=r"'layer_name' parameter .* a list of them.* Got \[\]"):
        labels.penultimate_features(both, faces, layer_name=[])
    with pytest.raises(ValueError, match=r"'layer_name' parameter .* Got 'member_c/flatten'"):
        labels.penultimate_features(both, faces, layer_name=["member_a/flatten", "member_c/flatten"])


def test_a_full_path_names_a_layer_everywhere(faces, residual_model):
    """fervis calls a layer that only one member has by its bare name; its full path (each nested model on
    the way) is accepted too, by lookup, surgery, Grad-CAM, filters, features and the filter explorer."""
    from fervis import filters, labels, saliency, widgets

    both = models.ensemble([residual_model, models.build("tiny", seed=0), models.build("tiny", seed=1)])
    full, bare = "member_a/shortcut_conv", "shortcut_conv"
    assert bare in models.layer_paths(both) and full not in models.layer_paths(both)
    assert models.canonical_layer_name(both, full) == bare
    assert models.canonical_layer_name(both, "member_b/block1_conv") == "member_b/block1_conv"
    assert models.canonical_layer_name(both, "member_d/nothing") == "member_d/nothing"  # left for callers to refuse
    assert models.find_layer(both, full) is models.find_layer(both, bare)
    np.testing.assert_allclose(np.asarray(models.truncate_at(both, full)(faces)),
                               np.asarray(models.truncate_at(both, bare)(faces)))
    np.testing.assert_allclose(saliency.explain(both, faces[:2], method="gradcam", layer_name=full),
                               saliency.explain(both, faces[:2], method="gradcam", layer_name=bare))
    assert filters.block_layers(both, full) == filters.block_layers(both, bare)
    assert filters.layer_width(both, full) == 8
    np.testing.assert_allclose(filters.feature_maps(both, faces[:1], full), filters.feature_maps(both, faces[:1], bare))
    np.testing.assert_allclose(labels.penultimate_features(both, faces[:2], layer_name="member_a/gap"),
                               labels.penultimate_features(both, faces[:2], layer_name="gap"))
    box = widgets.filter_explorer(both, faces[:4, ..., 0], layers=[full], layer_name=full, steps=2, k=1)
    assert box.layer.value == bare
    with pytest.raises(ValueError, match=r"has no layer named or of type 'member_d/nothing'"):
        models.find_layer(both, "member_d/nothing")


@pytest.mark.parametrize("members, match", [
    ("model", "must be a list of at least two keras.Model"),
    ([], "must be a list of at least two keras.Model"),
    (["tiny"], "must be a list of at least two keras.Model"),
])
def test_ensemble_bad_members(members, match, tiny):
    with pytest.raises(ValueError, match=match):
        models.ensemble([tiny] if members == ["tiny"] else members)


def test_ensemble_refuses_members_that_do_not_agree(tiny):
    with pytest.raises(ValueError, match=r"one input shape. Got 'tiny' \(48, 48, 1\), 'third_party' \(64, 64, 1\)"):
        models.ensemble([tiny, _third_party()])
    three = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")],
                             name="three")
    with pytest.raises(ValueError, match=r"same number of classes for all. Got 'tiny' \(None, 7\), 'three' \(None, 3\)"):
        models.ensemble([tiny, three])
    with pytest.raises(ValueError, match=r"Member 1 of fervis.models.ensemble: .*must come from a softmax \(or sigmoid\) layer.*'tp_out'"):
        models.ensemble([tiny, models.adapt(_third_party(activation=None))])


@pytest.mark.parametrize("name", ["bn_separate", "act_inside", "leaky", "all_conv", "nested"])
def test_cam_layers_is_the_last_rectified_feature_map(zoo, name):
    model, expected = zoo[name]
    assert models.cam_layers(model) == [expected]


def test_cam_layers_of_fervis_residual_and_linear_models(residual_model):
    assert models.cam_layers(models.build("vgg", seed=0)) == ["block4_act2"]  # not block4_conv2 before its BN
    assert models.cam_layers(models.build("tiny", seed=0)) == ["block2_act"]
    assert models.cam_layers(residual_model) == ["res_out"]  # after the residual add's ReLU
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Conv2D(8, 3, name="linear_conv")(inputs)  # no nonlinearity anywhere: the last convolution
    x = keras.layers.Conv2D(7, 1, name="class_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Activation("softmax")(x))
    assert models.cam_layers(model) == ["linear_conv"]
    with pytest.raises(ValueError, match=r"'model' parameter of fervis.models.cam_layers must be a keras.Model"):
        models.cam_layers("vgg")


# --------------------------------------------------------------------------- hardening


def _rewrite_config(path, out, edit):
    """Copy the .keras archive ``path`` to ``out`` with ``edit(config_text) -> text`` applied."""
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            content = src.read(info)
            if info.filename == "config.json":
                content = edit(content.decode()).encode()
            dst.writestr(info.filename, content)
    return out


def test_lambda_refused_by_what_keras_resolves_not_by_spelling(tmp_path):
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Lambda(lambda t: t / 255.0, name="my_lambda")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(x)).save(tmp_path / "lambda.keras")
    spelled = '"module": "keras", "class_name": "layers.Lambda"'

    def respell(text):
        import json

        config = json.loads(text)
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "Lambda":
                layer["module"], layer["class_name"] = "keras", "layers.Lambda"
        return json.dumps(config).replace('"module": "keras", "class_name": "layers.Lambda"', spelled)

    path = _rewrite_config(tmp_path / "lambda.keras", tmp_path / "respelled.keras", respell)
    with zipfile.ZipFile(path) as archive:
        assert '"class_name": "Lambda"' not in archive.read("config.json").decode()
    with pytest.raises(ValueError, match=r"Refusing to load .*Lambda layer\(s\) \['my_lambda'\]"):
        models.load(path)


def test_config_json_is_capped_before_it_is_read(tmp_path, tiny, monkeypatch):
    tiny.save(tmp_path / "tiny.keras")
    path = _rewrite_config(tmp_path / "tiny.keras", tmp_path / "padded.keras", lambda text: text + " " * 5000)
    monkeypatch.setattr(models, "_MAX_CONFIG_BYTES", 4096)  # stands for 8 MiB of a config bomb
    with pytest.raises(ValueError, match=r"padded\.keras'?: its config\.json is larger than"):
        models.load(path)


def test_absurd_layer_size_names_the_layer(tmp_path, tiny):
    tiny.save(tmp_path / "tiny.keras")
    dense = next(layer.name for layer in tiny.layers if isinstance(layer, keras.layers.Dense))

    def huge(text):
        import json

        config = json.loads(text)
        for layer in config["config"]["layers"]:
            if layer["config"]["name"] == dense:
                layer["config"]["units"] = 10**12
        return json.dumps(config)

    path = _rewrite_config(tmp_path / "tiny.keras", tmp_path / "huge.keras", huge)
    with pytest.raises(ValueError, match=rf"layer '{dense}' declares units=1000000000000, larger than 65536"):
        models.load(path)


def test_fifo_and_empty_path_are_refused(tmp_path):
    import signal

    os.mkfifo(tmp_path / "model.keras")

    def hung(*_):
        raise AssertionError("models.load hung on a FIFO")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        with pytest.raises(ValueError, match=r"model\.keras'?: it is not a regular file"):
            models.load(tmp_path / "model.keras")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    with pytest.raises(ValueError, match=r"'path' parameter .* Got '' instead"):
        models.load("")


def test_one_class_is_said_in_the_singular(tmp_path):
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x)).save(tmp_path / "one.keras")
    with pytest.raises(ValueError, match=r"outputs 1 class, but the data has 7 classes"):
        models.load(tmp_path / "one.keras", num_classes=7)


# --------------------------------------------------------------------------- predict: the one forward path


def test_predict_is_the_one_forward_path(tiny_model, residual_model, synthetic_small):
    from fervis import recipes, saliency

    x = synthetic_small.images[:10]
    probs = models.predict(tiny_model, x, batch_size=4)
    np.testing.assert_allclose(probs, tiny_model(x[..., None].astype(np.float32)).numpy(), rtol=1e-5, atol=1e-7)
    # saliency.predict and recipes.predict (no TTA) are this function: the same numbers, one cached graph
    np.testing.assert_array_equal(saliency.predict(tiny_model, x, batch_size=4), probs)
    np.testing.assert_array_equal(recipes.predict(tiny_model, x, batch_size=4), probs)
    assert models.forward_graph(tiny_model) is models.forward_graph(tiny_model)
    assert models.predict(residual_model, np.zeros((0, 48, 48))).shape == (0, residual_model.output_shape[-1])


@pytest.mark.parametrize("kwargs, match", [
    ({"images": np.zeros((2, 32, 32))}, "'images' parameter of fervis.models.predict must be shaped"),
    ({"batch_size": 0}, "'batch_size' parameter of fervis.models.predict must be an int >= 1"),
    ({"model": "a file"}, "'model' parameter of fervis.models.predict must be a keras.Model"),
])
def test_predict_rejects_bad_input(tiny_model, kwargs, match):
    args = {"model": tiny_model, "images": np.zeros((2, 48, 48)), "batch_size": 8} | kwargs
    with pytest.raises(ValueError, match=match):
        models.predict(**args)


# --------------------------------------------------------------------------- one softmax rule, one confusion matrix


def test_bypass_softmax_follows_live_weights_and_to_logits_is_a_copy():
    model = models.build("tiny", seed=0)
    x = np.random.default_rng(0).uniform(0, 255, (3, 48, 48, 1)).astype("float32")
    assert models.softmax_layer(model) is model.get_layer("predictions")
    probs = np.asarray(model(x))
    copy = models.to_logits(model)
    with models.bypass_softmax(model) as same:
        logits = np.asarray(same(x))
    assert same is model
    np.testing.assert_allclose(np.asarray(copy(x)), logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(keras.ops.softmax(logits)), probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(model(x)), probs)  # restored on leaving the block
    dense = model.get_layer("predictions")
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel, bias + np.arange(7, dtype="float32")])  # the model trains on
    with models.bypass_softmax(model):
        live = np.asarray(model(x))
    np.testing.assert_allclose(live, logits + np.arange(7), rtol=1e-5, atol=1e-4)  # follows the new weights
    np.testing.assert_allclose(np.asarray(copy(x)), logits, rtol=1e-5, atol=1e-5)  # the copy does not


def test_one_softmax_rule_for_nested_models_and_logit_outputs():
    inner = models.build("tiny", seed=0)
    inputs = keras.Input((48, 48, 1))
    outer = keras.Model(inputs, inner(inputs), name="outer")
    assert models.softmax_layer(outer) is inner.get_layer("predictions")
    logits_model = keras.Model(inputs, keras.layers.Dense(7, name="scores")(keras.layers.Flatten()(inputs)))
    assert models.softmax_layer(logits_model) is None and models.output_layer(logits_model).name == "scores"
    x = np.ones((1, 48, 48, 1), "float32")
    with models.bypass_softmax(logits_model):  # nothing to bypass: the model is left as it is
        np.testing.assert_array_equal(np.asarray(logits_model(x)), np.asarray(logits_model(x)))
    with pytest.raises(ValueError, match="must come from a softmax \\(or sigmoid\\) layer for to_logits.*'scores'"):
        models.to_logits(logits_model)


def test_confusion_matrix_rows_true_columns_predicted_recall_and_precision():
    y_true, y_pred = np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2])
    counts = models.confusion_matrix(y_true, y_pred, 4)
    assert counts.dtype == np.int64 and counts.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    np.testing.assert_allclose(models.class_recall(counts), [0.5, 1.0, 2 / 3, np.nan])
    # precision by column: class 3 is never predicted (NaN, not scikit-learn's zero_division 0)
    np.testing.assert_allclose(models.class_precision(counts), [0.5, 0.5, 1.0, np.nan])
    from sklearn.metrics import precision_score
    assert models.class_precision(counts)[:3].tolist() == pytest.approx(
        precision_score(y_true, y_pred, labels=[0, 1, 2], average=None).tolist())
    assert models.confusion_matrix(y_true, y_pred, 4, normalize="true")[2].tolist() == pytest.approx([1 / 3, 0, 2 / 3, 0])
    assert models.confusion_matrix([], [], 3).tolist() == [[0] * 3] * 3
