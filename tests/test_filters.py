"""Tests for fervis.filters (notebook 2): activation maximisation, feature maps, exemplars."""

import dataclasses

import keras
import numpy as np
import pytest
from scipy.stats import binomtest
import tensorflow as tf

from fervis import filters, models, plots
from fervis.constants import CLASS_NAMES


@pytest.fixture(scope="module")
def faces(synthetic_small):
    return synthetic_small.subset("PublicTest")


@pytest.fixture(scope="module")
def live(tiny_model, faces):
    """The four filters of the tiny model's block2_act that faces drive hardest (chosen from the
    data, because CPU training is not repeatable bit for bit)."""
    best = filters.feature_maps(tiny_model, faces, "block2_act").mean(axis=(1, 2)).max(axis=0)
    return sorted(np.argsort(-best)[:4].tolist())


@pytest.fixture(scope="module")
def ascents(tiny_model, faces, live):
    """Both presets on the same filters of the tiny fixture model (16 steps under the cap)."""
    return {preset: filters.maximize(tiny_model, "block2_act", live, preset=preset, dataset=faces)
            for preset in ("naive", "readable")}


@pytest.fixture(scope="module")
def third_party():
    """A classifier with its own layer names, 64x64 RGB input in [0, 1], logits out."""
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="tp_conv1")(inputs)
    x = keras.layers.ReLU(name="tp_relu")(x)
    x = keras.layers.MaxPooling2D(2, name="tp_pool")(x)
    x = keras.layers.Conv2D(6, 3, name="tp_conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="tp_gap")(x)
    outputs = keras.layers.Dense(7, name="tp_logits")(x)
    inner = keras.Model(inputs, outputs, name="third_party")
    return models.adapt(inner, input_shape=(64, 64, 3), scale=(0.0, 1.0), output="logits")


def _support(model, layer_name, row, col):
    """Bounding box (y0, x0, y1, x1) of the input pixels unit (row, col) depends on, from a
    gradient computed in a tf.function (never eagerly: see the oneDNN trap)."""
    part = models.truncate_at(model, layer_name)
    x = tf.constant(np.random.default_rng(1).uniform(0, 255, (1, 48, 48, 1)).astype(np.float32))

    @tf.function
    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            unit = tf.reduce_sum(part(x, training=False)[0, row, col, :])
        return tape.gradient(unit, x)

    ys, xs = np.nonzero(grad(x).numpy()[0, ..., 0])
    return ys.min(), xs.min(), ys.max() + 1, xs.max() + 1


# --------------------------------------------------------------------------- maximize


def test_maximize_returns_images_and_numbers(ascents, tiny_model, faces, live):
    result = ascents["readable"]
    assert result.images.shape == (len(live), 48, 48) and result.images.dtype == np.float32
    assert result.images.min() >= 0 and result.images.max() <= 255
    assert result.filter_idx.tolist() == live and result.steps == 16
    # the activation reported is the layer's mean output on the returned image
    maps = filters.feature_maps(tiny_model, result.images, "block2_act")
    recomputed = maps.mean(axis=(1, 2))[np.arange(len(live)), live]
    np.testing.assert_allclose(result.activation, recomputed, rtol=1e-4, atol=1e-5)
    # the fraction is relative to the best real face
    best = filters.feature_maps(tiny_model, faces, "block2_act").mean(axis=(1, 2))[:, live].max(axis=0)
    np.testing.assert_allclose(result.fraction, result.activation / best, rtol=1e-4)
    # and the ascent beats a plain grey face by far
    grey = filters.feature_maps(tiny_model, np.full((1, 48, 48), 128.0), "block2_act").mean(axis=(1, 2))[0]
    assert (result.activation > grey[live] + 0.05).all()
    assert list(result.to_frame().columns) == ["filter_idx", "seed", "activation", "fraction", "noise", "fraction note"]


def _gated_model(threshold=170.0, size=9):
    """One ``size`` x ``size`` mean filter behind a ReLU that fires only where the face is
    brighter than ``threshold``: silent everywhere on grey noise (127.5 +- 20); a 9x9 mean of
    full-range noise does not reach 170 either (6 spreads above its mean), a bright face does."""
    inputs = keras.Input((48, 48, 1))
    conv = keras.layers.Conv2D(1, size, padding="same", name="gate_conv")
    x = keras.layers.ReLU(name="gate_act")(conv(inputs))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    dense = keras.layers.Dense(7, activation="softmax", name="predictions")
    model = keras.Model(inputs, dense(x), name="gated")
    conv.set_weights([np.full((size, size, 1, 1), 1 / size ** 2, np.float32), np.array([-threshold], np.float32)])
    dense.set_weights([np.ones((1, 7), np.float32), np.zeros(7, np.float32)])
    return model


def test_naive_ascent_starts_where_a_silent_filter_is_alive(faces):
    model = _gated_model()
    grey = filters.feature_maps(model, np.full((1, 48, 48), 147.5), "gate_act")
    assert grey.max() == 0  # the brightest noise start: the filter is 0 everywhere, no gradient
    result = filters.maximize(model, "gate_act", 0, steps=8, preset="naive", seeds=2, dataset=faces)
    assert all(origin.startswith("face ") for origin in result.start)
    assert (result.activation > 0).all() and np.isfinite(result.fraction).all()
    # the seeds start from the filter's first and second most exciting faces
    means = filters.feature_maps(model, faces, "gate_act").mean(axis=(1, 2, 3))
    assert [int(o.split()[1]) for o in result.start] == np.argsort(-means)[:2].tolist()
    # without a dataset, fervis's own synthetic faces serve
    alone = filters.maximize(model, "gate_act", 0, steps=8, preset="naive")
    assert alone.start[0].startswith("face ") and alone.activation[0] > 0
    assert alone.fraction_note == ("no real faces given",) and np.isnan(alone.fraction).all()
    # a filter that no face excites keeps its noise start and says why it has no share
    dead = filters.maximize(_gated_model(threshold=1e4), "gate_act", 0, steps=4, preset="naive", dataset=faces)
    assert dead.start == ("noise",) and dead.activation[0] == 0
    assert dead.fraction_note[0].startswith("no face excites filter 0")
    text = filters.describe_presets(dead, dead)
    assert "undefined: naive ascent's mean activation is 0.00 (its filters are silent" in text
    assert "inf" not in text and "nan" not in text.lower()
    # where full-range noise wakes the filter (a 3x3 mean reaches 180 here and there), it starts
    # there, so the naive preset keeps its noisy look
    loud = filters.maximize(_gated_model(threshold=180.0, size=3), "gate_act", 0, steps=4, preset="naive",
                            dataset=faces)
    assert loud.start == ("full-range noise",) and loud.activation[0] > 0 and loud.noise[0] > 0.5
    assert "plain ascent started from full-range noise for 1 of its 1 images" in filters.describe_presets(loud, loud)


def test_share_of_best_face_is_undefined_near_zero(faces):
    """A signed filter whose faces sit around zero: the best face is within one spread of it,
    so the ascent's activation over it is a division by almost nothing (issue 20's 143.55)."""
    inputs = keras.Input((48, 48, 1))
    conv = keras.layers.Conv2D(1, 3, padding="same", name="signed_conv")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(conv(inputs))
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax", name="predictions")(x))
    conv.set_weights([np.full((3, 3, 1, 1), 1 / 9, np.float32), np.zeros(1, np.float32)])
    dark = faces.images.astype(np.float32) * 0.5  # darker than the grey noise the ascent starts from
    means = filters.feature_maps(model, dark, "signed_conv").mean(axis=(1, 2, 3))
    # a face's mean brightness minus (nearly) the brightest face's: every face below zero but one
    conv.set_weights([np.full((3, 3, 1, 1), 1 / 9, np.float32), np.array([-(means.max() - 0.01)], np.float32)])
    result = filters.maximize(model, "signed_conv", 0, steps=4, preset="naive", dataset=dark)
    assert 0 < result.dataset_max[0] < 0.1 and result.activation[0] > 1  # the old share: over 10x
    assert np.isnan(result.fraction[0]) and "within one spread" in result.fraction_note[0]
    table = filters.preset_table({("signed_conv", "naive"): result})
    assert table.loc[0, "share of best face"] == "undefined" and "within one spread" in table.loc[0, "note"]
    assert table.loc[0, "filters"] == 1


def _two_filter_model(second_scale=1.0, second_bias=0.0):
    """A 3x3 mean filter (0) and a scaled, shifted copy of it (1), each behind a ReLU."""
    inputs = keras.Input((48, 48, 1))
    conv = keras.layers.Conv2D(2, 3, padding="same", name="pair_conv")
    x = keras.layers.ReLU(name="pair_act")(conv(inputs))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax", name="predictions")(x))
    kernel = np.full((3, 3, 1, 2), 1 / 9, np.float32)
    kernel[..., 1] *= second_scale
    conv.set_weights([kernel, np.array([0.0, second_bias], np.float32)])
    return model


def test_share_of_best_face_is_undefined_for_a_filter_real_faces_barely_reach(faces):
    """A ReLU filter at 1e-4 of its neighbour's scale: its best face passes the spread test (a ReLU's
    always does) but a ratio to it says "10,000 % of the best face" (issue of a user's homework model)."""
    model = _two_filter_model(second_scale=1e-4)
    result = filters.maximize(model, "pair_act", [0, 1], steps=4, preset="naive", dataset=faces.images[:64])
    assert np.isfinite(result.fraction[0]) and np.isnan(result.fraction[1])
    assert result.fraction_note[1].startswith("real faces barely excite filter 1 (best mean activation ")
    assert f"under {filters.MIN_REFERENCE:.0%} of the layer's strongest" in result.fraction_note[1]
    assert result.to_frame()["fraction note"].tolist() == ["", result.fraction_note[1]]
    table = filters.preset_table({("pair_act", "naive"): result})
    assert table.loc[0, "share of best face"] == round(float(result.fraction[0]), 2)
    assert table.loc[0, "note"].startswith("share over 1 of 2 images; undefined for the rest: real faces barely")


def test_a_filter_that_never_fires_is_not_said_to_prefer_a_class(faces):
    """Filter 1 is shifted below zero everywhere: its "strongest" faces are just the first ones, so the
    table names no class for it and the sentence ranks only the filter that fires, with its counts."""
    model = _two_filter_model(second_bias=-1000.0)
    top = filters.top_activating(model, faces, "pair_act", k=5)
    table = top.to_frame(faces.labels, faces.class_names)
    assert table.loc[1, "peak"] == 0 and table.loc[1, "most common class"] == "none (never fires)"
    assert table.loc[1, "faces"] == 0 and np.isnan(table.loc[1, "share"]) and table.loc[0, "peak"] > 0
    counts = np.bincount(faces.labels[top.indices[0]], minlength=7)
    name = faces.class_names[int(counts.argmax())]
    base = float((faces.labels == int(counts.argmax())).mean())
    p = binomtest(int(counts.max()), 5, base, alternative="greater").pvalue
    assert filters.describe_exemplars(top, faces.labels, faces.class_names) == (
        f"Filter 0 of pair_act is the most selective of 2: {counts.max()} of the 5 faces that drive it hardest are "
        f"{name} ({name} is {base:.0%} of the {len(faces)} labelled faces searched; binomial p = {p:.2g}, "
        f"{'above' if p < 0.05 else 'not clearly above'} what a filter blind to expression would show). 1 of the 2 "
        f"filters never fire on these {len(faces)} faces.")
    dead = filters.top_activating(model, faces, "pair_act", [1], k=5)
    assert filters.describe_exemplars(dead, faces.labels, faces.class_names) == (
        f"No filter of pair_act shown fires on any of these {len(faces)} faces.")
    with pytest.raises(ValueError, match=r"'labels' parameter of fervis.filters.describe_exemplars must hold one "
                                         r"integer label \(-1: unlabelled\) per face searched by 'top'"):
        filters.describe_exemplars(top, faces.labels[:3], faces.class_names)
    with pytest.raises(ValueError, match=r"'top' parameter of fervis.filters.describe_exemplars must be Exemplars"):
        filters.describe_exemplars(table, faces.labels)


def _exemplars(values, indices):
    """Exemplars of a made-up layer: ``values`` and ``indices`` (filters x k), the rest left empty."""
    values, indices = np.asarray(values, np.float32), np.asarray(indices)
    f, k = values.shape
    rf = filters.ReceptiveField(size=(3, 3), jump=(1, 1), start=(0.0, 0.0))
    return filters.Exemplars(filter_idx=np.arange(f), indices=indices, values=values,
                             positions=np.zeros((f, k, 2), int), boxes=np.zeros((f, k, 4), int),
                             faces=np.zeros((f, k, 48, 48), np.uint8), crops=np.zeros((f, k, 3, 3), np.uint8),
                             receptive_field=rf, layer_name="made_up")


def test_exemplar_counts_only_faces_that_drive_the_filter_and_carry_a_label():
    """After a ReLU, faces past the last exciting one sit at 0 in dataset order, and -1 faces have no class:
    neither counts. One exciting face of one does not outrank three of four (Wilson lower bound)."""
    labels = np.array([0, 0, 0, 0, 3, 3, 3, -1, -1, -1, 5, 6])
    top = _exemplars([[9, 0, 0, 0, 0],    # filter 0: one face excites it, then zeros picked by order (angry)
                      [8, 7, 6, 5, 4],    # filter 1: 3 happy, 1 unlabelled, 1 surprise
                      [5, 4, 3, 0, 0],    # filter 2: only unlabelled faces excite it
                      [0, 0, 0, 0, 0]],   # filter 3: never fires
                     [[4, 0, 1, 2, 3], [4, 5, 6, 7, 10], [7, 8, 9, 0, 1], [0, 1, 2, 3, 4]])
    table = top.to_frame(labels, CLASS_NAMES)
    assert table["most common class"].tolist() == ["happy", "happy", "unlabelled", "none (never fires)"]
    assert table["count"].tolist() == [1, 3, 0, 0] and table["faces"].tolist() == [1, 4, 0, 0]
    assert table.loc[1, "share"] == 0.75 and table.loc[0, "share"] == 1.0 and table["share"].iloc[2:].isna().all()
    assert filters.describe_exemplars(top, labels, CLASS_NAMES) == (
        "Filter 1 of made_up is the most selective of 4: 3 of the 4 faces that drive it hardest are happy (happy is "
        "33% of the 9 labelled faces searched; binomial p = 0.11, not clearly above what a filter blind to expression "
        "would show). 1 of the 4 filters never fire on these 12 faces.")
    # Filters as sure as one another are a tie, not "the most selective" (the new-user trial: five filters at 2 of 5).
    twins = _exemplars([[8, 7, 6, 5, 4], [9, 8, 7, 6, 5]], [[4, 5, 6, 7, 10], [4, 5, 6, 8, 11]])
    assert filters.describe_exemplars(twins, labels, CLASS_NAMES).startswith(
        "Filters 0 and 1 of made_up tie as the most selective of 2; filter 1: 3 of the 4 faces that drive it hardest "
        "are happy")
    # without class names the class is its index, an int
    assert "are 3 (3 is 33% of the 9 labelled faces" in filters.describe_exemplars(top, labels)
    only_unlabelled = _exemplars([[5, 4, 3, 0, 0]], [[7, 8, 9, 0, 1]])
    assert filters.describe_exemplars(only_unlabelled, labels, CLASS_NAMES) == (
        "No filter of made_up shown fires on a labelled face among these 12 faces.")
    with pytest.raises(ValueError, match=r"dtype float64 instead"):
        filters.describe_exemplars(top, labels.astype(float), CLASS_NAMES)


@pytest.mark.parametrize("head", ["dense_softmax", "separate_softmax", "logits"])
def test_class_images_through_the_output_layer_of_any_classifier(faces, head):
    """Notebook 2 ascends the class scores of whatever layer makes the model's output (not a layer
    named "predictions"): a user's /255 model with a Dense head named "dense", a separate Softmax, or logits."""
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv2d")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    if head == "dense_softmax":
        outputs = keras.layers.Dense(7, activation="softmax", name="dense")(x)
    elif head == "separate_softmax":
        outputs = keras.layers.Softmax(name="softmax")(keras.layers.Dense(7, name="dense")(x))
    else:
        outputs = keras.layers.Dense(7, name="dense")(x)
    homework = keras.Model(inputs, outputs, name="homework")
    model = models.adapt(homework, input_shape=(48, 48, 1), scale=(0.0, 1.0),
                         output="logits" if head == "logits" else "probabilities")
    output = models.output_layer(model).name
    # (a logits model gets fervis's softmax, "predictions", from models.adapt)
    assert output == {"dense_softmax": "dense", "separate_softmax": "softmax", "logits": "predictions"}[head]
    result = filters.maximize(model, output, [3, 5], steps=4, dataset=faces.images[:32])
    assert result.images.shape == (2, 48, 48) and np.isfinite(result.activation).all()
    # The logit is what was ascended: the activation is the pre-softmax score, not a probability.
    scores = homework if head == "logits" else models.to_logits(homework)
    logits = scores(result.images[..., None] / 255.0).numpy()
    np.testing.assert_allclose(result.activation, logits[[0, 1], [3, 5]], rtol=1e-3, atol=1e-3)


def test_describe_presets_and_table(ascents, live):
    naive, readable = ascents["naive"], ascents["readable"]
    text = filters.describe_presets(naive, readable)
    ratio = readable.activation.mean() / naive.activation.mean()
    assert text.startswith(f"On block2_act ({len(live)} filters): readable noise {readable.noise.mean():.2f}, "
                           f"naive noise {naive.noise.mean():.2f}")
    assert f"at {ratio:.0%} of naive's activation" in text
    table = filters.preset_table({("block2_act", p): r for p, r in ascents.items()})
    assert table["preset"].tolist() == ["naive", "readable"] and (table["note"] == "").all()
    assert np.allclose(table["share of best face"].astype(float), [naive.fraction.mean(), readable.fraction.mean()],
                       atol=0.006)
    with pytest.raises(ValueError, match="'readable' parameter .* layer of 'naive'"):
        filters.describe_presets(naive, dataclasses.replace(readable, layer_name="other"))


def test_readable_is_smoother_than_naive_at_comparable_activation(ascents):
    naive, readable = ascents["naive"], ascents["readable"]
    assert readable.noise.mean() < 0.3 * naive.noise.mean()
    assert (readable.noise < naive.noise).all()
    assert readable.activation.mean() > 0.5 * naive.activation.mean()


def test_maximize_several_seeds_form_rows(tiny_model):
    result = filters.maximize(tiny_model, "block2_act", [5, 12], seeds=3, steps=8)
    assert result.images.shape == (6, 48, 48)
    assert result.filter_idx.tolist() == [5, 5, 5, 12, 12, 12] and result.seed.tolist() == [0, 1, 2] * 2
    assert result.filters == [5, 12] and result.seeds == 3
    assert not np.allclose(result.images[0], result.images[1])  # different starts
    assert np.isnan(result.fraction).all() and result.dataset_max is None  # no dataset given
    again = filters.maximize(tiny_model, "block2_act", [5, 12], seeds=3, steps=8)
    np.testing.assert_allclose(again.images, result.images, atol=1e-3)  # seeded


def test_maximize_class_output_shows_the_class(tiny_model):
    """'predictions' filter 3 is what the model thinks a happy face is: its logit is ascended."""
    result = filters.maximize(tiny_model, "predictions", [3, 4])
    logits = models.to_logits(tiny_model).predict(result.images[..., None], verbose=0)
    np.testing.assert_allclose(result.activation, logits[[0, 1], [3, 4]], rtol=1e-4, atol=1e-4)
    # each image is more "its" class than the other class's image is
    assert logits[0, 3] > logits[1, 3] and logits[1, 4] > logits[0, 4]
    grey = models.to_logits(tiny_model).predict(np.full((1, 48, 48, 1), 128.0), verbose=0)[0]
    assert result.activation[0] > grey[3] and result.activation[1] > grey[4]


def test_all_filters_and_seeds_share_one_compiled_step(tiny_model, monkeypatch):
    """Batched: each ascent step is one call on the whole (filters x seeds) batch."""
    import collections

    calls = []
    make_step = filters._make_step

    def counting(part, settings, size):
        step, final = make_step(part, settings, size)

        def counted(params, *args):
            calls.append(int(params.shape[0]))
            return step(params, *args)

        return counted, final

    monkeypatch.setattr(filters, "_make_step", counting)
    monkeypatch.setattr(filters, "_COMPILED", collections.OrderedDict())
    filters.maximize(tiny_model, "block1_conv", [0, 1, 2, 3, 4], steps=5, seeds=2, preset="naive")
    assert calls == [10] * 5


def _rows(images, filter_idx, seed):
    n = len(images)
    return filters.Maximization(
        images=np.asarray(images, np.float32), filter_idx=np.asarray(filter_idx), seed=np.asarray(seed),
        activation=np.arange(1, n + 1, dtype=np.float32), fraction=np.full(n, np.nan, np.float32),
        noise=np.zeros(n, np.float32), dataset_max=None, layer_name="x", preset="readable", steps=1)


def test_seed_agreement_ignores_where_the_pattern_sits():
    rng = np.random.default_rng(0)
    stripes = np.sin(np.arange(48) / 48 * 2 * np.pi * 6)[None, :] * np.ones((48, 1)) * 100 + 128
    blobs = rng.uniform(0, 255, (48, 48))
    images = [np.roll(stripes, s, axis=1) for s in (0, 5, 11)] + [np.roll(blobs, s, axis=0) for s in (0, 7, 20)]
    table = filters.seed_agreement(_rows(images, [0, 0, 0, 1, 1, 1], [0, 1, 2] * 2))
    assert table.index.tolist() == [0, 1]
    np.testing.assert_allclose(table["within"], 1.0, atol=1e-6)  # circular shifts keep the spectrum
    assert (table["across"] < 0.5).all()
    assert table.loc[0, "activation"] == pytest.approx(2.0)  # mean of 1, 2, 3
    with pytest.raises(ValueError, match="seeds >= 2"):
        filters.seed_agreement(_rows(images[:2], [0, 1], [0, 0]))


def test_max_steps_environment_variable_caps_steps(tiny_model, monkeypatch):
    monkeypatch.setenv("FERVIS_MAX_STEPS", "3")
    assert filters.maximize(tiny_model, "block1_conv", 0, steps=100, preset="naive").steps == 3


def test_maximize_on_adapted_third_party_model(third_party, faces):
    result = filters.maximize(third_party, "tp_conv2", [0, 5], dataset=faces.images[:64])
    assert result.images.shape == (2, 48, 48) and np.isfinite(result.activation).all()
    grey = filters.feature_maps(third_party, np.full((1, 48, 48), 128.0), "tp_conv2").mean(axis=(1, 2))[0]
    assert (result.activation > grey[[0, 5]]).all()
    assert filters.layer_width(third_party, "tp_conv2") == 6


# --------------------------------------------------------------------------- feature maps, receptive fields


def test_feature_maps_match_the_truncated_model(tiny_model, faces):
    maps = filters.feature_maps(tiny_model, faces, "block2_conv", batch_size=100)
    assert maps.shape == (len(faces), 24, 24, 16) and maps.dtype == np.float32
    direct = models.truncate_at(tiny_model, "block2_conv").predict(faces.x()[:5], verbose=0)
    np.testing.assert_allclose(maps[:5], direct, rtol=1e-4, atol=1e-4)
    one = filters.feature_maps(tiny_model, faces.images[0], "block2_conv")  # a single (48, 48) face
    np.testing.assert_allclose(one[0], maps[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layer_name, size, jump", [
    ("block1_conv", 3, 1), ("block1_pool", 4, 2), ("block2_conv", 8, 2), ("block2_pool", 10, 4),
])
def test_receptive_field_of_tiny_layers(tiny_model, layer_name, size, jump):
    field = filters.receptive_field(tiny_model, layer_name)
    assert field.size == (size, size) and field.jump == (jump, jump) and field.spatial


def test_receptive_field_equals_gradient_support():
    """A stack with stride, 'same' padding on an even map, dilation, 'valid' padding and
    average pooling, linear: the pixels a unit depends on are exactly its receptive field."""
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Conv2D(3, 5, strides=2, padding="same", name="c1")(inputs)
    x = keras.layers.Conv2D(3, 3, dilation_rate=2, padding="valid", name="c2")(x)
    x = keras.layers.AveragePooling2D(2, name="pool")(x)
    x = keras.layers.ZeroPadding2D(((1, 0), (0, 2)), name="pad")(x)
    x = keras.layers.Conv2D(3, 3, padding="same", name="c3")(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    field = filters.receptive_field(model, "c3")
    assert field.size == (23, 23) and field.jump == (4.0, 4.0)
    for row, col in [(4, 4), (5, 3)]:
        assert _support(model, "c3", row, col) == field.box(row, col)


@pytest.mark.parametrize("layer_name", ["block2_conv", "block2_pool"])
def test_receptive_field_contains_gradient_support(tiny_model, layer_name):
    field = filters.receptive_field(tiny_model, layer_name)
    y0, x0, y1, x1 = field.box(5, 6)
    sy0, sx0, sy1, sx1 = _support(tiny_model, layer_name, 5, 6)
    assert y0 <= sy0 and x0 <= sx0 and sy1 <= y1 and sx1 <= x1


def test_receptive_field_of_adapted_model_contains_gradient_support(third_party):
    field = filters.receptive_field(third_party, "tp_conv2")
    assert field.jump == (1.5, 1.5)  # 48 -> 64 pixels, then a stride-2 pool
    y0, x0, y1, x1 = field.box(12, 14)
    sy0, sx0, sy1, sx1 = _support(third_party, "tp_conv2", 12, 14)
    assert y0 <= sy0 and x0 <= sx0 and sy1 <= y1 and sx1 <= x1
    assert (y1 - y0) <= (sy1 - sy0) + 4  # and not much larger


@pytest.mark.parametrize("arch, layer_name, expected", [
    ("compact", None, ["block3_conv2", "block3_bn2", "block3_act2"]),
    ("compact", "block1_conv1", ["block1_conv1", "block1_bn1", "block1_act1"]),
    ("tiny", None, ["block2_conv", "block2_act"]),
])
def test_block_layers_follow_the_graph(arch, layer_name, expected):
    assert filters.block_layers(models.build(arch, seed=0), layer_name) == expected


def test_block_layers_stop_at_a_merge(residual_model):
    assert filters.block_layers(residual_model, "res_conv2") == ["res_conv2"]
    assert filters.block_layers(residual_model) == [models.last_conv_layer(residual_model)]


def test_dense_layer_sees_the_whole_face(tiny_model):
    field = filters.receptive_field(tiny_model, "predictions")
    assert not field.spatial and field.size == (48, 48)


# --------------------------------------------------------------------------- top activating


def test_top_activating_one_pass_for_all_filters(tiny_model, faces):
    top = filters.top_activating(tiny_model, faces, "block2_conv", k=4, batch_size=64)
    assert top.indices.shape == (16, 4) and top.faces.shape == (16, 4, 48, 48)
    assert top.crops.shape == (16, 4, 8, 8) and top.crops.dtype == np.uint8
    maps = filters.feature_maps(tiny_model, faces, "block2_conv")
    peaks = maps.max(axis=(1, 2))  # (n, 16)
    for f in (0, 7, 15):
        np.testing.assert_allclose(top.values[f], np.sort(peaks[:, f])[::-1][:4], rtol=1e-4)
        assert np.allclose(peaks[top.indices[f], f], top.values[f], rtol=1e-4)
        row, col = top.positions[f, 0]
        assert np.isclose(maps[top.indices[f, 0], row, col, f], top.values[f, 0], rtol=1e-4)
        y0, x0, y1, x1 = top.boxes[f, 0]
        np.testing.assert_array_equal(top.crops[f, 0], faces.images[top.indices[f, 0]][y0:y1, x0:x1])
    assert (np.diff(top.values, axis=1) <= 0).all()


def test_top_activating_some_filters_and_dense_layer(tiny_model, faces):
    top = filters.top_activating(tiny_model, faces.images, "block2_conv", [3, 9], k=2)
    full = filters.top_activating(tiny_model, faces.images, "block2_conv", None, k=2)
    np.testing.assert_array_equal(top.indices, full.indices[[3, 9]])
    happy = filters.top_activating(tiny_model, faces, "predictions", 3, k=3)
    assert happy.crops.shape == (1, 3, 48, 48)
    probs = tiny_model.predict(faces.x(), verbose=0)[:, 3]
    assert probs[happy.indices[0, 0]] == pytest.approx(probs.max(), rel=1e-4)


def test_exemplar_table_names_the_classes(tiny_model, faces):
    top = filters.top_activating(tiny_model, faces, "block2_act", [0, 3], k=5)
    table = top.to_frame(faces.labels, faces.class_names)
    assert table.index.tolist() == [0, 3]
    for row, f in enumerate([0, 3]):
        found = faces.labels[top.indices[row]][top.values[row] > 0]  # the faces that excite it
        counts = np.bincount(found, minlength=7)
        assert table.loc[f, "most common class"] == faces.class_names[int(counts.argmax())]
        assert table.loc[f, "faces"] == len(found) > 0
        assert table.loc[f, "count"] == counts.max()
        assert table.loc[f, "share"] == pytest.approx(counts.max() / len(found))
        assert table.loc[f, "peak"] == pytest.approx(float(top.values[row, 0]))
    assert list(top.to_frame().columns) == ["peak", "mean peak"]


# --------------------------------------------------------------------------- the oneDNN regression


@pytest.mark.parametrize("preset", ["readable", "naive"])
def test_every_method_survives_the_residual_model(residual_model, faces, preset):
    """Eager input gradients through the 1x1 stride-2 shortcut kill the process; ours are in graphs."""
    result = filters.maximize(residual_model, "res_add", [0, 7], preset=preset, dataset=faces.images[:64])
    assert np.isfinite(result.images).all() and np.isfinite(result.activation).all()
    maps = filters.feature_maps(residual_model, faces.images[:3], "shortcut_conv")
    assert maps.shape == (3, 24, 24, 8)
    top = filters.top_activating(residual_model, faces.images[:64], "res_out", [1], k=2)
    assert top.crops.shape == (1, 2, 9, 9)
    field = filters.receptive_field(residual_model, "res_add")
    assert field.size == (9, 9) and field.jump == (2.0, 2.0)
    y0, x0, y1, x1 = field.box(10, 11)
    sy0, sx0, sy1, sx1 = _support(residual_model, "res_add", 10, 11)
    assert y0 <= sy0 and x0 <= sx0 and sy1 <= y1 and sx1 <= x1


# --------------------------------------------------------------------------- noise score


@pytest.mark.parametrize("kind, low, high", [
    ("constant", 0.0, 0.0), ("ramp", 0.0, 0.02), ("noise", 0.75, 0.85), ("checkerboard", 0.999, 1.0),
])
def test_high_frequency_energy(kind, low, high):
    yy, xx = np.mgrid[:48, :48]
    image = {
        "constant": np.full((48, 48), 90.0),
        "ramp": np.sin(xx / 48 * np.pi) * 100,
        "noise": np.random.default_rng(0).uniform(0, 255, (48, 48)),
        "checkerboard": ((yy + xx) % 2) * 255.0,
    }[kind]
    score = filters.high_frequency_energy(image[None])
    assert score.shape == (1,) and low <= score[0] <= high


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("call, match", [
    (lambda m: filters.maximize(m, "conv9", 0), r"'layer_name'.*\['scale', 'block1_conv'.*Got 'conv9'"),
    (lambda m: filters.maximize(m, "block2_conv", 16), r"'filter_idx'.*'block2_conv' has 16 filters.*Got 16"),
    (lambda m: filters.maximize(m, "block2_conv", [1, -1]), r"\[0, 15\].*has 16 filters"),
    (lambda m: filters.maximize(m, "block2_conv", []), r"'filter_idx'"),
    (lambda m: filters.maximize(m, "block2_conv", 0, preset="pretty"), r"'preset'.*\['naive', 'readable'\]"),
    (lambda m: filters.maximize(m, "block2_conv", 0, preset={"lr": 1}), r"unknown settings \['lr'\]"),
    (lambda m: filters.maximize(m, "block2_conv", 0, seeds=0), r"'seeds'.*an int >= 1"),
    (lambda m: filters.maximize(m, "block2_conv", 0, steps=-2), r"'steps'.*an int >= 1"),
    (lambda m: filters.maximize(m, "block2_conv", 0, dataset=np.zeros((3, 32, 32))), r"'dataset'.*\(3, 32, 32\)"),
    (lambda m: filters.feature_maps(m, np.zeros((2, 48, 48)), "flatten"), r"'flatten'.*no spatial map.*block2_pool"),
    (lambda m: filters.feature_maps(m, np.zeros((2, 40, 40)), "block1_conv"), r"'images'.*\(2, 40, 40\)"),
    (lambda m: filters.top_activating(m, np.zeros((4, 48, 48)), "block1_conv", 8), r"has 8 filters"),
    (lambda m: filters.top_activating(m, np.zeros((4, 48, 48)), "block1_conv", 0, k=0), r"'k'"),
    (lambda m: filters.receptive_field(m, "nope"), r"'layer_name'.*Got 'nope'"),
    (lambda m: filters.maximize("model.keras", "block1_conv", 0), r"'model'.*keras.Model"),
    (lambda m: filters.high_frequency_energy(np.zeros((2, 48, 48)), cutoff=0.7),
     r"'cutoff' parameter of fervis\.filters\.high_frequency_energy must be a number > 0\.0 and < 0\.5\. Got 0\.7"),
    (lambda m: filters.high_frequency_energy(np.zeros((2, 48, 48)), cutoff=float("nan")), r"'cutoff'.*Got nan"),
])
def test_bad_input_raises_clear_value_error(tiny_model, call, match):
    with pytest.raises(ValueError, match=match):
        call(tiny_model)


def test_high_frequency_energy_takes_a_numpy_float_cutoff():
    # the one number check (_checks.real): a numpy float is a number, as everywhere else
    images = np.random.default_rng(0).uniform(0, 255, (2, 48, 48))
    np.testing.assert_array_equal(filters.high_frequency_energy(images, cutoff=np.float32(0.25)),
                                  filters.high_frequency_energy(images, cutoff=0.25))


def test_model_with_other_input_size_is_refused():
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(2, 3, name="c")])
    with pytest.raises(ValueError, match=r"\(n, 48, 48, 1\).*models.adapt"):
        filters.feature_maps(model, np.zeros((1, 48, 48)), "c")


# --------------------------------------------------------------------------- plots and widget


def test_plots_draw_every_image(ascents, tiny_model, faces, live):
    fig = plots.ascent_grid(ascents["readable"])
    assert len([ax for ax in fig.axes if ax.images]) == len(live)
    assert "act" in fig.axes[0].get_title() and "noise" in fig.axes[0].get_title()
    fig = plots.compare_presets(ascents)
    assert len([ax for ax in fig.axes if ax.images]) == 2 * len(live)
    assert fig.axes[0].get_title().startswith(f"naive f{live[0]}")
    maps = filters.feature_maps(tiny_model, faces.images[:1], "block2_conv")
    fig = plots.feature_map_grid(maps, face=faces.images[0], ncols=6)
    assert len([ax for ax in fig.axes if ax.images]) == 17
    top = filters.top_activating(tiny_model, faces, "block2_act", live, k=3)
    fig = plots.exemplar_grid(top, ascent=ascents["readable"])
    assert len([ax for ax in fig.axes if ax.images]) == len(live) * (1 + 2 * 3)
    assert sum(len(ax.patches) for ax in fig.axes) == len(live) * 3  # a box per face
    assert "receptive field 8x8" in fig.get_suptitle()


def test_filter_explorer_widget(tiny_model, faces):
    from fervis import widgets

    explorer = widgets.filter_explorer(tiny_model, faces.images[:60], layers=["block1_conv", "block2_act"],
                                       steps=4, k=3)
    assert explorer.layer.value == "block2_act" and explorer.filter.max == 15
    first = explorer.figure
    assert first is not None and "block2_act filter 0" in first.get_suptitle()
    explorer.filter.value = 5
    assert "filter 5" in explorer.figure.get_suptitle()
    explorer.filter.value = 12
    explorer.layer.value = "block1_conv"  # 8 filters: the slider follows
    assert explorer.filter.max == 7 and explorer.filter.value == 7
    assert "block1_conv filter 7" in explorer.figure.get_suptitle()
    explorer.preset.value = "naive"
    assert explorer.figure.axes[0].get_title().startswith("naive f7")
    with pytest.raises(ValueError, match="'layer_name'"):
        widgets.filter_explorer(tiny_model, faces.images[:10], layers=["nope"])
    with pytest.raises(ValueError, match=r"'layer_name'.*\['block1_conv'\]"):
        widgets.filter_explorer(tiny_model, faces.images[:10], layers=["block1_conv"], layer_name="block2_act")


# --------------------------------------------------------------------------- notebook on FER2013


@pytest.mark.fer2013
def test_notebook_runs_on_fer2013_quick(fer2013_path, tmp_path, run_notebook, notebook_text):
    import re

    out = run_notebook("02_filter_visualization.ipynb", tmp_path / "02.ipynb", {"DATA": fer2013_path, "BUDGET": "quick"})
    text = notebook_text(out)  # no inf or NaN anywhere
    found = re.search(r"readable noise ([\d.]+), naive noise ([\d.]+)", text)
    assert found, "the notebook printed no noise comparison"
    readable, naive = float(found.group(1)), float(found.group(2))
    assert 0 <= readable < naive <= 1


@pytest.mark.fer2013
def test_preset_numbers_are_finite_on_fer2013(fer2013_path):
    """The shipped model's last block on real faces (issue 20: 'inf%' on block4_act2, where plain
    ascent was stuck at 0, and 'share of best face 143.55' on its batch norm)."""
    import re

    from fervis import data

    faces = data.load(fer2013_path).subset("PublicTest").sample(300, seed=0)
    model = models.load_pretrained("fer2013")
    trio = filters.block_layers(model, None)
    ascents = {(name, preset): filters.maximize(model, name, list(range(6)), steps=16, preset=preset, dataset=faces)
               for name in trio for preset in ("naive", "readable")}
    table = filters.preset_table(ascents)
    numbers = table[["activation", "noise"]].to_numpy(float)
    shares = table["share of best face"]
    assert np.isfinite(numbers).all() and all(s == "undefined" or np.isfinite(s) for s in shares)
    assert all(s == "undefined" or 0 < s < 50 for s in shares)
    assert (table.loc[shares == "undefined", "note"] != "").all()
    naive, readable = ascents[(trio[-1], "naive")], ascents[(trio[-1], "readable")]
    assert naive.activation.mean() > 0  # alive: it starts where each filter fires
    text = filters.describe_presets(naive, readable)
    assert "inf" not in text and "nan" not in text.lower()
    found = re.search(r"ends at (\d+)% of naive's activation", text)
    assert found and int(found.group(1)) == round(100 * readable.activation.mean() / naive.activation.mean())
    assert readable.noise.mean() < naive.noise.mean()


def test_explorer_offers_the_learned_layers_not_the_input_preprocessing(tiny_model, faces):
    """A Rescaling or fervis's adapt_* layers have no filters of their own (their channels are the
    input's): the explorer's default layers start at the first layer with weights."""
    from fervis import widgets

    assert filters.layer_names(tiny_model)[0] == "scale"
    assert filters.layer_names(tiny_model, learned=True)[0] == "block1_conv"
    assert filters.layer_names(tiny_model, learned=True) == filters.layer_names(tiny_model)[1:]
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="first_conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    homework = keras.Model(inputs, keras.layers.Dense(7, activation="softmax", name="dense")(x), name="homework")
    adapted = models.adapt(homework, input_shape=(32, 32, 3), scale="0-1")
    every = filters.layer_names(adapted)
    assert any(name.startswith("adapt_") for name in every)
    learned = filters.layer_names(adapted, learned=True)
    assert learned[0].endswith("first_conv") and not any("adapt_" in name for name in learned)
    assert filters.layer_names(adapted, spatial=True, learned=True) == [learned[0]]
    explorer = widgets.filter_explorer(adapted, faces.images[:8], steps=2, k=1)
    assert list(explorer.layer.options) == learned and explorer.layer.value == learned[-1]
    # by what feeds a layer, not by its place in the list: each ensemble member's own Rescaling, a
    # preprocessing branch listed after the first convolution, a Normalization (its weights are statistics)
    pair = models.ensemble([models.build("tiny"), models.build("tiny", seed=1)])
    assert not any(name.endswith("scale") for name in filters.layer_names(pair, learned=True))
    assert {"member_a/scale", "member_b/scale"} <= set(filters.layer_names(pair))
    inputs = keras.Input((48, 48, 1))
    a = keras.layers.Conv2D(2, 3, padding="same", name="conv_a")(inputs)
    a = keras.layers.Conv2D(2, 3, padding="same", name="conv_a2")(a)
    b = keras.layers.Normalization(mean=0.0, variance=1.0, name="norm")(inputs)
    b = keras.layers.AveragePooling2D(1, name="inpool")(keras.layers.Rescaling(0.5, name="resc2")(b))
    b = keras.layers.Conv2D(2, 3, padding="same", name="conv_b")(b)
    joined = keras.layers.Concatenate(name="joined")([a, b])
    out = keras.layers.Dense(7, activation="softmax", name="out")(keras.layers.GlobalAveragePooling2D(name="gap")(joined))
    branched = keras.Model(inputs, out)
    every = filters.layer_names(branched)
    assert every.index("inpool") > every.index("conv_a")  # listed after a convolution, yet the input's
    assert filters.layer_names(branched, learned=True) == [
        name for name in every if name not in ("norm", "resc2", "inpool")]
    sequential = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Rescaling(1 / 255, name="pre"),
                                   keras.layers.Conv2D(2, 3, name="c"), keras.layers.Flatten(name="flat")])
    assert filters.layer_names(sequential, learned=True) == ["c", "flat"]
    weightless = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Rescaling(1 / 255, name="only")])
    assert filters.layer_names(weightless, learned=True) == [] and filters.layer_names(weightless) == ["only"]
    # a model without a learned layer: the explorer offers every layer rather than none
    assert list(widgets.filter_explorer(weightless, faces.images[:4], steps=2, k=1).layer.options) == ["only"]
