"""fervis.contract: a zoo of user-style models, trained here on the synthetic faces the ways people
train them, must each be read right: the contract found is the true one, evaluation under it
matches the accuracy under the true preprocessing, and every explanation runs on the adapted model.
"""

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from fervis import contract, models, saliency, stats, training
from fervis.constants import CLASS_NAMES

ALPHABETICAL = tuple(sorted(CLASS_NAMES))
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406], "float32"), np.array([0.229, 0.224, 0.225], "float32")


def preprocess(faces, convention, size=48, channels=1):
    """The user's own preprocessing, written as homework writes it (not with fervis.models.preprocess)."""
    x = np.asarray(faces, np.float32).reshape(-1, 48, 48, 1)
    if size != 48:
        x = tf.image.resize(x, (size, size)).numpy()
    if channels == 3:
        x = np.repeat(x, 3, axis=-1)
    if convention == "0-1":
        return x / 255.0
    if convention == "-1-1":
        return x / 127.5 - 1.0
    if convention == "standardized":
        mean, std = x.mean(axis=(1, 2, 3), keepdims=True), x.std(axis=(1, 2, 3), keepdims=True)
        return (x - mean) / np.maximum(std, 1e-6)
    if convention == "imagenet":
        return (x / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return x


def small_cnn(shape, head="softmax", rescale=False):
    inputs = keras.Input(shape)
    x = keras.layers.Rescaling(1 / 255.0, name="own_scale")(inputs) if rescale else inputs
    x = keras.layers.Conv2D(8, 3, activation="relu", padding="same")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, activation="relu", padding="same")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(7, activation=head)(x))


def all_conv_64():
    """64x64 all-convolutional: strided convolutions, a classifier convolution over the whole map."""
    inputs = keras.Input((64, 64, 1))
    x = inputs
    for width in (16, 32, 32):
        x = keras.layers.Conv2D(width, 3, strides=2, activation="relu", padding="same")(x)
    x = keras.layers.Flatten()(keras.layers.Conv2D(7, 8, name="classifier_conv")(x))
    return keras.Model(inputs, keras.layers.Activation("softmax")(x))


def nested_rgb():
    """An RGB 64x64 classifier around a nested keras.applications backbone (weights=None): MobileNetV2's
    first blocks (stride 4), which keep where a cue is; its whole depth pools the synthetic faces' small
    cues away and does not learn them in a test's seconds."""
    full = keras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, include_top=False, weights=None)
    backbone = keras.Model(full.input, full.get_layer("block_3_expand_relu").output, name="mobilenetv2_stem")
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(16, 1, activation="relu", name="head_conv")(backbone(inputs))
    x = keras.layers.Flatten()(keras.layers.MaxPooling2D()(x))
    return keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(x))


# name: (build, convention, size, channels, class order, output, epochs)
ZOO = {
    "unit": (lambda: small_cnn((48, 48, 1)), "0-1", 48, 1, CLASS_NAMES, "probabilities", 15),
    "rescaling": (lambda: small_cnn((48, 48, 1), rescale=True), "0-255", 48, 1, CLASS_NAMES, "probabilities", 15),
    "standardized": (lambda: small_cnn((48, 48, 1)), "standardized", 48, 1, CLASS_NAMES, "probabilities", 15),
    "all_conv_64": (all_conv_64, "-1-1", 64, 1, CLASS_NAMES, "probabilities", 20),
    "alphabetical": (lambda: small_cnn((48, 48, 1)), "0-1", 48, 1, ALPHABETICAL, "probabilities", 15),
    # Not 0-255: a ReLU network with small biases gives nearly the same argmax for x and x / 255.
    "logits": (lambda: small_cnn((48, 48, 1), head=None), "-1-1", 48, 1, CLASS_NAMES, "logits", 15),
    # One-vs-rest homework: a sigmoid per class, trained with binary cross-entropy on one-hot labels.
    "sigmoid": (lambda: small_cnn((48, 48, 1), head="sigmoid"), "0-1", 48, 1, CLASS_NAMES, "sigmoid", 15),
    "rgb_backbone": (nested_rgb, "imagenet", 64, 3, CLASS_NAMES, "probabilities", 10),
}


@pytest.fixture(scope="module")
def zoo(synthetic_small):
    """Each model of ZOO trained on the synthetic Training faces as its user would."""
    train = synthetic_small.subset("Training")
    trained = {}
    for name, (build, convention, size, channels, order, output, epochs) in ZOO.items():
        keras.utils.set_random_seed(0)
        model = build()
        x = preprocess(train.images, convention, size, channels)
        y = np.array([order.index(CLASS_NAMES[label]) for label in train.labels])
        if output == "sigmoid":
            model.compile(keras.optimizers.Adam(1e-3), keras.losses.BinaryCrossentropy())
            y = keras.utils.to_categorical(y, 7)
        else:
            model.compile(keras.optimizers.Adam(1e-3),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=output == "logits"))
        model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
        if name == "rgb_backbone":  # its batch norms' running averages lag far behind a short training
            training.recalibrate_batchnorm(model, x, progress=False)
        trained[name] = model
    return trained


def true_accuracy(name, model, dataset):
    _, convention, size, channels, order, _, _ = ZOO[name]
    predicted = model.predict(preprocess(dataset.images, convention, size, channels), verbose=0).argmax(axis=1)
    return float(np.mean(np.array([CLASS_NAMES.index(order[i]) for i in predicted]) == dataset.labels))


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_contract_is_the_true_one(zoo, synthetic_small, name):
    _, convention, size, channels, order, output, _ = ZOO[name]
    model, test = zoo[name], synthetic_small.subset("PublicTest")
    found = contract.inspect(model, test)
    assert (found.input_shape, found.model_input, found.class_order, found.output) == (
        (size, size, channels), convention, tuple(order), output), found
    assert found.classifies, found
    if found.decided["model_input"] == "default":  # a tie, broken by the plainest convention: said, with the setting
        tie = next(w for w in found.warnings if "do not tell the input convention apart" in w)
        assert "MODEL_INPUT" in tie and tie.count("% (95 % CI ") >= 2, tie
    else:
        assert found.decided["model_input"] in ("detected", "model"), found
    assert found.n == len(test) and found.faces == "PublicTest faces"
    truth = true_accuracy(name, model, test)
    assert truth > 0.45, f"{name} did not learn ({truth:.3f}): the test would prove nothing"
    assert abs(training.evaluate(contract.apply(model, found), synthetic_small)["accuracy"] - truth) <= 0.005
    assert f"{100 * truth:.1f} %" in found.verdict and f"on {len(test)} PublicTest faces" in found.verdict
    # the chosen convention's own entry is the contract's figure, in the class order it uses
    assert found.scores[found.model_input] == (found.accuracy, found.n, found.interval)
    if found.decided["class_order"] == "detected":  # the order's evidence: both figures on the same faces, tested
        assert any(f"order on the same {len(test):,} faces (McNemar p" in e for e in found.evidence), found.evidence
    # every other convention's figure carries its interval and n, also when it was scored on all the faces
    others = [name for name in found.scores if name != found.model_input]
    tail = found.verdict.split(" faces")[-1]
    assert tail.count(", n = ") == tail.count(" (95 % CI ") == len(others) > 0
    for name in others:
        accuracy, n, (low, high) = found.scores[name]
        assert low <= accuracy <= high and (low, high) == stats.wilson(round(accuracy * n), n)
        assert f"{100 * accuracy:.1f} % (95 % CI {100 * low:.1f}–{100 * high:.1f}, n = {n:,})" in tail


def explanations_run(adapted, faces):
    """All seven saliency methods, activation maximisation, feature maps and LIME on ``adapted``."""
    from fervis import filters, labels, saliency

    for method in saliency.METHODS:
        maps = saliency.explain(adapted, faces, method=method, top_n=4, samples=4, steps=4)
        assert maps.shape == (2, 48, 48) and np.isfinite(maps).all(), method
    layer = models.conv_layers(adapted)[-1]
    assert filters.maximize(adapted, layer, [0], steps=4).images.shape[0] == 1
    assert filters.feature_maps(adapted, faces, layer).shape[0] == 2
    lime = labels.lime_explain(adapted, faces[:1], num_samples=50, num_segments=10)
    assert lime.shape == (1, 48, 48) and np.isfinite(lime).all()


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_every_explanation_runs_on_the_adapted_model(zoo, synthetic_small, name):
    adapted = contract.apply(zoo[name], contract.inspect(zoo[name], synthetic_small.subset("PublicTest")))
    explanations_run(adapted, synthetic_small.subset("PublicTest").images[:2])


def test_a_sigmoid_model_is_read_as_one_and_explained_on_its_logits(zoo, synthetic_small):
    """A final sigmoid scores each class on its own: the contract says so (from the layer, also without
    faces), and the adapted model outputs the softmax of the logits before it: a distribution with the
    sigmoid's ranking, not the sigmoid scores (whose rows do not sum to 1) read as probabilities."""
    model, test = zoo["sigmoid"], synthetic_small.subset("PublicTest")
    found = contract.inspect(model, test)
    assert found.decided["output"] == "model" and "a sigmoid score per class (model)" in found.verdict
    assert any("ends in a sigmoid" in e and "row sums" in e for e in found.evidence), found.evidence
    assert contract.inspect(model).output == "sigmoid" and not found.native
    x = preprocess(test.images, "0-1")
    scores = model.predict(x, verbose=0)
    assert not np.allclose(scores.sum(axis=1), 1.0, atol=0.05)  # what the test would otherwise prove nothing about
    adapted = contract.apply(model, found)
    probabilities = adapted.predict(test.x(), verbose=0)
    logits = models.to_logits(model).predict(x, verbose=0)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), scores, atol=1e-5)  # the logits before the sigmoid
    np.testing.assert_allclose(probabilities, tf.nn.softmax(logits).numpy(), atol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), scores.argmax(axis=1))
    assert models.output_activation(model) == "sigmoid" and models.output_activation(adapted) == "softmax"
    with pytest.raises(ValueError, match=r"'output' parameter .* does not end in a sigmoid, so 'probabilities'\. "
                                         r"Got 'sigmoid' instead"):
        models.adapt(zoo["unit"], (48, 48, 1), "0-1", output="sigmoid")
    # What the last layer does is not the user's to contradict: sigmoid scores are neither probabilities nor logits.
    for wrong in ("probabilities", "logits"):
        with pytest.raises(ValueError, match=rf"'output' parameter .* ends in a sigmoid, so 'sigmoid'\. Got '{wrong}'"):
            models.adapt(model, (48, 48, 1), "0-1", output=wrong)
        with pytest.raises(ValueError, match=rf"'output' setting \('{wrong}'\) contradicts model .* is a sigmoid"):
            contract.inspect(model, test, output=wrong)
    with pytest.raises(ValueError, match=r"'output' setting \('sigmoid'\) contradicts model .* not sigmoid scores"):
        contract.inspect(zoo["unit"], test, output="sigmoid")
    # reordered classes on a sigmoid model: the permutation acts on the same logits
    reordered = models.adapt(model, (48, 48, 1), "0-1", output="sigmoid", class_order=list(reversed(CLASS_NAMES)))
    np.testing.assert_allclose(reordered.predict(test.x(), verbose=0), probabilities[:, ::-1], atol=1e-5)


def test_adapted_zoo_model_saves_and_loads_under_safe_mode(zoo, synthetic_small, tmp_path):
    test = synthetic_small.subset("PublicTest")
    adapted = contract.apply(zoo["alphabetical"], contract.inspect(zoo["alphabetical"], test))
    adapted.save(tmp_path / "adapted.keras")
    loaded = models.load(tmp_path / "adapted.keras", num_classes=7)
    np.testing.assert_allclose(loaded.predict(test.x()[:8], verbose=0), adapted.predict(test.x()[:8], verbose=0),
                               atol=1e-5)
    assert contract.inspect(loaded, test).native  # adapted once is adapted for good


def test_fervis_models_are_native(tiny_model, synthetic_small):
    found = contract.inspect(tiny_model, synthetic_small.subset("PublicTest"))
    assert found.native and contract.apply(tiny_model, found) is tiny_model
    assert found.decided["model_input"] in ("detected", "model")
    assert any("Rescaling layer 'scale'" in line for line in found.evidence)


def test_faces_grouped_by_class_are_screened_fairly(zoo, synthetic_small):
    """The per-image folder release reads faces class by class: the 250-face screen must still see every class."""
    public = synthetic_small.subset("PublicTest")
    grouped = public.take(np.argsort(public.labels, kind="stable"))
    found = contract.inspect(zoo["alphabetical"], grouped)
    assert (found.model_input, found.class_order) == ("0-1", ALPHABETICAL)
    assert found.accuracy == contract.inspect(zoo["alphabetical"], public).accuracy


def test_untrained_model_does_not_classify(synthetic_small):
    keras.utils.set_random_seed(1)
    found = contract.inspect(small_cnn((48, 48, 1)), synthetic_small.subset("PublicTest"))
    assert found.classifies is False
    assert any("does not seem to classify these faces" in w and "always answering" in w for w in found.warnings)
    # One answer for every face (a collapsed homework model): it fits any class order as well as another, so no
    # order is suggested and no tie is reported beside the one warning that matters.
    inputs = keras.Input((48, 48, 1))
    constant = keras.layers.Dense(7, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(
        [0.0, 5.0, 0, 0, 0, 0, 0]), activation="softmax")(keras.layers.Flatten()(inputs))
    collapsed = contract.inspect(keras.Model(inputs, constant, name="collapsed"), synthetic_small.subset("PublicTest"))
    assert collapsed.classifies is False and collapsed.suggestion is None
    assert len(collapsed.warnings) == 1 and "cannot be read from them either" in collapsed.warnings[0], collapsed.warnings
    assert "% at best on " in collapsed.warnings[0]
    # declared, only that range was tried: the warning says so
    declared = contract.inspect(keras.Model(inputs, constant, name="collapsed"), synthetic_small.subset("PublicTest"),
                                model_input="0-1")
    assert "% at best with the declared 0–1 pixels on " in declared.warnings[-1], declared.warnings


def test_declared_beats_detected(zoo, synthetic_small):
    test = synthetic_small.subset("PublicTest")
    found = contract.inspect(zoo["unit"], test, model_input="0-255", class_order="alphabetical")
    assert (found.model_input, found.class_order) == ("0-255", ALPHABETICAL)
    assert found.decided["model_input"] == found.decided["class_order"] == "declared"
    listed = ",".join(ALPHABETICAL)
    assert contract.inspect(zoo["alphabetical"], test, class_order=listed).class_order == ALPHABETICAL


def test_conventions_that_classify_alike_are_told_apart_by_calibration(synthetic_small):
    """A network without biases is homogeneous: fed 0-255 instead of 0-1 it ranks every face exactly as before, so
    accuracy cannot tell the two apart, but it answers with near-certainty. The convention whose confidences match
    its accuracy is the one it was trained with (the new-user trial's /255 homework model got 0-255 by default)."""
    train, test = synthetic_small.subset("Training"), synthetic_small.subset("PublicTest")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((48, 48, 1)),
                              keras.layers.Conv2D(8, 3, activation="relu", use_bias=False), keras.layers.MaxPooling2D(4),
                              keras.layers.Flatten(), keras.layers.Dense(7, use_bias=False)], name="no_bias")
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(preprocess(train.images, "0-1"), train.labels, epochs=10, batch_size=32, verbose=0)
    found = contract.inspect(model, test)
    assert found.scores["0-1"][0] == found.scores["0-255"][0]  # the same ranking: a tie McNemar cannot break
    assert found.model_input == "0-1" and found.decided["model_input"] == "detected", found
    sentence = next(e for e in found.evidence if "classify these faces alike" in e)
    assert "only under 0–1 do its confidences match its accuracy" in sentence and "paired bootstrap" in sentence
    assert not any("do not tell the input convention apart" in w for w in found.warnings)


def test_declared_convention_contradicting_the_models_rescaling(zoo):
    with pytest.raises(ValueError, match=r"'model_input' setting \('0-1'\) contradicts model .*Rescaling layer "
                                         r"'own_scale'"):
        contract.inspect(zoo["rescaling"], None, model_input="0-1")
    # Keras's tutorial layout: random augmentation layers (the identity at inference) before the Rescaling.
    tutorial = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.RandomFlip("horizontal"),
                                 keras.layers.RandomRotation(0.1), keras.layers.RandomZoom(0.1),
                                 keras.layers.Rescaling(1 / 255.0, name="tutorial_scale"), keras.layers.Flatten(),
                                 keras.layers.Dense(7, activation="softmax")])
    found = contract.inspect(tutorial)
    assert found.model_input == "0-255" and found.decided["model_input"] == "model", found
    with pytest.raises(ValueError, match=r"'model_input' setting \('0-1'\) contradicts .*'tutorial_scale'"):
        contract.inspect(tutorial, None, model_input="0-1")


def test_without_labels_the_default_is_used_and_named(zoo, synthetic_small):
    public = synthetic_small.subset("PublicTest")
    unlabelled = dataclasses.replace(public, labels=np.full(len(public), -1))
    found = contract.inspect(zoo["unit"], unlabelled)
    assert (found.model_input, found.decided["model_input"], found.n) == ("0-255", "default", 0)
    assert any("MODEL_INPUT" in w and "--model-input" in w for w in found.warnings)
    assert contract.inspect(zoo["rescaling"], None).decided["model_input"] == "model"


def test_an_order_neither_fer_nor_alphabetical_is_suggested(zoo, synthetic_small):
    # The unit model with its outputs shifted by one class: neither candidate fits.
    shifted_order = CLASS_NAMES[1:] + CLASS_NAMES[:1]
    inner = zoo["unit"]
    perm = np.zeros((7, 7), np.float32)
    perm[np.arange(7), [(i + 1) % 7 for i in range(7)]] = 1  # output j+1 holds class j
    inputs = keras.Input((48, 48, 1))
    mixed = keras.layers.Dense(7, use_bias=False, trainable=False)
    outputs = mixed(inner(inputs))
    mixed.set_weights([perm])
    found = contract.inspect(keras.Model(inputs, outputs), synthetic_small.subset("PublicTest"))
    assert found.suggestion == tuple(CLASS_NAMES[-1:] + CLASS_NAMES[:-1]) != shifted_order
    assert any("fit neither FER2013's nor the alphabetical order" in w and " on the same " in w and "McNemar p" in w
               for w in found.warnings)


@pytest.mark.parametrize("build, kwargs, match", [
    (lambda: keras.Sequential([keras.Input((40,)), keras.layers.Dense(7, activation="softmax")]), {},
     r"takes inputs shaped \(None, 40\), which cannot be made from grey faces"),
    (lambda: small_cnn((48, 48, 4)), {}, "cannot be made from grey faces"),
    (lambda: keras.Sequential([keras.Input((48, 48)), keras.layers.Flatten(), keras.layers.Dense(7)]), {},
     r"grey images without a channel axis.* fervis\.models\.adapt\(model, input_shape=\(48, 48, 1\), scale=\.\.\., output='logits'\)"),
    (lambda: keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Flatten(), keras.layers.Dense(5)]), {},
     r"outputs shape \(None, 5\); fervis needs \(n, 7\)"),
    (lambda: small_cnn((48, 48, 1)), {"model_input": "0-100"}, "'model_input' parameter of fervis.contract.inspect"),
    (lambda: small_cnn((48, 48, 1)), {"model_input": "imagenet"}, "per-channel RGB convention"),
    (lambda: small_cnn((48, 48, 1)), {"class_order": "reverse"}, "'class_order' parameter of fervis.contract"),
    (lambda: small_cnn((48, 48, 1)), {"class_order": ["happy"] * 7}, "once each"),
    (lambda: small_cnn((48, 48, 1)), {"output": "scores"}, "'output' parameter of fervis.contract.inspect"),
    (lambda: "model.keras", {}, "'model' parameter of fervis.contract.inspect must be a keras.Model"),
])
def test_bad_input_is_named(build, kwargs, match):
    with pytest.raises(ValueError, match=match):
        contract.inspect(build(), None, **kwargs)


def test_a_whole_dataset_is_read_on_its_held_out_faces(zoo, synthetic_small):
    """Training faces would flatter a model trained on them: with other splits beside them, they are left out."""
    whole = contract.inspect(zoo["alphabetical"], synthetic_small, max_faces=100_000)
    held_out = synthetic_small.take(np.asarray(synthetic_small.splits) != "Training")
    assert whole.faces == " and ".join(sorted(set(held_out.splits))) + " faces" and "Training" not in whole.faces
    assert whole.n == len(held_out) < len(synthetic_small)
    only_training = contract.inspect(zoo["alphabetical"], synthetic_small.subset("Training"), max_faces=200)
    assert only_training.faces == "Training faces" and only_training.n == 200


def test_a_grey_model_without_a_channel_axis_works_through_the_adapter_the_error_names(synthetic_small):
    inputs = keras.Input((48, 48))
    x = keras.layers.Rescaling(1 / 255.0)(keras.layers.Reshape((48, 48, 1))(inputs))
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(keras.layers.Flatten()(x)))
    adapted = models.adapt(model, input_shape=(48, 48, 1), scale="0-255")
    faces = synthetic_small.images[:3].astype("float32")
    np.testing.assert_allclose(adapted(faces[..., None]), model(faces), atol=1e-6)
    assert contract.inspect(adapted, synthetic_small.subset("PublicTest")).input_shape == (48, 48, 1)


def test_a_model_of_flattened_faces_works_through_the_adapter_the_error_names(synthetic_small, tmp_path):
    """FER2013's pixels are a string of 2,304 values per face: a homework MLP takes them flat. The contract
    names the adapter call; the adapter flattens the faces row by row, as numpy's reshape does."""
    train, test = synthetic_small.subset("Training"), synthetic_small.subset("PublicTest")
    keras.utils.set_random_seed(0)
    mlp = keras.Sequential([keras.Input((2304,)), keras.layers.Dense(32, activation="relu"),
                            keras.layers.Dense(7, activation="softmax")], name="mlp")
    mlp.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    mlp.fit(train.images.reshape(len(train), -1) / 255.0, train.labels, epochs=30, batch_size=32, verbose=0)
    with pytest.raises(ValueError, match=r"flattened images \(48×48×1, row by row\).*"
                                         r"models\.adapt\(model, input_shape=\(48, 48, 1\), scale=\.\.\.\)"):
        contract.inspect(mlp, test)
    adapted = models.adapt(mlp, input_shape=(48, 48, 1), scale="0-1")
    truth = mlp.predict(test.images.reshape(len(test), -1) / 255.0, verbose=0)
    assert (truth.argmax(axis=1) == test.labels).mean() > 0.3  # it learned (chance: 1 in 7): the contract has evidence
    np.testing.assert_allclose(adapted.predict(test.x(), verbose=0), truth, atol=1e-5)
    found = contract.inspect(adapted, test)
    assert found.native and found.classifies, found
    for method in ("gradient", "integrated_gradients"):  # no convolution: the CAM methods have no map to read
        maps = saliency.explain(adapted, test.x()[:2], method=method, steps=4)
        assert np.isfinite(maps).all() and (np.abs(maps).reshape(2, -1).max(axis=1) > 0).all()
    with pytest.raises(ValueError, match=r"'input_shape' parameter .* which is \(2304,\) \(flattened images of as "
                                         r"many pixels\)\. Got \(64, 64, 1\) instead"):
        models.adapt(mlp, input_shape=(64, 64, 1), scale="0-1")
    with pytest.raises(ValueError, match=r"'input_shape' parameter .* flattened images: the \(height, width, channels\)"):
        models.adapt(mlp, input_shape=None, scale="0-1")
    adapted.save(tmp_path / "flat.keras")  # built-in layers only: it saves and loads under safe mode
    np.testing.assert_allclose(models.load(tmp_path / "flat.keras", num_classes=7).predict(test.x()[:4], verbose=0),
                               truth[:4], atol=1e-5)
    # The suggested call carries the output the last layer has: a sigmoid MLP's says so.
    sigmoid_mlp = keras.Sequential([keras.Input((2304,)), keras.layers.Dense(7, activation="sigmoid")])
    with pytest.raises(ValueError, match=r"adapt\(model, input_shape=\(48, 48, 1\), scale=\.\.\., output='sigmoid'\)"):
        contract.inspect(sigmoid_mlp, test)
    assert models.adapt(sigmoid_mlp, (48, 48, 1), "0-1", output="sigmoid").output_shape == (None, 7)


def test_contract_to_dict_is_json(zoo, synthetic_small):
    found = contract.inspect(zoo["alphabetical"], synthetic_small.subset("PublicTest"))
    data = json.loads(json.dumps(found.to_dict()))
    assert data["class_order"] == list(ALPHABETICAL) and data["verdict"] == found.verdict
    assert data["scores"]["0-1"]["n"] == found.n and not data["native"]
    assert data["scores"]["0-1"]["interval"] == list(found.scores["0-1"][2])
    assert str(found).splitlines()[0] == f"model contract: {found.verdict}"


def test_cli_evaluate_reads_a_third_party_file_right(zoo, synthetic_small, tmp_path, capsys):
    from fervis import cli

    path = tmp_path / "homework.keras"
    zoo["all_conv_64"].save(path)
    assert cli.main(["evaluate", "--model", str(path), "--data", "synthetic", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["contract"]["model_input"] == "-1-1" and out["contract"]["input_shape"] == [64, 64, 1]
    from fervis import data as data_mod

    public = data_mod.load("synthetic").subset("PublicTest")  # the accuracy printed is the model's real one
    assert abs(out["accuracy"] - true_accuracy("all_conv_64", zoo["all_conv_64"], public)) <= 0.005
    assert cli.main(["evaluate", "--model", str(path), "--data", "synthetic", "--model-input", "0-255"]) == 0
    captured = capsys.readouterr()
    assert "pixels in 0–255 (declared)" in captured.out
    assert cli.main(["evaluate", "--model", str(path), "--data", "synthetic", "--class-order", "happy"]) == 2
    assert "class_order" in capsys.readouterr().err
    assert cli.main(["evaluate", "--model", str(path), "--data", "synthetic", "--model-input", "-1-1"]) == 2
    assert "write --model-input=-1-1" in capsys.readouterr().err


def test_session_reads_a_users_model_file(zoo, tmp_path):
    from fervis import session

    path = tmp_path / "alphabetical.keras"
    zoo["alphabetical"].save(path)
    s = session.prepare("synthetic", str(path), "quick")
    assert s.contract.class_order == ALPHABETICAL and s.model.input_shape == (None, 48, 48, 1)
    assert s.contract.decided["class_order"] == "detected"
    with pytest.raises(ValueError, match="'class_order' parameter of fervis.session.prepare"):
        session.prepare("synthetic", str(path), "quick", class_order="backwards")


# --------------------------------------------------------------------------- real faces


def _wrap(inner, shape, head):
    """A third-party-style model around the shipped one: other input size, channels, range, order, output."""
    inputs = keras.Input(shape)
    x = inputs
    if shape[:2] != (48, 48):
        x = keras.layers.Resizing(48, 48)(x)
    if shape[-1] == 3:
        grey = keras.layers.Dense(1, use_bias=False, trainable=False, name="to_grey")
        x = grey(x)
        grey.set_weights([np.full((3, 1), 1 / 3, np.float32)])
    return inputs, x


@pytest.fixture(scope="module")
def fer2013_public(fer2013_path):
    from fervis import data

    return data.load(fer2013_path).subset("PublicTest")


def test_real_faces_homework_models_are_read_right(fer2013_public):
    shipped = models.load_pretrained("fer2013")
    logits = models.to_logits(shipped)
    # A /255 model, 48x48 grey.
    inputs, x = _wrap(shipped, (48, 48, 1), None)
    unit = keras.Model(inputs, shipped(keras.layers.Rescaling(255.0)(x)), name="unit_fer")
    # An RGB 64x64 [-1, 1] model with alphabetical classes and a logits output.
    inputs, x = _wrap(logits, (64, 64, 3), None)
    reorder = keras.layers.Dense(7, use_bias=False, trainable=False)
    out = reorder(logits(keras.layers.Rescaling(127.5, offset=127.5)(x)))
    reorder.set_weights([np.eye(7, dtype=np.float32)[:, [CLASS_NAMES.index(n) for n in ALPHABETICAL]]])
    rgb = keras.Model(inputs, out, name="rgb_fer")
    # A sigmoid per class (one-vs-rest) on the shipped model's logits.
    inputs = keras.Input((48, 48, 1))
    sigmoid = keras.Model(inputs, keras.layers.Activation("sigmoid")(logits(inputs)), name="sigmoid_fer")
    cases = [(unit, "unit", "0-1", (48, 48, 1), CLASS_NAMES, "probabilities"),
             (rgb, "rgb", "-1-1", (64, 64, 3), ALPHABETICAL, "logits"),
             (sigmoid, "sigmoid", "0-255", (48, 48, 1), CLASS_NAMES, "sigmoid")]
    faces = fer2013_public.sample(1000, stratify=True, seed=0)
    for model, label, convention, shape, order, output in cases:
        found = contract.inspect(model, faces)
        assert (found.model_input, found.input_shape, found.class_order, found.output) == (
            convention, shape, tuple(order), output), (label, str(found))
        assert found.classifies and found.n == 1000 and "PublicTest faces" in found.verdict
        predicted = model.predict(preprocess(faces.images, convention, shape[0], shape[2]), verbose=0).argmax(1)
        truth = np.mean(np.array([CLASS_NAMES.index(order[i]) for i in predicted]) == faces.labels)
        assert truth > 0.6, label
        adapted = contract.apply(model, found)
        assert abs(training.evaluate(adapted, faces, split=None)["accuracy"] - truth) <= 0.005
        explanations_run(adapted, faces.images[:2])
