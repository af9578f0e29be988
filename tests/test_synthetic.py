"""fervis.synthetic: determinism, shapes, class frequencies, region maps, cues where they belong."""

import numpy as np
import pytest

from fervis import synthetic
from fervis.constants import CLASS_NAMES

R = {name: i for i, name in enumerate(synthetic.REGION_NAMES)}
C = {name: i for i, name in enumerate(CLASS_NAMES)}


@pytest.fixture(scope="module")
def faces():
    """3000 faces of one seed: enough for stable per-class statistics (disgust has 45)."""
    return synthetic.generate(3000, seed=7)


def _centroid_row(mask):
    rows = np.arange(mask.shape[1])[None, :, None]
    count = mask.sum(axis=(1, 2))
    return np.where(count > 0, (mask * rows).sum(axis=(1, 2)) / np.maximum(count, 1), np.nan)


def _mean_in(images, mask):
    return (images * mask).sum(axis=(1, 2)) / np.maximum(mask.sum(axis=(1, 2)), 1)


def _relative_tone(images, regions, name):
    """Mean grey level of a region minus that of the face's cheeks (cancels skin tone and lighting)."""
    return _mean_in(images, regions == R[name]) - _mean_in(images, regions == R["cheeks"])


def test_region_names_and_cue_regions_contract():
    assert synthetic.REGION_NAMES == (
        "background", "hair", "forehead", "brows", "eyes", "nose", "cheeks", "mouth", "occluder")
    assert set(synthetic.CUE_REGIONS) == set(CLASS_NAMES)
    for name, cue_regions in synthetic.CUE_REGIONS.items():
        assert cue_regions and set(cue_regions) <= set(synthetic.REGION_NAMES) - {"background", "occluder"}, name
    assert synthetic.CUE_REGIONS["happy"] == ("mouth", "cheeks")
    assert "nose" in synthetic.CUE_REGIONS["disgust"]


def test_shapes_dtypes_ranges(faces):
    images, labels, regions = faces
    assert images.shape == (3000, 48, 48) and images.dtype == np.uint8
    assert labels.shape == (3000,) and labels.dtype == np.int64
    assert regions.shape == (3000, 48, 48) and regions.dtype == np.uint8
    assert set(np.unique(labels)) == set(range(7))
    assert regions.max() < len(synthetic.REGION_NAMES)
    # Real contrast in every face, and the full range used across faces.
    assert images.reshape(3000, -1).std(axis=1).min() > 5
    assert images.min() < 20 and images.max() > 235


def test_empty():
    images, labels, regions = synthetic.generate(0)
    assert images.shape == (0, 48, 48) and labels.shape == (0,) and regions.shape == (0, 48, 48)


def test_deterministic_and_prefix_stable():
    a = synthetic.generate(1100, seed=3)
    b = synthetic.generate(1100, seed=3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    # A face depends on (seed, index) only, across the 1000-face block boundary too.
    short = synthetic.generate(1020, seed=3)
    for x, y in zip(a, short):
        np.testing.assert_array_equal(x[:1020], y)
    other = synthetic.generate(50, seed=4)
    assert not np.array_equal(other[0], a[0][:50])


def test_class_frequencies_follow_fer2013(faces):
    _, labels, _ = faces
    expected = np.array(synthetic.FER2013_TRAINING_COUNTS) / sum(synthetic.FER2013_TRAINING_COUNTS)
    np.testing.assert_allclose(np.bincount(labels, minlength=7) / len(labels), expected, atol=0.003)
    assert np.argmin(np.bincount(labels)) == C["disgust"]


def test_class_probs_parameter():
    _, labels, _ = synthetic.generate(300, seed=0, class_probs=[0, 0, 0, 0, 0, 1, 0])
    assert np.all(labels == C["surprise"])
    # Counts follow the probabilities as closely as integers allow in each block of 1000 faces.
    _, labels, _ = synthetic.generate(1000, seed=0, class_probs=np.ones(7))
    assert set(np.bincount(labels, minlength=7)) == {142, 143}


@pytest.mark.parametrize("kwargs, match", [
    ({"n": -1}, "'n' parameter"),
    ({"n": 2.5}, "'n' parameter"),
    ({"n": 10, "seed": -3}, "'seed' parameter"),
    ({"n": 10, "seed": "a"}, "'seed' parameter"),
    ({"n": 10, "class_probs": [1, 2, 3]}, "'class_probs' parameter"),
    ({"n": 10, "class_probs": [0] * 7}, "'class_probs' parameter"),
    ({"n": 10, "class_probs": [-1, 1, 1, 1, 1, 1, 1]}, "'class_probs' parameter"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic.generate(**kwargs)


def test_region_maps_mark_every_face_part(faces):
    images, labels, regions = faces
    occluded = (regions == R["occluder"]).any(axis=(1, 2))
    for name in ("brows", "eyes", "nose", "cheeks", "mouth"):
        present = (regions[~occluded] == R[name]).any(axis=(1, 2))
        assert present.all(), f"{name} missing on {np.flatnonzero(~present)[:5]}"
    assert (regions == R["background"]).any(axis=(1, 2)).mean() > 0.95
    assert (regions == R["hair"]).any(axis=(1, 2)).mean() > 0.8  # some faces are bald
    # Every id is used somewhere, and each part covers a plausible share of the image.
    assert set(np.unique(regions)) == set(range(len(synthetic.REGION_NAMES)))
    share = np.bincount(regions.ravel(), minlength=9) / regions.size
    assert 0.005 < share[R["brows"]] < 0.06 and 0.01 < share[R["eyes"]] < 0.08 and 0.01 < share[R["mouth"]] < 0.1
    # The features sit where a face has them: brows above eyes above nose above mouth.
    ok = ~occluded
    order = [_centroid_row(regions[ok] == R[name]) for name in ("brows", "eyes", "nose", "mouth")]
    assert np.all(np.diff(np.stack(order), axis=0) > 0)


def test_occluder_on_some_faces(faces):
    _, _, regions = faces
    hand = regions == R["occluder"]
    occluded = hand.any(axis=(1, 2))
    assert 0.06 < occluded.mean() < 0.2
    assert hand.sum(axis=(1, 2))[occluded].mean() > 40
    # The hand hides face parts: on occluded faces the visible eye and mouth regions shrink.
    for name in ("eyes", "mouth"):
        visible = (regions == R[name]).sum(axis=(1, 2))
        assert visible[occluded].mean() < 0.95 * visible[~occluded].mean(), name


def test_occluder_is_marked_where_drawn():
    """Drawing the same faces without their hands changes exactly the pixels marked occluder."""
    labels, params, noise = synthetic._stream(7, 0, 0, synthetic._check_probs(None))
    idx = np.flatnonzero(params["occluded"] > 0)[:20]
    batch = {k: v[idx, None, None] for k, v in params.items()}
    with_hand, regions = synthetic._render(batch, noise[idx])
    batch["occluded"] = np.zeros_like(batch["occluded"])
    without, regions_without = synthetic._render(batch, noise[idx])
    hand = regions == R["occluder"]
    assert hand.any(axis=(1, 2)).all()
    np.testing.assert_array_equal(regions[~hand], regions_without[~hand])
    changed = np.abs(with_hand.astype(int) - without) > 3
    near_hand = hand.copy()  # the anti-aliased edge and the blur reach a pixel beyond the mask
    for axis in (1, 2):
        near_hand |= np.roll(near_hand, 1, axis) | np.roll(near_hand, -1, axis)
    assert changed[~near_hand].mean() < 0.002
    assert changed[hand].mean() > 0.5


def test_nuisance_shift_and_mirror(faces):
    _, _, regions = faces
    cols = np.arange(48)[None, None, :]
    nose = regions == R["nose"]
    count = nose.sum(axis=(1, 2))
    nose_col = (nose * cols).sum(axis=(1, 2))[count > 0] / count[count > 0]
    nose_row = _centroid_row(nose)[count > 0]
    for centre in (nose_col, nose_row):
        assert 1.0 < centre.std() < 4.0
        assert np.ptp(centre) > 5.0


def test_brow_cues(faces):
    """Angry and disgust lower their brows (smaller brow-eye gap), surprise and fear raise them."""
    _, labels, regions = faces
    gap = _centroid_row(regions == R["eyes"]) - _centroid_row(regions == R["brows"])
    mean = {name: np.nanmean(gap[labels == C[name]]) for name in CLASS_NAMES}
    assert mean["angry"] < mean["neutral"] - 0.7
    assert mean["surprise"] > mean["neutral"] + 1.5
    assert mean["fear"] > mean["neutral"] + 0.8
    # Disgust shares angry's brows: nearer to angry than to neutral, by far.
    assert abs(mean["disgust"] - mean["angry"]) < 0.3 * abs(mean["neutral"] - mean["angry"])


def _significant(values, labels, expression, reference="neutral"):
    """Mean of ``values`` for an expression minus that for ``reference``, in standard errors."""
    a, b = values[labels == C[expression]], values[labels == C[reference]]
    diff = np.nanmean(a) - np.nanmean(b)
    return diff / np.sqrt(np.nanvar(a) / len(a) + np.nanvar(b) / len(b))


@pytest.mark.parametrize("expression, region", [
    ("happy", "mouth"),     # open smile: a dark opening
    ("surprise", "mouth"),  # open O
    ("disgust", "nose"),    # wrinkles across the bridge
])
def test_cue_darkens_its_region(faces, expression, region):
    images, labels, regions = faces
    tone = _relative_tone(images, regions, region)
    assert _significant(tone, labels, expression) < -5


def test_mouth_corners(faces):
    """A smile lifts the mouth towards the nose, a frown lowers it."""
    _, labels, regions = faces
    drop = _centroid_row(regions == R["mouth"]) - _centroid_row(regions == R["nose"])
    assert _significant(drop, labels, "happy") < -5
    assert _significant(drop, labels, "sad") > 5


def test_happy_cheeks_have_folds(faces):
    images, labels, regions = faces
    f = images.astype(float)
    grad = np.zeros_like(f)
    grad[:, 1:-1] += np.abs(f[:, 2:] - f[:, :-2]) / 2
    grad[:, :, 1:-1] += np.abs(f[:, :, 2:] - f[:, :, :-2]) / 2
    texture = _mean_in(grad, regions == R["cheeks"])
    assert _significant(texture, labels, "happy") > 4


def test_eye_cues(faces):
    _, labels, regions = faces
    area = (regions == R["eyes"]).sum(axis=(1, 2)).astype(float)
    mean = {name: area[labels == C[name]].mean() for name in CLASS_NAMES}
    assert mean["surprise"] > 1.15 * mean["neutral"] and mean["fear"] > 1.15 * mean["neutral"]
    assert mean["angry"] < 0.95 * mean["neutral"]


def test_learnable_from_pixels(faces):
    """A linear classifier on 24x24 pixels beats the majority class by far (a CNN does better)."""
    from sklearn.linear_model import RidgeClassifier

    images, labels, _ = faces

    def features(x):
        x = x.reshape(len(x), 24, 2, 24, 2).mean(axis=(2, 4)).reshape(len(x), -1)
        return (x - x.mean(axis=1, keepdims=True)) / (x.std(axis=1, keepdims=True) + 1)

    clf = RidgeClassifier(alpha=10.0).fit(features(images[:2000]), labels[:2000])
    accuracy = (clf.predict(features(images[2000:])) == labels[2000:]).mean()
    majority = np.bincount(labels[2000:]).max() / 1000
    assert accuracy > majority + 0.25


def test_make_dataset(synthetic_small):
    ds = synthetic_small
    assert ds.source == "synthetic" and ds.region_names == synthetic.REGION_NAMES
    assert len(ds) == 980 and ds.regions.shape == (980, 48, 48) and ds.regions.dtype == np.uint8
    counts = ds.counts().sum(axis=1)
    assert counts["Training"] == 700 and counts["PublicTest"] == 280
    assert not ds.images.flags.writeable and not ds.regions.flags.writeable
    assert isinstance(ds.fingerprint, str) and len(ds.fingerprint) >= 16
    # Rebuilt identically from its seed; the test split does not depend on the training size.
    small = synthetic.make_dataset(n_train=100, n_test=280, seed=123)
    assert small.fingerprint != ds.fingerprint
    np.testing.assert_array_equal(small.subset("PublicTest").images, ds.subset("PublicTest").images)
    np.testing.assert_array_equal(small.subset("Training").images, ds.subset("Training").images[:100])
    assert synthetic.make_dataset(n_train=100, n_test=280, seed=123).fingerprint == small.fingerprint
    # Training and test faces are different faces.
    assert not np.array_equal(ds.subset("Training").images[:280], ds.subset("PublicTest").images)
