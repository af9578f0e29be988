"""fervis.regions: the FER2013 template, area shares, saliency shares and concentration."""

import numpy as np
import pandas as pd
import pytest

from fervis import regions, synthetic

R = {name: i for i, name in enumerate(regions.REGION_NAMES)}


def test_region_names_shared_with_synthetic():
    assert regions.REGION_NAMES is synthetic.REGION_NAMES
    assert regions.REGION_NAMES[0] == "background" and regions.REGION_NAMES[-1] == "occluder"


def test_template_shape_ids_and_layout():
    t = regions.template()
    assert t.shape == (48, 48) and t.dtype == np.uint8
    assert set(np.unique(t)) == set(range(len(regions.REGION_NAMES))) - {R["occluder"]}
    # A fresh copy: editing it does not change the next one.
    t[:] = 0
    t = regions.template()
    assert (t == R["eyes"]).any()
    # Where the registered FER2013 face has its parts (rows top to bottom, mirror symmetric).
    rows = np.arange(48)[:, None] * np.ones((1, 48))
    centre = {name: rows[t == R[name]].mean() for name in ("forehead", "brows", "eyes", "nose", "mouth")}
    assert centre["forehead"] < centre["brows"] < centre["eyes"] < centre["nose"] < centre["mouth"]
    assert 11 <= centre["brows"] <= 16 and 15 <= centre["eyes"] <= 22 and 32 <= centre["mouth"] <= 40
    assert t[17, 14] == t[17, 33] == R["eyes"] and t[38, 24] == R["mouth"] and t[28, 24] == R["nose"]
    assert t[30, 12] == t[30, 36] == R["cheeks"] and t[0, 0] == R["hair"] and t[47, 0] == R["background"]
    np.testing.assert_array_equal(t, t[:, ::-1])


def test_area_shares_template_and_per_image():
    a = regions.area_shares(regions.template())
    assert a.shape == (9,) and np.isclose(a.sum(), 1.0)
    assert a[R["occluder"]] == 0 and 0.02 < a[R["eyes"]] < 0.1
    maps = np.zeros((2, 48, 48), np.uint8)
    maps[1, :24] = R["mouth"]
    b = regions.area_shares(maps)
    assert b.shape == (2, 9)
    np.testing.assert_allclose(b[0, 0], 1.0)
    np.testing.assert_allclose(b[1, [0, R["mouth"]]], [0.5, 0.5])


def test_shares_raw_sum_to_one_and_locate_mass():
    rng = np.random.default_rng(0)
    t = regions.template()
    maps = rng.random((5, 48, 48))
    raw = regions.shares(maps, t, normalize=None)
    assert raw.shape == (5, 9)
    np.testing.assert_allclose(raw.sum(axis=1), 1.0)
    # All the mass on the mouth: share 1 there, concentration 1 / (mouth's area share).
    on_mouth = (t == R["mouth"]).astype(float)[None]
    np.testing.assert_allclose(regions.shares(on_mouth, t, normalize=None)[0, R["mouth"]], 1.0)
    conc = regions.shares(on_mouth, t)[0]
    np.testing.assert_allclose(conc[R["mouth"]], 1 / regions.area_shares(t)[R["mouth"]])
    assert conc[R["eyes"]] == 0 and np.isnan(conc[R["occluder"]])  # no occluder in the template


def test_concentration_of_uniform_map_is_one():
    t = regions.template()
    conc = regions.shares(np.full((3, 48, 48, 1), 0.7), t)
    present = regions.area_shares(t) > 0
    np.testing.assert_allclose(conc[:, present], 1.0)
    # Per-image maps too: a uniform map over each synthetic face.
    _, _, maps = synthetic.generate(4, seed=1)
    conc = regions.shares(np.ones((4, 48, 48)), maps)
    area = regions.area_shares(maps)
    np.testing.assert_allclose(conc[area > 0], 1.0)
    assert np.isnan(conc[area == 0]).all()


def test_per_image_regions_follow_each_face():
    _, _, maps = synthetic.generate(3, seed=2)
    saliency = (maps == R["eyes"]).astype(float)  # each image's own eyes
    raw = regions.shares(saliency, maps, normalize=None)
    np.testing.assert_allclose(raw[:, R["eyes"]], 1.0)
    # Against one face's map the others' eyes land partly elsewhere.
    shifted = regions.shares(saliency, np.broadcast_to(maps[0], maps.shape).copy(), normalize=None)
    assert shifted[1:, R["eyes"]].min() < 0.9


def test_zero_map_gives_nan_row():
    out = regions.shares(np.zeros((2, 48, 48)), regions.template(), normalize=None)
    assert np.isnan(out).all()


@pytest.mark.parametrize("maps, region_maps, kwargs, match", [
    (np.ones((2, 48, 47)), regions.template(), {}, "'maps' parameter .* shape"),
    (np.ones((2, 3, 48, 48)), regions.template(), {}, "'maps' parameter .* shape"),
    (-np.ones((1, 48, 48)), regions.template(), {}, "non-negative.*np.abs"),
    (np.full((1, 48, 48), np.nan), regions.template(), {}, "finite"),
    (np.ones((2, 48, 48)), np.zeros((3, 48, 48), np.uint8), {}, r"one template shaped \(48, 48\) or \(2, 48, 48\) maps"),
    (np.ones((2, 48, 48)), np.zeros((48, 40), np.uint8), {}, "'regions' parameter .* shape"),
    (np.ones((2, 48, 48)), np.full((48, 48), 0.5), {}, "integer region ids"),
    (np.ones((2, 48, 48)), np.full((48, 48), 9), {}, r"ids in \[0, 9\)"),
    (np.ones((2, 48, 48)), regions.template(), {"normalize": "max"}, "'normalize' parameter"),
])
def test_bad_input(maps, region_maps, kwargs, match):
    with pytest.raises(ValueError, match=match):
        regions.shares(maps, region_maps, **kwargs)


def test_area_shares_bad_input():
    with pytest.raises(ValueError, match="'regions' parameter"):
        regions.area_shares(np.zeros((48,), np.uint8))


# --------------------------------------------------------------------------- registration


def _shifted(images, dy, dx):
    return np.roll(np.roll(images, dy, axis=1), dx, axis=2)


def test_registration_finds_known_shifts(synthetic_small):
    faces = synthetic_small.images[:200]
    base = regions.registration(faces)
    moved = regions.registration(np.concatenate([faces, _shifted(faces, 3, 0), _shifted(faces, 0, -3)]))
    rows = moved.dy[200:400] - moved.dy[:200]  # against the same mean face
    cols = moved.dx[400:] - moved.dx[:200]
    assert np.mean(np.abs(rows - 3) <= 1) > 0.8
    assert np.mean(np.abs(cols + 3) <= 1) > 0.7
    share, low, high = base.within("rows")
    assert low <= share <= high and base.n == 200
    assert "registration of 200 faces against their mean face" in base.summary()
    assert "nan" not in base.summary() and "inf" not in base.summary()


def test_registration_of_identical_faces_is_perfect(synthetic_small):
    faces = np.repeat(synthetic_small.images[:1], 20, axis=0)
    result = regions.registration(faces)
    assert (result.dy == 0).all() and (result.dx == 0).all() and result.within("columns")[0] == 1.0


def test_registration_draws(synthetic_small):
    from fervis import plots

    ax = plots.registration(regions.registration(synthetic_small.images[:50]))
    assert ax.get_title() == "registration, n = 50" and len(ax.get_legend().get_texts()) == 2


@pytest.mark.parametrize("images, kwargs, match", [
    (np.zeros((3, 40, 40)), {}, r"'images' parameter of fervis.regions.registration must be faces shaped"),
    (np.zeros((3, 48, 48)), {"tolerance": -1}, "'tolerance' parameter"),
    (np.zeros((3, 48, 48)), {"max_shift": 30}, "'max_shift' parameter"),
])
def test_registration_bad_input(images, kwargs, match):
    with pytest.raises(ValueError, match=match):
        regions.registration(images, **kwargs)


def test_registration_on_real_faces(fer2013_path):
    from fervis import data

    faces = data.load(fer2013_path).subset("PublicTest")
    result = regions.registration(faces.images)
    assert abs(result.eye_row - result.template_eye_row) < 1.5  # the template was read off this mean face
    assert abs(result.mouth_row - result.template_mouth_row) < 1.5
    assert 0.4 < result.within("rows")[0] < 0.95  # about half, far from all: the figure the notebook shows


# --------------------------------------------------------------------------- for_dataset


def _without_regions(dataset):
    from fervis.dataset import Dataset

    return Dataset(dataset.images, dataset.labels, dataset.splits, source="no regions")


def test_for_dataset_gives_the_datasets_own_regions(synthetic_small):
    got = regions.for_dataset(synthetic_small)
    assert got.shape == synthetic_small.images.shape and got.dtype == np.uint8
    np.testing.assert_array_equal(got, synthetic_small.regions)
    assert not got.flags.writeable


def test_for_dataset_broadcasts_the_template_without_regions(synthetic_small):
    plain = _without_regions(synthetic_small.take(np.arange(5)))
    got = regions.for_dataset(plain)
    assert got.shape == (5, 48, 48) and got.dtype == np.uint8 and not got.flags.writeable
    for face in got:
        np.testing.assert_array_equal(face, regions.template())
    assert regions.for_dataset(_without_regions(synthetic_small.take(np.arange(0)))).shape == (0, 48, 48)


@pytest.mark.parametrize("bad", [regions.template(), None, "synthetic"])
def test_for_dataset_rejects_non_datasets(bad):
    with pytest.raises(ValueError, match="'dataset' parameter of fervis.regions.for_dataset must be a fervis Dataset"):
        regions.for_dataset(bad)


def test_shares_take_a_dataset_for_its_regions(synthetic_small):
    faces = synthetic_small.take(np.arange(4))
    maps = np.random.default_rng(0).uniform(0, 1, (4, 48, 48))
    np.testing.assert_array_equal(regions.shares(maps, faces), regions.shares(maps, faces.regions))
    plain = _without_regions(faces)
    np.testing.assert_allclose(regions.shares(maps, plain, normalize=None),  # one map: a matrix product
                               regions.shares(maps, regions.template(), normalize=None), rtol=1e-12)
    np.testing.assert_array_equal(regions.area_shares(plain), regions.area_shares(regions.for_dataset(plain)))


def test_names_for_and_region_functions_take_the_names_from_the_dataset(synthetic_small):
    """A Dataset stands for its regions and their names; names that are not the Dataset's are refused
    naming 'region_names' (they used to surface as an id-range error about 'regions')."""
    from fervis import saliency
    from fervis.dataset import Dataset

    faces = synthetic_small.take(np.arange(12))
    plain = Dataset(faces.images, faces.labels, faces.splits)
    assert regions.names_for(faces) == tuple(faces.region_names)
    assert regions.names_for(plain) == regions.REGION_NAMES
    maps = np.random.default_rng(0).uniform(0, 1, (12, 48, 48))
    pd.testing.assert_frame_equal(saliency.region_shares(maps, faces, faces.labels),
                                  saliency.region_shares(maps, faces.regions, faces.labels, faces.region_names))
    with pytest.raises(ValueError, match=r"'region_names' parameter of fervis.saliency.region_shares must be None "
                                         r"or the names of the Dataset's regions"):
        saliency.region_shares(maps, faces, faces.labels, faces.region_names[:3])
    with pytest.raises(ValueError, match=r"'region_names' parameter .* \(None only when 'regions' is a Dataset\)"):
        saliency.region_shares(maps, faces.regions, faces.labels)
    with pytest.raises(ValueError, match=r"'dataset' parameter of fervis.regions.names_for must be a fervis Dataset"):
        regions.names_for(faces.regions)
