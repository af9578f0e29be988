"""fervis.plots as a package: every name still at ``plots.x``, one face primitive, one grid layout."""

import types

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from fervis import plots
from fervis.plots import _common as draw

#: ``fervis.plots.__all__`` when plots was one module (plus ``registration``, public but unlisted then):
#: notebooks, widgets, report and tests call every one of them as ``plots.x``.
OLD_NAMES = [
    "show_face", "face_grid", "saliency_panel", "saliency_gallery", "class_mean_grid", "table_heatmap",
    "region_template", "faithfulness_curves", "randomization_strip", "cue_bars", "ascent_grid", "compare_presets",
    "feature_map_grid", "exemplar_grid", "filter_panel", "class_distribution_bars", "confusion_heatmap",
    "reliability_diagram", "class_metric_bars", "support_recall_scatter", "lime_overlay", "lime_grid", "lime_examples",
    "region_share_heatmap", "confusion_cell_grid", "ambiguous_grid", "embedding_scatter", "training_curves",
    "explanation_drift", "training_dashboard", "probe_maps_grid", "registration",
]
MODULES = ("faces", "saliency", "filters", "labels", "monitoring")


@pytest.mark.parametrize("name", OLD_NAMES)
def test_every_old_name_is_still_reachable(name):
    assert name in plots.__all__ and callable(getattr(plots, name))
    homes = [m for m in MODULES if name in getattr(plots, m).__all__]
    assert len(homes) == 1 and getattr(getattr(plots, homes[0]), name) is getattr(plots, name)


def test_all_lists_each_modules_names_once():
    names = [n for m in MODULES for n in getattr(plots, m).__all__]
    assert sorted(plots.__all__) == sorted(names) == sorted(set(names))
    namespace = {}
    exec("from fervis.plots import *", namespace)
    assert set(plots.__all__) <= set(namespace)


def test_grid_sizes_the_figure_by_its_cells():
    fig, axes = draw.grid(3, 4, size=1.5, aspect=1.2, pad=(0.4, 0.3), axis_off=True)
    np.testing.assert_allclose(fig.get_size_inches(), [1.5 * 4 + 0.4, 1.5 * 1.2 * 3 + 0.3])
    assert axes.shape == (3, 4) and not any(ax.axison for ax in axes.ravel())
    given = plt.figure(figsize=(2, 2))
    fig, axes = draw.grid(1, 1, given)
    assert fig is given and axes.shape == (1, 1) and axes[0, 0].axison
    assert [draw.rows_for(n, 7) for n in (0, 1, 7, 8)] == [1, 1, 1, 2]


def test_face_draws_pixels_as_they_are_with_a_map_over_them():
    ax = draw.face(plt.figure().gca(), np.full((48, 48, 1), 200, np.uint8), np.eye(48), title="t", fontsize=7)
    face, overlay = ax.get_images()
    assert face.get_array().shape == (48, 48) and face.get_clim() == (0, 255) and face.get_cmap().name == "gray"
    assert overlay.get_cmap().name == "jet" and overlay.get_alpha() == 0.5
    assert {im.get_interpolation() for im in ax.get_images()} == {"nearest"}
    assert ax.get_title() == "t" and ax.title.get_fontsize() == 7 and not ax.axison


@pytest.mark.parametrize("draw_figure", [
    lambda f, m: plots.face_grid(f, titles=list("abcde"), ncols=3),
    lambda f, m: plots.confusion_cell_grid(f[:2], m[:2], m[2:4], m[:2] - m[2:4], "sad", "fear"),
    lambda f, m: plots.lime_grid(f[:3], m[:3] - 0.5, np.zeros((3, 48, 48), int), ncols=2),
    lambda f, m: plots.saliency_gallery(f[:3], {"Gradient": m[:3]}),
    lambda f, m: plots.feature_map_grid(m[0][..., None].repeat(3, -1), face=f[0]),
])
def test_every_face_and_map_is_drawn_pixel_for_pixel(draw_figure):
    rng = np.random.default_rng(0)
    fig = draw_figure(rng.integers(0, 256, (5, 48, 48)).astype(np.uint8), rng.random((5, 48, 48)))
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert images and {im.get_interpolation() for im in images} == {"nearest"}


def _boxes(fig, texts):
    renderer = fig.canvas.get_renderer()
    return [t.get_window_extent(renderer) for t in texts]


def test_gallery_row_labels_are_wrapped_so_that_they_do_not_overlap():
    methods = ["SmoothGrad", "Integrated Gradients", "Grad-CAM on block4_act2", "Grad-CAM++ on block4_act2",
               "Score-CAM on block4_act2", "LayerCAM on block4_act2"]
    rng = np.random.default_rng(0)
    faces, maps = rng.integers(0, 256, (7, 48, 48)), rng.random((7, 48, 48))
    fig = plots.saliency_gallery(faces, {m: maps for m in methods}, labels=np.arange(7),
                                 probs=rng.dirichlet(np.ones(7), 7))
    labels = [t for ax in fig.axes for t in ax.texts if t.get_rotation() == 90]
    assert [t.get_text().replace("\n", " ") for t in labels] == ["face", "SmoothGrad map", *methods]
    assert labels[0].get_text() == "face" and "\n" in labels[-1].get_text()  # only the long ones wrap
    boxes = _boxes(fig, labels)
    for above, below in zip(boxes, boxes[1:]):
        assert below.y1 <= above.y0, "neighbouring row labels overlap"
    assert min(b.x0 for b in boxes) >= 0  # inside the figure


def test_class_mean_grid_and_probe_grid_label_their_rows():
    fig = plots.class_mean_grid(np.random.default_rng(0).random((2, 7, 48, 48)), np.ones((2, 7), int))
    assert [t.get_text() for ax in fig.axes for t in ax.texts] == ["correct", "wrong"]
    probes = types.SimpleNamespace(names=["happy", "sad"], images=np.zeros((2, 48, 48)))
    history = types.SimpleNamespace(epochs=np.arange(2), probes=probes, drift=np.array([[np.nan] * 2, [0.5, 0.7]]),
                                    maps=np.zeros((2, 2, 48, 48)))
    fig = plots.probe_maps_grid(history)
    rows = [t.get_text() for ax in fig.axes for t in ax.texts if t.get_rotation() == 90]
    assert rows == ["epoch 1", "epoch 2"] and [ax.get_title() for ax in fig.axes[:2]] == ["happy", "sad"]


def test_region_template_and_lime_overlay_draw_over_one_face():
    regions = np.zeros((48, 48), int)
    regions[20:30] = 3
    ax = plots.region_template(np.zeros((48, 48)), regions, [f"r{i}" for i in range(9)], title="t")
    face, overlay = ax.get_images()
    assert overlay.get_clim() == (-0.5, 8.5) and [t.get_text() for t in ax.get_legend().get_texts()] == ["r0", "r3"]
    lime = np.zeros((48, 48))
    lime[:24], lime[24:] = 1.0, -0.5
    ax = plots.lime_overlay(np.zeros((48, 48)), lime)
    rgba = ax.get_images()[1].get_array()
    assert rgba.shape == (48, 48, 4) and rgba[0, 0, 1] == 1 and rgba[-1, -1, 0] == 1  # green for, red against
    assert rgba[0, 0, 3] == pytest.approx(0.55) and rgba[-1, -1, 3] == pytest.approx(0.275)


def test_table_heatmap_makes_its_own_axes_when_none_given():
    table = pd.DataFrame([[0.1, 0.9]], index=["happy"], columns=["eyes", "mouth"])
    ax = plots.table_heatmap(table, title="shares")
    assert ax.get_title() == "shares" and [t.get_text() for t in ax.texts] == ["0.10", "0.90"]
    np.testing.assert_allclose(ax.figure.get_size_inches(), [0.75 * 2 + 2.2, 0.36 * 1 + 1.0])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["happy"]  # no n known: the name alone


def test_table_heatmap_rows_carry_their_n(synthetic_small):
    """The region tables keep each class's n in attrs; the heat map's rows say it (one per row, or a range)."""
    from fervis import regions, saliency

    faces = synthetic_small.take(np.arange(60))
    maps = np.random.default_rng(0).random((60, 48, 48))
    table = saliency.region_shares(maps, regions.for_dataset(faces), faces.labels, regions.names_for(faces))
    ax = plots.table_heatmap(table)
    counts = dict(zip(faces.class_names, np.bincount(faces.labels, minlength=7)), all=len(faces))
    expected = [f"{c} (n = {counts[c]})" for c in table.index]
    assert [t.get_text() for t in ax.get_yticklabels()] == expected
    per_cell = table.copy()
    per_cell.attrs = {"n": pd.DataFrame(5, index=table.index, columns=table.columns)}
    per_cell.attrs["n"].iloc[0, 0] = 3
    labels = [t.get_text() for t in plots.table_heatmap(per_cell).get_yticklabels()]
    assert labels[0] == f"{table.index[0]} (n = 3-5)" and labels[1] == f"{table.index[1]} (n = 5)"
    shown = per_cell[list(table.columns[1:])]  # pandas carries attrs to a column subset: the hidden cell's n goes
    assert plots.table_heatmap(shown).get_yticklabels()[0].get_text() == f"{table.index[0]} (n = 5)"
