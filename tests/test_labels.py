"""Tests for fervis.labels (notebook 3): metrics, LIME, drill-down, embedding, verdict."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fervis import labels
from fervis.constants import CLASS_NAMES

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "03_per_label_analysis.ipynb"


# --------------------------------------------------------------------------- helpers


def _quadrant_model(class_idx=0, strength=8.0):
    """A model whose class ``class_idx`` logit is the mean brightness of the top-left 18x18 corner."""
    import keras

    inputs = keras.Input((48, 48, 1), name="pixels")
    x = keras.layers.Rescaling(1 / 255.0, name="scale")(inputs)
    x = keras.layers.Cropping2D(((0, 30), (0, 30)), name="corner")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    dense = keras.layers.Dense(7, activation="softmax", name="predictions")
    outputs = dense(x)
    model = keras.Model(inputs, outputs, name="quadrant")
    kernel = np.zeros((1, 7), np.float32)
    kernel[0, class_idx] = strength
    dense.set_weights([kernel, np.full(7, 0.0, np.float32)])
    return model


@pytest.fixture(scope="module")
def faces(synthetic_small):
    return synthetic_small.subset("PublicTest")


@pytest.fixture(scope="module")
def probs(tiny_model, faces):
    from fervis import saliency

    return saliency.predict(tiny_model, faces.images)


@pytest.fixture(scope="module")
def noise_faces():
    """Random 6x6-pixel blocks: structure SLIC can follow (pure pixel noise makes one segment)."""
    blocks = np.random.default_rng(0).uniform(100, 255, (3, 8, 8))
    return np.kron(blocks, np.ones((6, 6))).astype(np.float32)


def _unlabelled(dataset):
    from fervis.data import Dataset

    return Dataset(images=dataset.images[:5], labels=np.full(5, -1), splits=np.array(["PublicTest"] * 5),
                   source="test.csv")


# --------------------------------------------------------------------------- classes and checks


@pytest.mark.parametrize("value, expected", [(0, 0), ("angry", 0), ("Disgust", 1), (np.int64(3), 3), ("neutral", 6)])
def test_class_index(value, expected):
    assert labels.class_index(value) == expected


@pytest.mark.parametrize("value", ["disgusted", 7, -1, True, 2.0, None])
def test_class_index_rejects_unknown_classes(value):
    with pytest.raises(ValueError, match="class_idx.*angry.*Got"):
        labels.class_index(value)


@pytest.mark.parametrize("class_idx, match", [
    ("disgusted", "Got 'disgusted'"),
    (9, "Got 9"),
    ([0, "nope", 1], "'nope' at position 1"),
    ([0, 1], r"Got \(2,\)"),
])
def test_lime_explain_rejects_unknown_classes(tiny_model, noise_faces, class_idx, match):
    with pytest.raises(ValueError, match=f"class_idx.*lime_explain.*{match}"):
        labels.lime_explain(tiny_model, noise_faces, class_idx=class_idx, num_samples=10)


@pytest.mark.parametrize("images, match", [
    (np.zeros((2, 32, 32)), r"shaped .*Got shape \(2, 32, 32\)"),
    (np.array(["a"]), "numeric pixels"),
    (np.full((1, 48, 48), np.nan), "finite"),
])
def test_lime_explain_rejects_bad_images(tiny_model, images, match):
    with pytest.raises(ValueError, match=f"'images' parameter of fervis.labels.lime_explain.*{match}"):
        labels.lime_explain(tiny_model, images, num_samples=10)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_samples": 1}, "num_samples"), ({"num_samples": 10.5}, "num_samples"), ({"seed": 1.5}, "seed"),
    ({"batch_size": 0}, "batch_size"), ({"segments": np.zeros((1, 48, 48))}, "segments"),
    ({"kernel_width": 0}, "kernel_width"), ({"num_segments": 1}, "num_segments"),
    ({"hide_color": float("nan")}, "hide_color"),
])
def test_lime_explain_rejects_bad_settings(tiny_model, noise_faces, kwargs, match):
    # the message names the function called, not the engine behind it (saliency.explain)
    with pytest.raises(ValueError, match=rf"^The '{match}' parameter of fervis\.labels\.lime_explain must"):
        labels.lime_explain(tiny_model, noise_faces, **kwargs)


def test_lime_explain_takes_what_explain_takes(tiny_model, noise_faces):
    # One engine, one set of allowed values: any int seed (folded into numpy's range) and any
    # finite hide_color (a pixel value in the model's input units), through either door.
    from fervis import saliency

    faces = noise_faces[:1]
    ours = labels.lime_explain(tiny_model, faces, class_idx=0, num_samples=20, seed=-1, hide_color=300.0)
    theirs = saliency.explain(tiny_model, faces, "lime", class_idx=0, normalize=False,
                              options={"samples": 20, "seed": -1, "hide_color": 300.0, "sign": "signed"})
    assert ours.shape == (1, 48, 48) and np.isfinite(ours).all() and np.abs(ours).max() > 0
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)


def test_lime_explain_rejects_a_model_of_another_input():
    import keras

    inputs = keras.Input((64, 64, 3))
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match="raw faces shaped .*fervis.models.adapt"):
        labels.lime_explain(model, np.zeros((1, 48, 48)))


# --------------------------------------------------------------------------- metrics


def test_confusion_rows_are_true_columns_predicted():
    y_true = np.array([1, 1, 1, 0])
    y_pred = np.array([0, 0, 1, 0])
    cm = labels.confusion(y_true, y_pred)
    assert cm.index.name == "true" and cm.columns.name == "predicted"
    assert cm.loc["disgust", "angry"] == 2 and cm.loc["angry", "disgust"] == 0
    assert cm.loc["disgust", "disgust"] == 1
    rows = labels.confusion(y_true, y_pred, normalize="true")
    assert rows.loc["disgust", "angry"] == pytest.approx(2 / 3)
    assert np.allclose(rows.loc[["angry", "disgust"]].sum(axis=1), 1.0)


def test_confusion_takes_probabilities(probs, faces):
    by_probs = labels.confusion(faces, probs)
    by_labels = labels.confusion(faces.labels, probs.argmax(axis=1))
    assert by_probs.equals(by_labels)
    assert by_probs.to_numpy().sum() == len(faces)


@pytest.mark.parametrize("normalize", ["rows", "columns", True])
def test_confusion_rejects_unknown_normalize(normalize):
    with pytest.raises(ValueError, match="'normalize' parameter .* must be one of"):
        labels.confusion([0], [0], normalize=normalize)


def test_class_report_matches_hand_counts():
    y_true = np.array([3, 3, 3, 3, 1, 1, 0, 0])
    y_pred = np.array([3, 3, 3, 0, 0, 1, 0, 3])
    probs = np.eye(7)[y_pred] * 0.9 + 0.1 / 7
    report = labels.class_report(y_true, probs, train_counts={c: i + 1 for i, c in enumerate(CLASS_NAMES)})
    assert list(report.index) == list(CLASS_NAMES)
    assert report.loc["happy", "recall"] == pytest.approx(3 / 4)
    assert report.loc["happy", "precision"] == pytest.approx(3 / 4)
    assert report.loc["angry", "precision"] == pytest.approx(1 / 3)
    assert report.loc["disgust", "f1"] == pytest.approx(2 / 3)
    assert report.loc["happy", "support"] == 4
    assert report["predicted"].tolist() == [3, 1, 0, 4, 0, 0, 0]  # precision's n: faces predicted as the class
    assert report.loc["neutral", "train_support"] == 7
    assert ((report["ece"] >= 0) & (report["ece"] <= 1)).all()


def test_class_report_intervals_cover_recall_and_shrink_with_more_faces():
    rng = np.random.default_rng(1)

    def report(n):
        y_true = rng.integers(0, 7, n)
        right = rng.random(n) < 0.7
        y_pred = np.where(right, y_true, (y_true + 1) % 7)
        return labels.class_report(y_true, np.eye(7)[y_pred] * 0.9 + 0.1 / 7, n_boot=300)

    small, large = report(140), report(7000)
    for table in (small, large):
        assert (table["recall_low"] <= table["recall"]).all() and (table["recall"] <= table["recall_high"]).all()
        assert (table["f1_low"] <= table["f1"]).all() and (table["f1"] <= table["f1_high"]).all()
    width = lambda t: (t["recall_high"] - t["recall_low"]).mean()  # noqa: E731
    assert width(large) < width(small) / 3  # 50x the faces: about 1/7 of the width
    assert large["recall_low"].min() > 0.6 and large["recall_high"].max() < 0.8  # around the true 0.7
    same = labels.class_report(np.array([0, 1, 1]), np.eye(7)[[0, 1, 0]], n_boot=50, seed=3)
    assert same.equals(labels.class_report(np.array([0, 1, 1]), np.eye(7)[[0, 1, 0]], n_boot=50, seed=3))
    assert same.loc[["fear", "happy"], ["recall_low", "f1_high"]].isna().all().all()  # no face: no interval
    with pytest.raises(ValueError, match="'confidence' parameter"):
        labels.class_report(np.array([0]), np.eye(7)[[0]], confidence=0)


def test_class_report_intervals_are_never_a_point_at_the_boundary():
    """0 of 78 angry faces right (a homework model on real faces): every bootstrap resample gives recall 0
    and F1 0, and "0.00 [0.00, 0.00] (n = 78)" claimed a certainty 78 faces do not give."""
    from scipy.stats import binomtest

    y_true = np.r_[np.zeros(78, int), np.full(100, 3), np.full(50, 5), np.full(30, 2)]
    # angry never right, happy and surprise always, fear half the time (the other half called sad)
    y_pred = np.r_[np.full(78, 3), np.full(100, 3), np.full(50, 5), np.tile([2, 4], 15)]
    table = labels.class_report(y_true, np.eye(7)[y_pred], n_boot=200)
    angry, surprise = table.loc["angry"], table.loc["surprise"]
    wilson = binomtest(0, 78).proportion_ci(0.95, method="wilson")
    assert angry["recall"] == 0 and angry["recall_low"] == 0 and angry["recall_high"] == pytest.approx(wilson.high)
    # F1 <= 2R/(1+R) when precision may be anything (angry is never predicted), R's bound at 97.5 % so that
    # recall's and precision's hold together at 95 % (Bonferroni): about 0.11
    each = binomtest(0, 78).proportion_ci(0.975, method="wilson")
    assert angry["f1_low"] == 0 and angry["f1_high"] == pytest.approx(2 * each.high / (1 + each.high))
    assert 0.05 < angry["f1_high"] < 0.13
    # 50 of 50 right and nothing else called surprise: recall and F1 1, their lower bounds below 1
    full = binomtest(50, 50).proportion_ci(0.95, method="wilson")
    assert surprise["recall"] == 1 == surprise["recall_high"] and surprise["recall_low"] == pytest.approx(full.low)
    both = binomtest(50, 50).proportion_ci(0.975, method="wilson")
    assert surprise["f1_low"] == pytest.approx(both.low) and both.low < full.low and surprise["f1_high"] == 1
    assert f"angry 0.00 [0.00, {angry['f1_high']:.2f}] (n = 78)" in labels.headline(table)
    with pytest.raises(ValueError, match="'confidence' parameter"):
        labels.class_report(y_true, np.eye(7)[y_pred], confidence=1.0)  # no Wilson bound at 100 %
    # An interval the bootstrap does give (fear, 15 of 30) is kept as it is.
    boot = labels._bootstrap_recall_f1(y_true, y_pred, 7, 200, 0.95, 0)
    fear = table.loc["fear"]
    assert (fear["recall_low"], fear["recall_high"], fear["f1_low"], fear["f1_high"]) == tuple(boot[:, 2])
    assert fear["recall_low"] < 0.5 < fear["recall_high"]


def test_class_report_rejects_incomplete_train_counts(probs, faces):
    with pytest.raises(ValueError, match="'train_counts' parameter .* each of"):
        labels.class_report(faces, probs, train_counts=[1, 2, 3])


def test_confused_pairs_rank_by_rate_or_count():
    # 20 happy faces, 5 predicted sad; 4 disgust faces, 3 predicted angry.
    y_true = np.array([3] * 20 + [1] * 4)
    y_pred = np.array([4] * 5 + [3] * 15 + [0] * 3 + [1])
    by_rate = labels.confused_pairs(y_true, y_pred)
    assert (by_rate.at[0, "true"], by_rate.at[0, "predicted"]) == ("disgust", "angry")
    assert by_rate.at[0, "rate"] == pytest.approx(0.75) and by_rate.at[0, "count"] == 3
    by_count = labels.confused_pairs(y_true, y_pred, by="count")
    assert (by_count.at[0, "true"], by_count.at[0, "count"]) == ("happy", 5)
    assert len(labels.confused_pairs(y_true, y_pred, top=1)) == 1


def test_reliability_matches_sklearn_and_counts_every_face(probs, faces):
    from sklearn.calibration import calibration_curve

    table = labels.reliability(faces, probs, n_bins=10)
    assert table["count"].sum() == len(faces)
    correct = (probs.argmax(1) == faces.labels).astype(int)
    acc, conf = calibration_curve(correct, probs.max(1), n_bins=10)
    filled = table[table["count"] > 0]
    assert np.allclose(filled["accuracy"], acc) and np.allclose(filled["confidence"], conf)
    assert table[table["count"] == 0]["accuracy"].isna().all()


def test_ece_is_small_when_calibrated_and_large_when_overconfident():
    rng = np.random.default_rng(0)
    n = 20000
    p = rng.uniform(0, 1, n)
    y = (rng.uniform(0, 1, n) < p).astype(int)  # class 1 with probability p
    calibrated = np.stack([1 - p, p], axis=1)
    assert labels.expected_calibration_error(y, calibrated, class_idx=1) < 0.02
    overconfident = np.tile([[0.0, 1.0]], (n, 1))
    half = np.arange(n) % 2
    assert labels.expected_calibration_error(half, overconfident) == pytest.approx(0.5)


def test_support_recall_follows_counts():
    report = pd.DataFrame({"recall": [0.2, 0.5, 0.9], "support": [10, 50, 90]})
    assert labels.support_recall(report) == pytest.approx(1.0)
    report["train_support"] = [90, 50, 10]
    assert labels.support_recall(report) == pytest.approx(-1.0)
    assert np.isnan(labels.support_recall(report.assign(recall=0.5)))
    with pytest.raises(ValueError, match="'report' parameter"):
        labels.support_recall(report.drop(columns="recall"))


def test_class_distribution_shares_sum_to_one(synthetic_small):
    shares = labels.class_distribution(synthetic_small, normalize=True)
    assert np.allclose(shares.sum(axis=1), 1.0)
    assert labels.class_distribution(synthetic_small).to_numpy().sum() == len(synthetic_small)
    with pytest.raises(ValueError, match="fervis Dataset"):
        labels.class_distribution(np.zeros(3))


@pytest.mark.parametrize("call", [
    lambda d, p: labels.confusion(d, p),
    lambda d, p: labels.class_report(d, p),
    lambda d, p: labels.confused_pairs(d, p),
    lambda d, p: labels.reliability(d, p),
    lambda d, p: labels.ambiguous_faces(d, p),
    lambda d, p: labels.confusion_cell(d, p, 0, 0),
])
def test_metrics_on_an_unlabelled_dataset_say_so(faces, call):
    unlabelled = _unlabelled(faces)
    with pytest.raises(ValueError, match="needs labelled faces, but 5 of 5 faces of dataset 'test.csv' are "
                                         "unlabelled.*lime_explain work without labels"):
        call(unlabelled, np.full((5, 7), 1 / 7))


def test_an_unlabelled_dataset_still_gets_predictions_and_lime(tiny_model, faces):
    from fervis import saliency

    unlabelled = _unlabelled(faces)
    probs = saliency.predict(tiny_model, unlabelled.images)
    maps = labels.lime_explain(tiny_model, unlabelled, num_samples=40)
    assert probs.shape == (5, 7) and maps.shape == (5, 48, 48)
    assert np.abs(maps).max() > 0


def test_example_faces_alternate_correct_and_wrong():
    y_true = np.array([0, 0, 0, 1, 1])
    probs = np.eye(7)[[0, 0, 3, 0, 0]] * 0.8 + 0.2 / 7
    probs[1, 0] = 0.9  # the more confident correct angry face comes first
    table = labels.example_faces(y_true, probs, per_class=2)
    assert list(table["index"]) == [1, 2, 3, 4]
    assert list(table["correct"]) == [True, False, False, False]  # disgust has no correct face: two wrong ones
    assert list(table["predicted"]) == ["angry", "happy", "angry", "angry"]
    assert len(labels.example_faces(y_true, probs, per_class=1)) == 2


# --------------------------------------------------------------------------- LIME


def test_lime_segments_are_a_few_dozen_contiguous_ids(faces):
    segments = labels.lime_segments(faces.images[:6])
    counts = [len(np.unique(s)) for s in segments]
    assert all(20 <= c <= 60 for c in counts), counts
    assert all(s.max() + 1 == c for s, c in zip(segments, counts))
    assert np.array_equal(segments, labels.lime_segments(faces.x()[:6]))


def test_vectorised_neighbourhood_equals_lime_reference(faces):
    from lime import lime_image

    image = np.repeat(faces.x()[0], 3, axis=-1).astype(np.float64)
    segments = labels.lime_segments(faces.images[:1])[0]
    fudged = np.zeros_like(image)

    def classifier_fn(batch):
        return np.stack([batch[..., 0].mean(axis=(1, 2)), batch[..., 0].std(axis=(1, 2))], axis=1)

    from fervis import saliency

    ours = saliency._lime_explainer_class()(random_state=7).data_labels(image, fudged, segments, classifier_fn, 50)
    reference = lime_image.LimeImageExplainer(random_state=7).data_labels(
        image, fudged, segments, classifier_fn, 50, batch_size=50)
    assert np.array_equal(ours[0], reference[0])
    assert np.allclose(ours[1], reference[1])


def test_lime_finds_the_pixels_the_model_reads(noise_faces):
    model = _quadrant_model(class_idx=2)
    blocks = np.broadcast_to(np.kron(np.arange(64).reshape(8, 8), np.ones((6, 6), int)), noise_faces.shape)
    maps = labels.lime_explain(model, noise_faces, class_idx="fear", num_samples=300, hide_color=0, segments=blocks)
    positive = np.clip(maps, 0, None)
    corner = positive[:, :18, :18].sum(axis=(1, 2)) / positive.sum(axis=(1, 2))
    assert (corner > 0.8).all(), corner  # the corner is 14 % of the face
    top = labels.top_superpixels(maps, blocks, k=9)
    assert top[:, :18, :18].all() and top.sum() == 3 * 18 * 18
    # The class given by name, by index and per face are one and the same.
    by_index = labels.lime_explain(model, noise_faces, class_idx=2, num_samples=300, hide_color=0, segments=blocks)
    per_face = labels.lime_explain(model, noise_faces, class_idx=["fear", 2, "FEAR"], num_samples=300,
                                   hide_color=0, segments=blocks)
    assert np.array_equal(maps, by_index) and np.array_equal(maps, per_face)


def test_lime_is_seeded(tiny_model, noise_faces):
    a = labels.lime_explain(tiny_model, noise_faces[:2], num_samples=60, seed=1)
    b = labels.lime_explain(tiny_model, noise_faces[:2], num_samples=60, seed=1)
    c = labels.lime_explain(tiny_model, noise_faces[:2], num_samples=60, seed=2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    # A face's explanation does not depend on the faces explained with it.
    alone = labels.lime_explain(tiny_model, noise_faces[1:2], num_samples=60, seed=1)
    assert np.array_equal(alone[0], a[1])


def test_lime_on_the_residual_model(residual_model, noise_faces):
    maps = labels.lime_explain(residual_model, noise_faces[:2], num_samples=50)
    assert maps.shape == (2, 48, 48) and np.isfinite(maps).all()
    stability = labels.lime_stability(residual_model, noise_faces[:2], runs=2, num_samples=30)
    assert stability.shape == (2,)


def test_top_superpixels_picks_the_largest_weights():
    segments = np.repeat(np.arange(4), 12 * 48).reshape(1, 48, 48)  # four horizontal bands
    maps = np.array([0.5, -0.2, 0.9, 0.1])[segments]
    top = labels.top_superpixels(maps, segments, k=2)
    assert np.array_equal(np.unique(segments[top]), [0, 2])
    against = labels.top_superpixels(maps, segments, k=3, sign="negative")
    assert np.array_equal(np.unique(segments[against]), [1])  # only one band weighs against
    with pytest.raises(ValueError, match="'sign' parameter"):
        labels.top_superpixels(maps, segments, sign="both")


def test_lime_stability_is_high_for_a_clear_signal_and_bounded(tiny_model, noise_faces):
    blocks = np.broadcast_to(np.kron(np.arange(64).reshape(8, 8), np.ones((6, 6), int)), noise_faces.shape)
    clear = labels.lime_stability(_quadrant_model(), noise_faces, class_idx=0, runs=3, top_k=9, num_samples=300,
                                  segments=blocks, hide_color=0)
    assert (clear > 0.9).all(), clear
    # Too few samples for a model with no clear signal: the top superpixels wander.
    noisy = labels.lime_stability(tiny_model, noise_faces, runs=3, num_samples=20)
    assert ((noisy >= 0) & (noisy <= 1)).all() and noisy.mean() < clear.mean()
    with pytest.raises(ValueError, match="'runs' parameter"):
        labels.lime_stability(tiny_model, noise_faces, runs=1)


def test_lime_region_shares_by_ground_truth_regions(faces):
    subset = faces.take(np.arange(6))
    mouth = subset.region_names.index("mouth")
    maps = np.where(subset.regions == mouth, 1.0, -1.0)  # negative weight elsewhere is not evidence
    classes = subset.labels
    shares = labels.lime_region_shares(maps, subset, classes)
    assert shares.loc["all", "mouth"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="'dataset' parameter .* 6 faces"):
        labels.lime_region_shares(maps, faces, classes)


# --------------------------------------------------------------------------- drill-down


def test_confusion_cell_holds_its_faces_most_confident_first(probs, faces):
    pairs = labels.confused_pairs(faces, probs, by="count")
    true, predicted = pairs.at[0, "true"], pairs.at[0, "predicted"]
    cell = labels.confusion_cell(faces, probs, true, predicted)
    t, p = CLASS_NAMES.index(true), CLASS_NAMES.index(predicted)
    assert len(cell) == pairs.at[0, "count"]
    assert (faces.labels[cell] == t).all() and (probs[cell].argmax(1) == p).all()
    assert (np.diff(probs[cell, p]) <= 0).all()


def test_an_empty_confusion_cell_says_which_cells_hold_faces():
    y_true = np.array([0, 0, 1])
    probs = np.eye(7)[[0, 2, 1]]
    with pytest.raises(ValueError, match=r"\(true='angry', predicted='happy'\).*is empty.*\{'angry': 1, 'fear': 1\}"):
        labels.confusion_cell(y_true, probs, "angry", "happy")
    with pytest.raises(ValueError, match="'predicted' parameter .*Got 'joy'"):
        labels.confusion_cell(y_true, probs, "angry", "joy")


@pytest.mark.parametrize("model_name", ["tiny_model", "residual_model"])
def test_cell_saliency_gives_true_predicted_and_difference(request, model_name, noise_faces):
    model = request.getfixturevalue(model_name)
    maps_true, maps_pred, diff = labels.cell_saliency(model, noise_faces, "disgust", "angry")
    assert maps_true.shape == maps_pred.shape == diff.shape == (3, 48, 48)
    assert np.allclose(diff, maps_pred - maps_true)
    assert maps_true.max() == pytest.approx(1.0) and not np.allclose(maps_true, maps_pred)


def test_cell_saliency_takes_lime_like_any_method(tiny_model, noise_faces):
    """LIME through saliency.explain: positive maps scaled to 1, one per face and class."""
    maps_true, maps_pred, diff = labels.cell_saliency(tiny_model, noise_faces, "disgust", "angry", method="lime")
    assert maps_true.shape == maps_pred.shape == (3, 48, 48) and maps_true.min() >= 0
    assert np.allclose(maps_true.reshape(3, -1).max(axis=1), 1.0) and np.allclose(diff, maps_pred - maps_true)
    signed = labels.lime_explain(tiny_model, noise_faces, class_idx="disgust", batch_size=64)
    positive = np.clip(signed, 0, None)
    np.testing.assert_allclose(maps_true, positive / positive.reshape(3, -1).max(axis=1)[:, None, None], rtol=1e-6)


def test_ambiguous_faces_lists_the_highest_loss_first():
    y_true = np.array([0, 0, 0, 3])
    probs = np.array([[0.9, 0.1, 0, 0, 0, 0, 0], [0.1, 0.0, 0.0, 0.8, 0.1, 0, 0],
                      [0.3, 0.0, 0.7, 0, 0, 0, 0], [0, 0, 0, 1.0, 0, 0, 0]])
    table = labels.ambiguous_faces(y_true, probs, per_class=2)
    assert list(table["index"]) == [1, 2, 3]
    assert table.at[0, "loss"] == pytest.approx(-np.log(0.1))
    assert (table.at[0, "top1"], table.at[0, "top2"]) == ("happy", "angry")
    assert (table["p_top1"] >= table["p_top2"]).all()


# --------------------------------------------------------------------------- embedding


@pytest.mark.parametrize("model_name, width", [("tiny_model", 12 * 12 * 16), ("residual_model", 8)])
def test_penultimate_features_read_the_input_of_the_last_dense(request, model_name, width, noise_faces):
    model = request.getfixturevalue(model_name)
    features = labels.penultimate_features(model, noise_faces)
    assert features.shape == (3, width)
    dense = model.get_layer("predictions")
    logits = features @ dense.get_weights()[0] + dense.get_weights()[1]
    expected = np.asarray(model(noise_faces[..., None]))
    assert np.allclose(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), expected, atol=1e-5)


def test_penultimate_features_of_an_adapted_model_and_a_conv_layer(noise_faces):
    import keras

    from fervis import models

    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(4, 3, name="inner_conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="inner_gap")(x)
    third_party = keras.Model(inputs, keras.layers.Dense(7, name="logits")(x), name="third")
    adapted = models.adapt(third_party, input_shape=(64, 64, 3), output="logits")
    assert labels.penultimate_features(adapted, noise_faces).shape == (3, 4)
    # Reordered classes add fervis's own "class_order" Dense after the model's: the features stay the model's.
    reordered = models.adapt(third_party, input_shape=(64, 64, 3), output="logits", class_order=sorted(CLASS_NAMES))
    assert [layer.name for layer in models.adapter_layers(reordered)] == [
        "adapt_resize", "adapt_channels", "adapt_scale", "class_order", "predictions"]
    assert models.adapter_layers(third_party) == [] and models.adapter_layers(models.build("tiny")) == []
    # a user's own model named like one, with a trained head around a backbone, is not fervis's adapter
    inputs = keras.Input((64, 64, 3))
    head = keras.layers.Dense(7, name="head")(third_party(inputs))
    assert models.adapter_layers(keras.Model(inputs, head, name="adapted_mine")) == []
    np.testing.assert_allclose(labels.penultimate_features(reordered, noise_faces),
                               labels.penultimate_features(adapted, noise_faces), rtol=1e-6)
    assert [name for name, _ in models.trained_layers(reordered)][-3:] == ["inner_conv", "inner_gap", "logits"]
    # An ensemble renames its members ("member_a"): each adapted member's features are still its own model's
    # (4 each), not its class-order permutation's input (7 logits each).
    both = models.ensemble([reordered, models.adapt(third_party, input_shape=(64, 64, 3), output="logits",
                                                    class_order=sorted(CLASS_NAMES))])
    assert labels.penultimate_features(both, noise_faces).shape == (3, 8)
    assert labels.penultimate_features(adapted, noise_faces, layer_name="inner_conv").shape == (3, 4)
    with pytest.raises(ValueError, match="'layer_name' parameter .*inner_conv"):
        labels.penultimate_features(adapted, noise_faces, layer_name="conv9")


def _clusters(seed=0):
    """Class 0 and 3 well apart; class 1 drawn inside class 0."""
    rng = np.random.default_rng(seed)
    centres = {0: np.zeros(8), 1: np.zeros(8), 3: np.full(8, 6.0)}
    y = np.repeat([0, 1, 3], [60, 20, 60])
    x = np.stack([centres[c] + rng.normal(0, 1, 8) for c in y])
    return x, y


def test_separability_sees_a_class_inside_another():
    x, y = _clusters()
    table = labels.separability(x, y, k=5)
    assert list(table.index) == ["angry", "disgust", "happy", "all"]
    assert table.loc["happy", "knn_recall"] == 1.0 and table.loc["happy", "silhouette"] > 0.5
    assert table.loc["disgust", "knn_recall"] < 0.5 and table.loc["disgust", "nearest_class"] == "angry"
    with pytest.raises(ValueError, match="at least two classes"):
        labels.separability(x, np.zeros(len(x), int))


def test_embed_is_seeded_and_two_dimensional():
    x, _ = _clusters()
    a, b = labels.embed(x, seed=0), labels.embed(x, seed=0)
    assert a.shape == (len(x), 2) and np.allclose(a, b)
    with pytest.raises(ValueError, match="'features' parameter"):
        labels.embed(np.zeros((2, 4)))


# --------------------------------------------------------------------------- verdict


def _evidence(disgust_recall=0.2, disgust_train=50, rate=0.6, happy_share=0.6, disgust_knn=0.1):
    report = pd.DataFrame({
        "precision": 0.7, "recall": [0.6, disgust_recall, 0.5, 0.95, 0.55, 0.45, 0.6],
        "support": 100, "train_support": [400, disgust_train, 410, 720, 480, 320, 500]},
        index=pd.Index(CLASS_NAMES, name="class"))
    report["f1"] = report["recall"]
    report["f1_low"], report["f1_high"] = report["f1"] - 0.05, report["f1"] + 0.05
    pairs = pd.DataFrame({"true": ["disgust", "fear"], "predicted": ["angry", "sad"], "count": [6, 10],
                          "rate": [rate, 0.1]})
    separation = pd.DataFrame({"knn_recall": [0.6, disgust_knn, 0.5, 0.95, 0.5, 0.8, 0.6], "silhouette": 0.1,
                               "nearest_class": ["sad", "angry", "sad", "neutral", "fear", "fear", "sad"]},
                              index=list(CLASS_NAMES))
    separation["n"] = 100
    shares = pd.DataFrame(0.2, index=list(CLASS_NAMES), columns=["brows", "eyes", "nose", "mouth"])
    shares["brows"] = 0.4
    shares.loc["happy"] = [(1 - happy_share) / 3] * 3 + [happy_share]
    shares.attrs["n"] = {c: 10 for c in CLASS_NAMES}
    return report, pairs, separation, shares


def test_assess_guesses_supports_the_seed_when_the_numbers_do():
    table = labels.assess_guesses(*_evidence())
    assert table.loc["few training samples", "supported"] == "yes"
    assert table.loc["confused with a neighbour", "supported"] == "yes"
    assert table.loc["evidence in one region", "supported"] == "yes"
    assert table.loc["separability", "supported"] == "yes"
    # Other faces go to angry at (0.6 * 100 recalled angry + 0) / 600 = 10 %: a lift of 6.
    assert ("60.0 % of disgust faces are predicted angry (pair #1 by rate; 95 % interval 50.2-69.1 %, n = 100), "
            "6.0x the 10.0 % of other faces" in table.loc["confused with a neighbour", "evidence"])
    assert "p = 0.02 over 7 classes" in table.loc["few training samples", "evidence"]
    assert "happy 0.95 [0.89, 0.98] (n = 100), disgust 0.10 [0.06, 0.17] (n = 100)" in \
        table.loc["separability", "evidence"]
    assert "(the class it is confused with)" in table.loc["separability", "evidence"]
    assert table.loc["labels", "evidence"].startswith("F1 above the mean")
    text = labels.format_verdict(table)
    assert text.count("supported: yes") == 4 and text.startswith("labels: F1 above the mean")
    with pytest.raises(ValueError, match="'table' parameter"):
        labels.format_verdict(table.drop(columns="supported"))


def test_assess_guesses_sees_no_neighbour_in_a_class_everything_goes_to():
    report, pairs, separation, shares = _evidence(rate=0.9)
    pairs.loc[0, "predicted"] = "happy"  # 90 % of disgust faces are called happy ...
    everything = pd.DataFrame({"true": [c for c in CLASS_NAMES if c not in ("disgust", "happy")],
                               "predicted": "happy", "count": 80, "rate": 0.8})  # ... as are 80 % of the others
    table = labels.assess_guesses(report, pd.concat([pairs, everything], ignore_index=True), separation, shares)
    # Others go to happy at (80 * 5 + 95) / 600 = 82.5 %: a lift of 1.1, and the disgust rate's interval
    # (82.6-94.5 %) lies just above it, so the confusion is real but not a neighbour's.
    assert table.loc["confused with a neighbour", "supported"] == "partly"
    assert "1.1x the" in table.loc["confused with a neighbour", "evidence"]
    pairs.loc[0, "rate"] = 0.85  # 85 of 100: interval 76.7-90.7 %, no longer above the others' 82.5 %
    table = labels.assess_guesses(report, pd.concat([pairs, everything], ignore_index=True), separation, shares)
    assert table.loc["confused with a neighbour", "supported"] == "no"
    assert "the interval does not lie above it" in table.loc["confused with a neighbour", "evidence"]


def test_assess_guesses_says_too_few_faces_instead_of_a_finding():
    report, pairs, separation, shares = _evidence()
    report.loc["disgust", "support"] = 9  # the synthetic sample's disgust
    table = labels.assess_guesses(report, pairs, separation, shares)
    assert "too few faces (n < 30) to tell: disgust (n = 9)" in table.loc["labels", "evidence"]
    # The worst class judged is now the worst with 30 faces or more, not disgust.
    assert table.loc["few training samples", "evidence"].startswith("surprise has")
    assert "disgust" not in table.loc["separability", "evidence"]
    # Two LIME faces per class (the notebook's examples) are too few to read region shares.
    shares.attrs["n"] = {c: 2 for c in CLASS_NAMES}
    row = labels.assess_guesses(report, pairs, separation, shares).loc["evidence in one region"]
    assert row["supported"] == "n/a" and "happy n = 2" in row["evidence"]
    # Without the faces' count the shares are not read either.
    shares.attrs.clear()
    assert labels.assess_guesses(report, pairs, separation, shares).loc["evidence in one region", "supported"] == "n/a"
    # Best and worst whose F1 intervals overlap: no hard class to explain.
    report["f1_low"], report["f1_high"] = 0.0, 1.0
    table = labels.assess_guesses(report, pairs, separation, shares)
    assert (table["supported"].iloc[1:] == "n/a").all()
    assert "overlap: no hard class to explain" in table.loc["separability", "evidence"]
    assert "not distinguishable from the mean" in table.loc["labels", "evidence"]
    with pytest.raises(ValueError, match="'report' parameter .*'f1_low'"):
        labels.assess_guesses(report.drop(columns="f1_low"), pairs)


def test_headline_is_computed_from_the_report():
    report, *_ = _evidence()
    assert labels.headline(report).startswith("Easiest: happy 0.95 [0.90, 1.00] (n = 100); hardest: disgust 0.20")
    report.loc["fear", ["f1", "f1_low", "f1_high"]] = [0.1, 0.05, 0.15]  # fear is now hardest
    assert "hardest: fear 0.10" in labels.headline(report)
    report.loc["fear", "support"] = 9
    text = labels.headline(report)
    assert "hardest: disgust" in text and text.endswith("Too few faces (n < 30) to tell: fear (n = 9).")
    report["f1_low"], report["f1_high"] = 0.0, 1.0
    assert labels.headline(report).startswith("No class is clearly easiest or hardest")


def test_assess_guesses_rejects_the_seed_when_the_numbers_do_not():
    report, pairs, separation, shares = _evidence(disgust_train=5000, rate=0.05, happy_share=0.25, disgust_knn=0.99)
    report.loc["disgust", "recall"] = report.loc["disgust", "f1"] = 0.2
    report.loc["disgust", ["f1_low", "f1_high"]] = [0.15, 0.25]
    table = labels.assess_guesses(report, pairs, separation, shares)
    assert table.loc["confused with a neighbour", "supported"] == "no"
    assert table.loc["evidence in one region", "supported"] == "no"
    assert table.loc["separability", "supported"] == "no"
    assert labels.assess_guesses(report, pairs).loc["separability", "supported"] == "n/a"
    with pytest.raises(ValueError, match="'pairs' parameter"):
        labels.assess_guesses(report, pairs.drop(columns="rate"))


# --------------------------------------------------------------------------- plots and widget


def test_metric_plots_draw_labelled_axes(probs, faces, synthetic_small):
    from fervis import plots

    ax = plots.class_distribution_bars(labels.class_distribution(synthetic_small))
    assert ax.get_title() == "Class distribution per split" and len(ax.patches) == 2 * 7
    ax = plots.confusion_heatmap(labels.confusion(faces, probs))
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("Predicted label", "True label")
    support = np.bincount(faces.labels, minlength=7)
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"{c} (n = {k})" for c, k in zip(CLASS_NAMES, support)]
    ece = labels.expected_calibration_error(faces, probs)
    ax = plots.reliability_diagram(labels.reliability(faces, probs), ece=ece)
    assert f"ECE {ece:.3f}" in ax.get_title()
    report = labels.class_report(faces, probs)
    ax = plots.class_metric_bars(report, "ece")
    assert len(ax.patches) == 7 and ax.get_title().startswith("Calibration error per class")
    n = int(report.loc["disgust", "support"])
    assert f"disgust (n = {n})" in [t.get_text() for t in ax.get_xticklabels()]
    ax = plots.class_metric_bars(report, "f1")
    bars = [c for c in ax.containers if hasattr(c, "errorbar")][0]
    assert len(bars.errorbar.lines[2][0].get_segments()) == 7  # one interval per class
    ax = plots.confusion_heatmap(labels.confusion(faces, probs, normalize="true"), support=report["support"])
    assert f"disgust (n = {n})" in [t.get_text() for t in ax.get_yticklabels()]
    report = labels.class_report(faces, probs, synthetic_small.counts().loc["Training"])
    ax = plots.support_recall_scatter(report)
    rho = labels.support_recall(report)
    assert ax.get_title() == f"Support vs recall (Spearman rho {rho:.2f})" and ax.get_xscale() == "log"
    # drawing only draws: rho comes from class_report (report.attrs) or the caller, never computed in plots
    np.testing.assert_equal(report.attrs["support_recall"]["support"], labels.support_recall(report, "support"))
    assert plots.support_recall_scatter(report, rho=0.5).get_title() == "Support vs recall (Spearman rho 0.50)"
    plain = report.copy()
    plain.attrs = {}
    assert plots.support_recall_scatter(plain).get_title() == "Support vs recall"


def test_face_plots_draw_one_panel_per_face(faces, noise_faces):
    from fervis import plots

    segments = labels.lime_segments(noise_faces)
    maps = np.random.default_rng(0).normal(size=segments.shape)
    fig = plots.lime_grid(noise_faces, maps, segments, titles=["a", "b", "c"], ncols=2)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["a", "b", "c"] and len(fig.axes[0].images) == 3
    examples = pd.DataFrame({"label": ["angry", "angry", "happy"], "predicted": ["angry", "sad", "happy"],
                             "correct": [True, False, True], "p_predicted": [0.9, 0.6, 0.8]})
    fig = plots.lime_examples(noise_faces, maps, segments, examples)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["angry\nright 0.90", "happy\nright 0.80", "angry\nas sad 0.60", ""]
    fig = plots.confusion_cell_grid(noise_faces[:2], maps[:2], maps[:2], maps[:2] * 0, "disgust", "angry")
    assert fig.axes[3].get_title() == "angry - disgust" and len(fig.axes) == 8
    table = labels.ambiguous_faces(faces, np.full((len(faces), 7), 1 / 7), per_class=1)
    fig = plots.ambiguous_grid(faces.images, table, ncols=7)
    assert fig.axes[0].get_title().startswith("label angry")
    shares = pd.DataFrame([[0.25, 0.75]], index=["happy"], columns=["brows", "mouth"])
    ax = plots.region_share_heatmap(shares)
    assert [t.get_text() for t in ax.texts] == ["25", "75"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["happy"]
    shares.attrs["n"] = pd.Series({"happy": 2})  # as labels.lime_region_shares gives it: each row's faces
    ax = plots.region_share_heatmap(shares)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["happy (n=2)"]
    x, y = _clusters()
    ax = plots.embedding_scatter(x[:, :2], y)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["angry (60)", "disgust (20)", "happy (60)"]


def test_confusion_browser_picks_cells_and_reports_empty_ones(tiny_model, faces, probs):
    from fervis import widgets

    box = widgets.confusion_browser(tiny_model, faces, faces, probs)
    pairs = labels.confused_pairs(faces, probs, top=1)
    assert (box.true.value, box.predicted.value) == (pairs.at[0, "true"], pairs.at[0, "predicted"])
    assert box.face.max == pairs.at[0, "count"] - 1 and box.figure is not None
    out = box.children[-1]
    assert [sorted(o["data"]) for o in out.outputs] == [["image/png", "text/plain"]]  # the face shown, one image
    empty = next((t, p) for t in CLASS_NAMES for p in CLASS_NAMES
                 if not ((faces.labels == CLASS_NAMES.index(t)) & (probs.argmax(1) == CLASS_NAMES.index(p))).any())
    box.true.value, box.predicted.value = empty
    assert "is empty" in box.info.value and box.face.max == 0
    assert box.figure is None and out.outputs == ()  # the previous cell's face is not left on show


# --------------------------------------------------------------------------- the notebook on FER2013


@pytest.mark.fer2013
@pytest.mark.slow
def test_notebook_runs_on_fer2013_quick(fer2013_path, tmp_path, run_notebook, notebook_text):
    out = run_notebook(NOTEBOOK.name, tmp_path / "03.ipynb", {"DATA": fer2013_path, "BUDGET": "quick"})
    text = notebook_text(out)  # no inf or NaN anywhere
    accuracy = float(text.split(" faces: accuracy ")[1].split(",")[0])  # the per-label summary's, not the contract's
    assert 0.2 < accuracy <= 1.0, accuracy  # above chance (about 0.25 for the majority class)
    assert "disgust" in text and "supported" in text


@pytest.mark.fer2013
def test_per_label_numbers_are_finite_and_sentences_agree_on_fer2013(fer2013_path):
    """The shipped model on the 3,589 real PublicTest faces: no inf or NaN in the per-label
    table, and the generated headline and verdict say what the table says."""
    import re

    from fervis import data, models, saliency

    dataset = data.load(fer2013_path)
    test = dataset.subset("PublicTest")
    probs = saliency.predict(models.load_pretrained("fer2013"), test.images)
    report = labels.class_report(test, probs, train_counts=dataset.counts().loc["Training"])
    assert np.isfinite(report.to_numpy(float)).all(), report
    assert ((report["f1_low"] <= report["f1"]) & (report["f1"] <= report["f1_high"])).all()

    judged = report[report["support"] >= labels.MIN_SUPPORT]
    best, worst = judged["f1"].idxmax(), judged["f1"].idxmin()
    text = labels.headline(report)
    found = re.match(r"Easiest: (\w+) ([\d.]+) \[([\d.]+), ([\d.]+)\] \(n = (\d+)\); hardest: (\w+) ([\d.]+)", text)
    assert found, text
    assert found.group(1) == best and found.group(6) == worst
    assert float(found.group(2)) == pytest.approx(report.loc[best, "f1"], abs=0.005)
    assert int(found.group(5)) == report.loc[best, "support"]
    assert float(found.group(7)) == pytest.approx(report.loc[worst, "f1"], abs=0.005)

    pairs = labels.confused_pairs(test, probs, top=len(report) ** 2)
    verdict = labels.assess_guesses(report, pairs)
    sentence = verdict.loc["labels", "evidence"]
    above, below = sentence.split("; below it: ")
    mean = report["f1"].mean()
    assert f"the mean {mean:.2f}" in above
    for c in report.index:
        if report.loc[c, "f1_low"] > mean:
            assert f"{c} {report.loc[c, 'f1']:.2f}" in above
        elif report.loc[c, "f1_high"] < mean:
            assert f"{c} {report.loc[c, 'f1']:.2f}" in below.split("; not distinguishable")[0]
        else:
            assert f"{c} {report.loc[c, 'f1']:.2f}" in below.split("; not distinguishable")[1]
    top = pairs[pairs["true"] == worst].iloc[0]
    assert (f"{100 * top['rate']:.1f} % of {worst} faces are predicted {top['predicted']}"
            in verdict.loc["confused with a neighbour", "evidence"])
    printed = labels.format_verdict(verdict)
    assert "inf" not in printed.replace("interval", "") and "nan" not in printed.lower()


def test_class_report_counts_recall_as_training_and_the_monitor_do():
    """One confusion matrix, one rule for undefined ratios: a class without faces has NaN recall and F1
    (not scikit-learn's zero_division 0), as models.class_recall gives training.evaluate and the Monitor."""
    from fervis import models

    y = np.array([0, 0, 2, 2])
    probs = np.eye(7)[[0, 1, 2, 0]]
    report = labels.class_report(y, probs, n_boot=20)
    counted = models.class_recall(models.confusion_matrix(y, np.array([0, 1, 2, 0]), 7))
    np.testing.assert_array_equal(report["recall"].to_numpy(), counted)
    assert np.isnan(report.loc["disgust", "recall"]) and np.isnan(report.loc["disgust", "f1"])  # no disgust face
    assert report.loc["disgust", "precision"] == 0.0  # predicted once, wrongly
    assert np.isnan(report.loc["happy", "precision"]) and report.loc["happy", "predicted"] == 0  # never predicted
    assert report.loc["angry", "precision"] == 0.5 and report.loc["angry", "f1"] == pytest.approx(0.5)
    assert report["f1"].mean() == pytest.approx((0.5 + 2 / 3) / 2)  # the macro mean over the classes with faces
