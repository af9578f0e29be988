"""All drawing in fervis. Every function takes ``ax=None`` (or ``fig=None``), draws, and
returns the axes (or figure); none calls ``plt.show()`` or ``savefig()``.

Sections, one per question; each developer edits only their own section.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from fervis.constants import CLASS_NAMES, OVERFIT_MIN_RISE

__all__ = ["show_face", "face_grid"]


def _axes(ax):
    if ax is None:
        _, ax = plt.subplots()
    return ax


def show_face(image, ax=None, title=None, overlay=None, cmap="gray", alpha=0.5):
    """Draw one 48x48 face, optionally with a heat map ``overlay`` of the same shape.

    Returns
    -------
    matplotlib.axes.Axes
    """
    ax = _axes(ax)
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[..., 0]
    ax.imshow(image, cmap=cmap, vmin=0, vmax=255)
    if overlay is not None:
        ax.imshow(np.asarray(overlay), cmap="jet", alpha=alpha)
    if title is not None:
        ax.set_title(title, fontsize=8)
    ax.set_axis_off()
    return ax


def face_grid(images, titles=None, ncols=7, size=1.4, fig=None):
    """Draw faces in a grid; returns the figure."""
    images = np.asarray(images)
    n = len(images)
    nrows = max(1, int(np.ceil(n / ncols)))
    if fig is None:
        fig = plt.figure(figsize=(size * ncols, size * nrows * 1.15))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        if i < n:
            show_face(images[i], ax=ax, title=None if titles is None else titles[i])
        else:
            ax.set_axis_off()
    return fig


# --- saliency (notebook 1) -------------------------------------------------------------

__all__ += ["saliency_panel", "saliency_gallery", "class_mean_grid", "table_heatmap", "region_template",
            "faithfulness_curves", "randomization_strip", "cue_bars"]


def _overlay(ax, image, saliency_map=None, title=None, alpha=0.5):
    """A face with an optional heat map over it, drawn pixel for pixel (``nearest``: 48x48
    maps are not smoothed into detail they do not have, and the figures stay small)."""
    image = np.asarray(image)
    ax.imshow(image[..., 0] if image.ndim == 3 else image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    if saliency_map is not None:
        ax.imshow(np.asarray(saliency_map), cmap="jet", alpha=alpha, interpolation="nearest")
    if title is not None:
        ax.set_title(title, fontsize=8)
    ax.set_axis_off()
    return ax


def _heat(ax, saliency_map, title=None, fontsize=8):
    ax.imshow(np.asarray(saliency_map), cmap="jet", vmin=0, interpolation="nearest")
    if title is not None:
        ax.set_title(title, fontsize=fontsize)
    ax.set_axis_off()
    return ax


def _mark(ax, problem):
    """Write what is wrong with a map (``"empty"``, ``"constant"``, ``"non-finite"``) across its axes."""
    if problem:
        ax.text(0.5, 0.5, f"{problem} map", transform=ax.transAxes, ha="center", va="center", fontsize=7,
                color="white", bbox={"facecolor": "red", "alpha": 0.8, "pad": 1.5, "linewidth": 0})


def _label_row(ax, text):
    """Write a row label left of an axes whose frame is hidden."""
    ax.text(-0.08, 0.5, text, transform=ax.transAxes, rotation=90, ha="right", va="center", fontsize=8)


def saliency_panel(image, saliency_map, title=None, fig=None, size=2.0, alpha=0.5):
    """One face, its map and the overlay side by side, with a title above.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if fig is None:
        fig = plt.figure(figsize=(3 * size, size + 0.5))
    axes = fig.subplots(1, 3)
    _overlay(axes[0], image, title="face")
    _heat(axes[1], saliency_map, title="map")
    _overlay(axes[2], image, saliency_map, alpha=alpha, title="overlay")
    if title is not None:
        fig.suptitle(title, fontsize=9)
    return fig


def saliency_gallery(images, maps, titles=None, labels=None, probs=None, class_names=CLASS_NAMES, show_map=True,
                     fig=None, size=1.35, alpha=0.5, problems=None):
    """Faces and their saliency: a column per face, the face on top, then (``show_map``) the
    first method's bare map, then one overlay row per method.

    Parameters
    ----------
    images : array ``(n, 48, 48)`` or ``(n, 48, 48, 1)``
    maps : dict method name -> array ``(n, 48, 48)``
    titles : list of str, optional
        One per face; by default built from ``labels`` and ``probs`` when given: the true
        label, the predicted one and its probability.
    labels : int array ``(n,)``, optional
    probs : float array ``(n, k)``, optional
    problems : dict method name -> str array ``(n,)``, optional
        :func:`fervis.saliency.map_problems` of each method's maps: a degenerate map is
        marked ("empty map") on its panel.

    Returns
    -------
    matplotlib.figure.Figure
    """
    images = np.asarray(images)
    problems = problems or {}
    if titles is None and probs is not None:
        probs = np.asarray(probs)
        titles = [(f"true {class_names[int(labels[i])]}\n" if labels is not None else "")
                  + f"pred {class_names[int(probs[i].argmax())]} {probs[i].max():.2f}" for i in range(len(images))]
    methods = list(maps)
    n = len(images)
    rows = 1 + bool(show_map and methods) + len(methods)
    if fig is None:
        fig = plt.figure(figsize=(size * max(n, 1) + 0.4, size * 1.12 * rows + 0.3))
    axes = fig.subplots(rows, max(n, 1), squeeze=False)
    for j in range(n):
        _overlay(axes[0, j], images[j], title=None if titles is None else titles[j])
        r = 1
        if show_map and methods:
            _heat(axes[r, j], maps[methods[0]][j])
            _mark(axes[r, j], problems[methods[0]][j] if methods[0] in problems else "")
            r += 1
        for method in methods:
            _overlay(axes[r, j], images[j], maps[method][j], alpha=alpha)
            _mark(axes[r, j], problems[method][j] if method in problems else "")
            r += 1
    labels = ["face"] + ([f"{methods[0]} map"] if show_map and methods else []) + methods
    for r, text in enumerate(labels):
        _label_row(axes[r, 0], text)
    return fig


def class_mean_grid(means, counts, class_names=CLASS_NAMES, row_names=("correct", "wrong"), background=None,
                    fig=None, size=1.35, alpha=0.55, excluded=None, title=None):
    """Class-mean saliency maps (:func:`fervis.saliency.class_mean_maps`): a row per group
    (correct, wrong), a column per class, titled with the number of faces averaged.

    Parameters
    ----------
    means : array ``(rows, k, 48, 48)``; NaN where a group has no face
    counts : int array ``(rows, k)``
    background : array ``(rows, k, 48, 48)``, optional
        Mean faces drawn under the maps.
    excluded : int array ``(rows, k)``, optional
        Degenerate maps left out of each mean (:func:`fervis.saliency.class_mean_maps`),
        written in the title where there are any.
    title : str, optional
        Above the grid (name the method and its layer: "Grad-CAM on block4_act2").

    Returns
    -------
    matplotlib.figure.Figure
    """
    means = np.asarray(means)
    rows, k = means.shape[:2]
    if fig is None:
        fig = plt.figure(figsize=(size * k + 0.4, size * 1.2 * rows + 0.2))
    axes = fig.subplots(rows, k, squeeze=False)
    for r in range(rows):
        for c in range(k):
            ax = axes[r, c]
            ax.set_axis_off()
            left = 0 if excluded is None else int(excluded[r, c])
            caption = f"{class_names[c]} (n={int(counts[r, c])}" + (f", {left} left out)" if left else ")")
            if not np.isfinite(means[r, c]).all():
                ax.set_title(f"{class_names[c]} (none" + (f"; {left} left out)" if left else ")"), fontsize=7)
                continue
            if background is not None and np.isfinite(background[r, c]).all():
                _overlay(ax, background[r, c], means[r, c], alpha=alpha, title=caption)
                ax.title.set_fontsize(7)
            else:
                _heat(ax, means[r, c], title=caption, fontsize=7)
        _label_row(axes[r, 0], row_names[r])
    if title is not None:
        fig.suptitle(title, fontsize=9)
    return fig


def table_heatmap(table, ax=None, title=None, fmt="{:.2f}", cmap="viridis", center=None):
    """A class x region table (region shares, concentrations, occlusion drops) as a heat map
    with its numbers written in each cell.

    Parameters
    ----------
    table : pandas.DataFrame
    center : float, optional
        Colour scale centred here with a diverging map (1 for concentrations, 0 for drops).

    Returns
    -------
    matplotlib.axes.Axes
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(0.75 * table.shape[1] + 1.6, 0.36 * table.shape[0] + 1.0))
    values = table.to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    kwargs = {"cmap": cmap}
    if center is not None and finite.size:
        spread = max(np.abs(finite - center).max(), 1e-9)
        kwargs = {"cmap": "RdBu_r", "vmin": center - spread, "vmax": center + spread}
    image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", **kwargs)
    ax.set_xticks(range(table.shape[1]), [str(c) for c in table.columns], rotation=40, ha="right", fontsize=7)
    ax.set_yticks(range(table.shape[0]), [str(i) for i in table.index], fontsize=7)
    low, high = image.get_clim()
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isfinite(values[i, j]):
                dark = (values[i, j] - low) / max(high - low, 1e-12)
                color = "white" if (dark < 0.35 if center is None else abs(dark - 0.5) > 0.3) else "black"
                ax.text(j, i, fmt.format(values[i, j]), ha="center", va="center", fontsize=6.5, color=color)
    if title is not None:
        ax.set_title(title, fontsize=9)
    return ax


def region_template(mean_face, regions, region_names, ax=None, title=None, alpha=0.45):
    """Region ids drawn in colour over a (mean) face, with a legend of the regions present.

    Returns
    -------
    matplotlib.axes.Axes
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    if ax is None:
        _, ax = plt.subplots(figsize=(3.6, 2.6))
    regions = np.asarray(regions)
    colors = plt.get_cmap("tab10").colors
    cmap = ListedColormap([colors[i % len(colors)] for i in range(len(region_names))])
    _overlay(ax, mean_face, title=title)
    ax.imshow(regions, cmap=cmap, vmin=-0.5, vmax=len(region_names) - 0.5, alpha=alpha, interpolation="nearest")
    present = sorted(set(np.unique(regions).tolist()))
    ax.legend(handles=[Patch(color=cmap(i), label=region_names[i]) for i in present], fontsize=6,
              loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    return ax


def registration(result, ax=None, title=None):
    """How far faces sit from their mean face (:func:`fervis.regions.registration`): histograms of
    the row and the column shifts, the tolerance band shaded, the registered shares in the legend.

    Returns
    -------
    matplotlib.axes.Axes
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(3.6, 2.4))
    bins = np.arange(min(result.dy.min(initial=0), result.dx.min(initial=0)) - 0.5,
                     max(result.dy.max(initial=0), result.dx.max(initial=0)) + 1.5)
    for shifts, which, label in ((result.dy, "rows", "eye/mouth rows"), (result.dx, "columns", "left-right centre")):
        share, _, _ = result.within(which)
        ax.hist(shifts, bins=bins, histtype="step", linewidth=1.5, label=f"{label}: {100 * share:.0f} % within")
    ax.axvspan(-result.tolerance - 0.5, result.tolerance + 0.5, color="0.9", zorder=0)
    ax.set_xlabel("shift from the mean face (px)")
    ax.set_ylabel("faces")
    ax.legend(fontsize=7, frameon=False)
    ax.set_title(title or f"registration, n = {result.n:,}", fontsize=9)
    return ax


def faithfulness_curves(result, fig=None):
    """Mean deletion and insertion curves per method (:func:`fervis.saliency.faithfulness`),
    the random baseline dashed, AUCs and the paired test's p-values against random in the legend.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if fig is None:
        fig = plt.figure(figsize=(9, 3.2))
    axes = fig.subplots(1, 2)
    for ax, kind in zip(axes, ("deletion", "insertion")):
        for method, curves in result.curves.items():
            auc = result.table.loc[method, f"{kind}_auc"]
            p = result.table.loc[method, f"{kind}_p"] if f"{kind}_p" in result.table else np.nan
            style = {"color": "black", "linestyle": "--"} if method == "random" else {}
            label = f"{method} {auc:.3f}" + (f" (p {p:.2g})" if np.isfinite(p) else "")
            ax.plot(result.fractions, curves[kind].mean(axis=0), label=label, **style)
        ax.set_xlabel(f"fraction of pixels {'removed' if kind == 'deletion' else 'inserted'}", fontsize=8)
        ax.set_ylabel("probability of the class", fontsize=8)
        ax.set_title(f"{kind} ({'lower' if kind == 'deletion' else 'higher'} AUC is better)", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def randomization_strip(result, method, images=None, faces=3, fig=None, size=1.15, label=None):
    """The model-randomisation strip for one method: a row per face, a column per stage
    (trained, then re-initialised down to each layer), titled with the mean rank correlation
    ("ρ undefined" where every map was empty or constant).

    Parameters
    ----------
    label : str, optional
        The method as the title names it (``saliency.method_label``: "Grad-CAM on
        block4_act2"); default ``method``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    maps = result.maps[method]
    stages = result.stages
    faces = min(faces, maps.shape[1])
    lead = images is not None
    cols = len(stages) + lead
    if fig is None:
        fig = plt.figure(figsize=(size * cols + 0.3, size * 1.25 * faces + 0.4))
    axes = fig.subplots(faces, cols, squeeze=False)
    rho = result.correlation[method]
    for i in range(faces):
        if lead:
            _overlay(axes[i, 0], images[i], title="face" if i == 0 else None)
        for s, stage in enumerate(stages):
            value = f"ρ {rho.iloc[s]:.2f}" if np.isfinite(rho.iloc[s]) else "ρ undefined"
            _heat(axes[i, lead + s], maps[s, i], title=f"{stage}\n{value}" if i == 0 else None, fontsize=6.5)
    fig.suptitle(f"{label or method}: layers re-initialised from the top (ρ: Spearman with the trained maps)",
                 fontsize=8)
    return fig


def cue_bars(tables, ax=None, title=None):
    """Share of saliency on each class's cue regions per method, beside the regions' area share.

    Parameters
    ----------
    tables : dict method -> DataFrame from :func:`fervis.saliency.cue_check`

    Returns
    -------
    matplotlib.axes.Axes
    """
    methods = list(tables)
    first = tables[methods[0]]
    classes = list(first.index)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.05 * len(classes) + 1.5, 3.0))
    width = 0.8 / (len(methods) + 1)
    x = np.arange(len(classes))
    ax.bar(x, first.loc[classes, "area_share"], width, color="lightgray", label="area share")
    for m, method in enumerate(methods):
        ax.bar(x + (m + 1) * width, tables[method].loc[classes, "cue_share"], width, label=method)
    ax.set_xticks(x + width * len(methods) / 2, classes, fontsize=7)
    ax.set_ylabel("share of saliency mass", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, frameon=False)
    ax.set_title(title or "saliency on the regions that carry each class's cue", fontsize=9)
    return ax


# --- filters (notebook 2) --------------------------------------------------------------

__all__ += ["ascent_grid", "compare_presets", "feature_map_grid", "exemplar_grid", "filter_panel"]


def _ascent_title(result, i, name=None):
    """'f3 s0' (or ``name``) and the numbers of image ``i``: activation, % of the best face, noise."""
    head = name or f"f{int(result.filter_idx[i])} s{int(result.seed[i])}"
    frac = result.fraction[i]
    share = "" if not np.isfinite(frac) else f" ({100 * frac:.0f}%)"
    return f"{head}\nact {result.activation[i]:.2f}{share}\nnoise {result.noise[i]:.2f}"


def _gray(ax, image, title=None):
    ax.imshow(np.asarray(image), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    if title is not None:
        ax.set_title(title, fontsize=7)
    ax.set_axis_off()
    return ax


def ascent_grid(result, fig=None, size=1.3, names=None):
    """Gradient-ascent images of :func:`fervis.filters.maximize`: a row per filter, a column
    per seed, each titled with its activation, its share of the best real face's (in %) and
    its noise score.

    Parameters
    ----------
    result : fervis.filters.Maximization
    names : sequence of str, optional
        A name per filter index (e.g. the class names for ``"predictions"``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    filters, seeds = result.filters, result.seeds
    if fig is None:
        fig = plt.figure(figsize=(size * seeds + 0.2, size * 1.5 * len(filters) + 0.3), layout="constrained")
    axes = fig.subplots(len(filters), seeds, squeeze=False)
    for i in range(len(result)):
        f, seed = int(result.filter_idx[i]), int(result.seed[i])
        head = f"{names[f] if names is not None else f'f{f}'}" + (f" s{seed}" if seeds > 1 else "")
        _gray(axes[filters.index(f), seed], result.images[i], _ascent_title(result, i, head))
    fig.suptitle(f"{result.layer_name}: {result.preset} ({result.steps} steps)", fontsize=9)
    return fig


def compare_presets(results, fig=None, size=1.3):
    """Ascent images side by side: ``results`` maps a column name (a preset, or a layer and a
    preset) to a :class:`fervis.filters.Maximization` of the same filters; a row per filter
    (first seed), each image titled with its numbers.

    Returns
    -------
    matplotlib.figure.Figure
    """
    names = list(results)
    filters = results[names[0]].filters
    if fig is None:
        fig = plt.figure(figsize=(size * len(names) + 0.2, size * 1.5 * len(filters) + 0.3), layout="constrained")
    axes = fig.subplots(len(filters), len(names), squeeze=False)
    for col, name in enumerate(names):
        result = results[name]
        for row, f in enumerate(filters):
            i = int(np.flatnonzero((result.filter_idx == f) & (result.seed == 0))[0])
            _gray(axes[row, col], result.images[i], _ascent_title(result, i, f"{name} f{f}"))
    layers = list(dict.fromkeys(r.layer_name for r in results.values()))
    steps = sorted({r.steps for r in results.values()})
    fig.suptitle(f"{', '.join(layers)} ({'/'.join(map(str, steps))} steps)", fontsize=9)
    return fig


def feature_map_grid(maps, face=None, fig=None, ncols=8, max_maps=32, size=1.1, title=None):
    """One face's outputs of a layer: a panel per filter (each scaled to its own range).

    Parameters
    ----------
    maps : array (h, w, c), or (n, h, w, c) of which the first is drawn
    face : array (48, 48), optional
        Drawn first, for reference.
    max_maps : int, default 32
        Draw the first ``max_maps`` filters.

    Returns
    -------
    matplotlib.figure.Figure
    """
    maps = np.asarray(maps)
    if maps.ndim == 4:
        maps = maps[0]
    count = min(maps.shape[-1], max_maps)
    panels = count + (face is not None)
    rows = max(1, int(np.ceil(panels / ncols)))
    if fig is None:
        fig = plt.figure(figsize=(size * ncols, size * 1.15 * rows + 0.3), layout="constrained")
    axes = fig.subplots(rows, ncols, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    offset = 0
    if face is not None:
        show_face(face, ax=axes[0], title="face")
        offset = 1
    for c in range(count):
        ax = axes[offset + c]
        ax.imshow(maps[..., c], cmap="viridis", interpolation="nearest")
        ax.set_title(f"f{c} max {maps[..., c].max():.1f}", fontsize=6)
    if title is not None:
        fig.suptitle(title, fontsize=9)
    return fig


def _box(ax, box, color="red"):
    from matplotlib.patches import Rectangle

    y0, x0, y1, x1 = (int(v) for v in box)
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=1))


def exemplar_grid(exemplars, ascent=None, fig=None, size=1.1, crops=True):
    """The faces that drive each filter hardest: a row per filter with, from the left, the
    gradient-ascent image (when ``ascent`` holds that filter), the k faces with the receptive
    field around the peak boxed, and (``crops=True``) the k crops.

    Returns
    -------
    matplotlib.figure.Figure
    """
    k = exemplars.indices.shape[1]
    filters = exemplars.filter_idx.tolist()
    lead = 1 if ascent is not None else 0
    ncols = lead + k * (2 if crops else 1)
    if fig is None:
        fig = plt.figure(figsize=(size * ncols, size * 1.45 * len(filters) + 0.3), layout="constrained")
    axes = fig.subplots(len(filters), ncols, squeeze=False)
    for row, f in enumerate(filters):
        if lead:
            axes[row, 0].set_axis_off()
            hits = np.flatnonzero((ascent.filter_idx == f) & (ascent.seed == 0))
            if len(hits):
                _gray(axes[row, 0], ascent.images[hits[0]], _ascent_title(ascent, int(hits[0]), f"ascent f{f}"))
        for j in range(k):
            ax = axes[row, lead + j]
            _gray(ax, exemplars.faces[row, j], f"#{exemplars.indices[row, j]} {exemplars.values[row, j]:.2f}")
            if exemplars.receptive_field.spatial:
                _box(ax, exemplars.boxes[row, j])
            if crops:
                _gray(axes[row, lead + k + j], exemplars.crops[row, j], "crop" if j == 0 else None)
    size_px = exemplars.receptive_field.size
    fig.suptitle(f"{exemplars.layer_name}: top faces, receptive field {size_px[0]}x{size_px[1]} px", fontsize=9)
    return fig


def filter_panel(ascent, exemplars, maps, face, filter_idx, fig=None, size=1.5):
    """Everything about one filter: ascent image, the face and the filter's map on it, and the
    top faces with their receptive fields (the widget's view).

    Parameters
    ----------
    ascent : Maximization holding ``filter_idx``
    exemplars : Exemplars holding ``filter_idx``
    maps : array (h, w, c)
        The layer's output on ``face``; ``None`` for a layer without spatial output.
    face : array (48, 48)
    filter_idx : int

    Returns
    -------
    matplotlib.figure.Figure
    """
    row = exemplars.filter_idx.tolist().index(filter_idx)
    k = exemplars.indices.shape[1]
    ncols = max(3, k)
    if fig is None:
        fig = plt.figure(figsize=(size * ncols, size * 2.8), layout="constrained")
    axes = fig.subplots(2, ncols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    i = int(np.flatnonzero(ascent.filter_idx == filter_idx)[0])
    _gray(axes[0, 0], ascent.images[i], _ascent_title(ascent, i, f"{ascent.preset} f{filter_idx}"))
    show_face(face, ax=axes[0, 1], title="face")
    if maps is not None:
        axes[0, 2].imshow(np.asarray(maps)[..., filter_idx], cmap="viridis", interpolation="nearest")
        axes[0, 2].set_title(f"map f{filter_idx}", fontsize=7)
    for j in range(k):
        ax = axes[1, j]
        _gray(ax, exemplars.faces[row, j], f"#{exemplars.indices[row, j]} {exemplars.values[row, j]:.2f}")
        if exemplars.receptive_field.spatial:
            _box(ax, exemplars.boxes[row, j])
    fig.suptitle(f"{ascent.layer_name} filter {filter_idx}", fontsize=9)
    return fig


# --- labels (notebook 3) ---------------------------------------------------------------

__all__ += [
    "class_distribution_bars", "confusion_heatmap", "reliability_diagram", "class_metric_bars", "support_recall_scatter", "lime_overlay",
    "lime_grid", "lime_examples", "region_share_heatmap", "confusion_cell_grid", "ambiguous_grid", "embedding_scatter",
]


def class_distribution_bars(counts, ax=None, normalize=True):
    """Grouped bars: each class's share (or count) of the faces of each split.

    Parameters
    ----------
    counts : pandas.DataFrame
        Splits x classes, from :func:`fervis.labels.class_distribution` (counts).
    ax : matplotlib.axes.Axes, optional
    normalize : bool, default True
        Shares of each split, so splits of different sizes compare.

    Returns
    -------
    matplotlib.axes.Axes

    Example
    -------
    >>> class_distribution_bars(fervis.labels.class_distribution(dataset))  # doctest: +SKIP
    """
    ax = _axes(ax)
    table = counts.div(counts.sum(axis=1), axis=0) if normalize else counts
    n_splits, classes = len(table.index), list(table.columns)
    width = 0.8 / max(n_splits, 1)
    x = np.arange(len(classes))
    for i, split in enumerate(table.index):
        values = table.loc[split].to_numpy(float)
        ax.bar(x + (i - (n_splits - 1) / 2) * width, values, width, label=f"{split} (n={int(counts.loc[split].sum())})")
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set_ylabel("share of the split" if normalize else "faces")
    ax.set_title("Class distribution per split")
    ax.legend(fontsize=8)
    return ax


def confusion_heatmap(cm, ax=None, title=None, support=None):
    """A confusion matrix with the true class on the rows and the predicted class on the columns.

    Each row is labelled with its class's number of faces (``n``).

    Parameters
    ----------
    cm : pandas.DataFrame
        From :func:`fervis.labels.confusion` (counts, or normalised by row).
    ax : matplotlib.axes.Axes, optional
    title : str, optional
    support : sequence of int or pandas.Series, optional
        Faces per true class; default the row sums of a matrix of counts. A normalised matrix
        without ``support`` has rows labelled by name only.

    Returns
    -------
    matplotlib.axes.Axes

    Example
    -------
    >>> confusion_heatmap(fervis.labels.confusion(y, probs, normalize="true"))  # doctest: +SKIP
    """
    from sklearn.metrics import ConfusionMatrixDisplay

    ax = _axes(ax)
    values = cm.to_numpy()
    integer = np.issubdtype(values.dtype, np.integer)
    display = ConfusionMatrixDisplay(values, display_labels=list(cm.columns))
    display.plot(ax=ax, values_format="d" if integer else ".2f", colorbar=False, cmap="Blues",
                 text_kw={"fontsize": 7}, xticks_rotation=30)
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    if support is None and integer:
        support = values.sum(axis=1)
    if support is not None:
        support = np.asarray(support.reindex(cm.index) if hasattr(support, "reindex") else support)
        ax.set_yticks(range(len(cm.index)), [f"{name} (n = {int(n)})" for name, n in zip(cm.index, support)])
    ax.set_title(title or ("Confusion matrix (counts)" if integer else "Confusion matrix (share of each true class)"))
    return ax


def reliability_diagram(table, ax=None, ece=None, title=None):
    """Accuracy against confidence per bin; the diagonal is perfect calibration.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`fervis.labels.reliability`.
    ax : matplotlib.axes.Axes, optional
    ece : float, optional
        Shown in the title.
    title : str, optional

    Returns
    -------
    matplotlib.axes.Axes

    Example
    -------
    >>> reliability_diagram(fervis.labels.reliability(y, probs), ece=0.04)  # doctest: +SKIP
    """
    ax = _axes(ax)
    width = (table["upper"] - table["lower"]).to_numpy()
    filled = table["count"].to_numpy() > 0
    lower, acc, conf = table["lower"][filled], table["accuracy"][filled], table["confidence"][filled]
    ax.bar(lower, acc, width[filled], align="edge", color="tab:blue", alpha=0.8, edgecolor="white",
           label="accuracy")
    ax.bar(lower, (conf - acc).abs(), width[filled], bottom=np.minimum(acc, conf), align="edge", fill=False,
           edgecolor="tab:red", hatch="///", linewidth=0.8, label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    text = title or "Reliability diagram"
    ax.set_title(text if ece is None else f"{text} (ECE {ece:.3f})")
    ax.legend(fontsize=7, loc="upper left")
    return ax


def class_metric_bars(report, column="ece", ax=None, title=None):
    """One bar per class for a column of a per-class table (calibration error by default).

    Each class is labelled with its ``support`` (n) when the table has one, and a column with
    ``<column>_low`` and ``<column>_high`` beside it (recall, F1) gets its interval as an error bar.

    Parameters
    ----------
    report : pandas.DataFrame
        From :func:`fervis.labels.class_report` (or any classes x metrics table).
    column : str, default "ece"
    ax : matplotlib.axes.Axes, optional
    title : str, optional

    Returns
    -------
    matplotlib.axes.Axes

    Example
    -------
    >>> class_metric_bars(fervis.labels.class_report(y, probs), "ece")  # doctest: +SKIP
    """
    ax = _axes(ax)
    values = report[column].to_numpy(float)
    error = None
    if f"{column}_low" in report and f"{column}_high" in report:  # the bootstrap interval, as an error bar
        error = np.abs(np.stack([values - report[f"{column}_low"].to_numpy(float),
                                 report[f"{column}_high"].to_numpy(float) - values]))
        error = np.where(np.isfinite(error), error, 0.0)
    ax.bar(range(len(values)), values, color="tab:blue", yerr=error, capsize=3 if error is not None else 0)
    for i, v in enumerate(values):
        top = v if error is None else v + error[1, i]
        ax.text(i, top, f"{v:.3f}", ha="center", va="bottom", fontsize=7)
    names = list(report.index)
    if "support" in report:
        names = [f"{name} (n = {int(n)})" for name, n in zip(names, report["support"])]
    ax.set_xticks(range(len(values)), names, rotation=30, ha="right")
    ax.set_ylabel(column)
    ax.set_title(title or {"ece": "Calibration error per class (one-vs-rest)"}.get(column, f"{column} per class"))
    return ax


def support_recall_scatter(report, ax=None, column=None, rho=None):
    """Recall against (training) support per class, on a log axis, with Spearman's rho.

    Each point is labelled with its class's evaluation faces (n, the ``support`` column) and,
    when the report has them, carries the bootstrap interval of its recall.

    Parameters
    ----------
    report : pandas.DataFrame
        From :func:`fervis.labels.class_report`.
    ax : matplotlib.axes.Axes, optional
    column : str, optional
        Default ``train_support`` when present, else ``support``.
    rho : float, optional
        Spearman's rho to show (:func:`fervis.labels.support_recall`); default the one
        :func:`fervis.labels.class_report` stored in ``report.attrs["support_recall"]``, else none shown.

    Returns
    -------
    matplotlib.axes.Axes

    Example
    -------
    >>> support_recall_scatter(fervis.labels.class_report(y, probs, train_counts=counts))  # doctest: +SKIP
    """
    ax = _axes(ax)
    column = column or ("train_support" if "train_support" in report else "support")
    if rho is None:
        rho = report.attrs.get("support_recall", {}).get(column)
    x = np.maximum(report[column].to_numpy(float), 1)
    ax.scatter(x, report["recall"], color="tab:blue")
    if "recall_low" in report and "recall_high" in report:
        y = report["recall"].to_numpy(float)
        error = np.abs(np.stack([y - report["recall_low"].to_numpy(float), report["recall_high"].to_numpy(float) - y]))
        ax.errorbar(x, y, yerr=np.where(np.isfinite(error), error, 0.0), fmt="none", ecolor="tab:blue", alpha=0.5)
    support = report["support"] if "support" in report else None
    for i, (name, xi, yi) in enumerate(zip(report.index, x, report["recall"])):
        label = name if support is None else f"{name} (n = {int(support.iloc[i])})"
        ax.annotate(label, (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=8)
    ax.set_xscale("log")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel(f"{'training ' if column == 'train_support' else ''}faces per class (log)")
    ax.set_ylabel("recall")
    ax.set_title("Support vs recall" + ("" if rho is None else f" (Spearman rho {rho:.2f})"))
    return ax


def lime_overlay(image, lime_map, segments=None, ax=None, title=None, alpha=0.55):
    """A face with LIME's superpixels: green for the class, red against, outlined.

    Parameters
    ----------
    image : array ``(48, 48)`` or ``(48, 48, 1)``
    lime_map : array ``(48, 48)``
        One map from :func:`fervis.labels.lime_explain`.
    segments : int array ``(48, 48)``, optional
        Superpixel outlines to draw.
    ax : matplotlib.axes.Axes, optional
    title : str, optional
    alpha : float, default 0.55

    Returns
    -------
    matplotlib.axes.Axes

    Example
    -------
    >>> lime_overlay(face, maps[0], segments[0])  # doctest: +SKIP
    """
    ax = show_face(image, ax=ax, title=title)
    lime_map = np.asarray(lime_map, dtype=float)
    peak = np.abs(lime_map).max()
    scaled = lime_map / peak if peak > 0 else lime_map
    rgba = np.zeros(lime_map.shape + (4,))
    rgba[..., 1] = scaled > 0
    rgba[..., 0] = scaled < 0
    rgba[..., 3] = alpha * np.abs(scaled)
    ax.imshow(rgba)
    if segments is not None:
        from skimage.segmentation import find_boundaries

        edges = find_boundaries(np.asarray(segments), mode="inner")
        ax.imshow(np.ma.masked_where(~edges, edges), cmap="Greys", alpha=0.15, vmin=0, vmax=1)
    return ax


def lime_grid(images, maps, segments, titles=None, fig=None, ncols=4, size=1.6):
    """LIME overlays in a grid (each face once: green for, red against its class).

    Parameters
    ----------
    images : array ``(n, 48, 48)``
    maps, segments : arrays ``(n, 48, 48)``
    titles : list of str, optional
    fig : matplotlib.figure.Figure, optional
    ncols : int, default 4
    size : float, default 1.6

    Returns
    -------
    matplotlib.figure.Figure

    Example
    -------
    >>> lime_grid(faces, maps, segments, titles)  # doctest: +SKIP
    """
    n = len(images)
    nrows = max(1, int(np.ceil(n / ncols)))
    if fig is None:
        fig = plt.figure(figsize=(size * ncols, size * nrows * 1.25))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        if i < n:
            lime_overlay(images[i], maps[i], segments[i], ax=ax, title=None if titles is None else titles[i])
        else:
            ax.set_axis_off()
    return fig


def lime_examples(images, maps, segments, examples, fig=None, size=1.5):
    """LIME overlays by class (columns), correct faces first (rows), each titled with its prediction.

    Parameters
    ----------
    images : array ``(n, 48, 48)``
        The faces of ``examples``, in its order.
    maps, segments : arrays ``(n, 48, 48)``
        From :func:`fervis.labels.lime_explain` and :func:`fervis.labels.lime_segments`.
    examples : pandas.DataFrame
        From :func:`fervis.labels.example_faces` (``label``, ``predicted``, ``correct``,
        ``p_predicted``).
    fig : matplotlib.figure.Figure, optional
    size : float, default 1.5

    Returns
    -------
    matplotlib.figure.Figure

    Example
    -------
    >>> lime_examples(chosen.images, maps, segments, examples)  # doctest: +SKIP
    """
    classes = list(dict.fromkeys(examples["label"]))
    nrows = max(1, int(examples.groupby("label", sort=False).size().max())) if len(examples) else 1
    if fig is None:
        fig = plt.figure(figsize=(size * max(len(classes), 1), size * nrows * 1.3))
    axes = fig.subplots(nrows, max(len(classes), 1), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    row_of = {}
    for i, r in enumerate(examples.itertuples()):
        row = row_of[r.label] = row_of.get(r.label, -1) + 1
        verdict = "right" if r.correct else f"as {r.predicted}"
        lime_overlay(images[i], maps[i], segments[i], ax=axes[row, classes.index(r.label)],
                     title=f"{r.label}\n{verdict} {r.p_predicted:.2f}")
    fig.suptitle("LIME for the labelled class: green for, red against", fontsize=9)
    return fig


def region_share_heatmap(table, ax=None, title=None):
    """A classes x regions heat map of shares, annotated in percent.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`fervis.labels.lime_region_shares` (or :func:`fervis.saliency.region_shares`).
    ax : matplotlib.axes.Axes, optional
    title : str, optional

    Returns
    -------
    matplotlib.axes.Axes

    Example
    -------
    >>> region_share_heatmap(fervis.labels.lime_region_shares(maps, faces, classes))  # doctest: +SKIP
    """
    ax = _axes(ax)
    values = table.to_numpy(float)
    ax.imshow(values, cmap="Greens", vmin=0, vmax=max(np.nanmax(values), 1e-9) if values.size else 1, aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(table.columns)), list(table.columns), rotation=30, ha="right")
    ax.set_yticks(range(len(table.index)), list(table.index))
    ax.set_xlabel("face region")
    ax.set_ylabel("class explained")
    ax.set_title(title or "Share of positive LIME weight per region (%)")
    return ax


def confusion_cell_grid(images, maps_true, maps_predicted, difference, true, predicted, titles=None, fig=None,
                   size=1.5):
    """One row per face: the face, saliency for the true class, for the predicted class, and their difference.

    Parameters
    ----------
    images : array ``(n, 48, 48)``
    maps_true, maps_predicted, difference : arrays ``(n, 48, 48)``
        From :func:`fervis.labels.cell_saliency`.
    true, predicted : str
        Class names, for the column titles.
    titles : list of str, optional
        One per face (first column).
    fig : matplotlib.figure.Figure, optional
    size : float, default 1.5

    Returns
    -------
    matplotlib.figure.Figure

    Example
    -------
    >>> confusion_cell_grid(faces, *fervis.labels.cell_saliency(model, faces, "disgust", "angry"), "disgust", "angry")  # doctest: +SKIP
    """
    n = len(images)
    if fig is None:
        fig = plt.figure(figsize=(size * 4, size * max(n, 1) * 1.15))
    axes = fig.subplots(max(n, 1), 4, squeeze=False)
    heads = ["face", f"saliency: {true}", f"saliency: {predicted}", f"{predicted} - {true}"]
    for i in range(n):
        show_face(images[i], ax=axes[i, 0], title=heads[0] if titles is None else titles[i])
        show_face(images[i], ax=axes[i, 1], overlay=maps_true[i], title=heads[1] if i == 0 else None)
        show_face(images[i], ax=axes[i, 2], overlay=maps_predicted[i], title=heads[2] if i == 0 else None)
        axes[i, 3].imshow(difference[i], cmap="RdBu_r", vmin=-1, vmax=1)
        axes[i, 3].set_axis_off()
        if i == 0:
            axes[i, 3].set_title(heads[3], fontsize=8)
    if n == 0:
        for ax in axes.ravel():
            ax.set_axis_off()
    return fig


def ambiguous_grid(images, table, fig=None, ncols=6, size=1.5):
    """The label-ambiguity finder's faces, each titled with its label and its top-2 classes.

    Parameters
    ----------
    images : array ``(n, 48, 48)``
        The faces that ``table["index"]`` indexes.
    table : pandas.DataFrame
        From :func:`fervis.labels.ambiguous_faces`.
    fig : matplotlib.figure.Figure, optional
    ncols : int, default 6
    size : float, default 1.5

    Returns
    -------
    matplotlib.figure.Figure

    Example
    -------
    >>> ambiguous_grid(train.images, fervis.labels.ambiguous_faces(train.labels, probs))  # doctest: +SKIP
    """
    faces = np.asarray(images)[table["index"].to_numpy(int)] if len(table) else np.zeros((0, 48, 48))
    nrows = max(1, int(np.ceil(len(table) / ncols)))
    if fig is None:
        fig = plt.figure(figsize=(size * ncols, size * nrows * 1.35))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, face, r in zip(axes.ravel(), faces, table.itertuples()):
        show_face(face, ax=ax)
        ax.set_title(f"label {r.label}\n{r.top1} {r.p_top1:.2f}\n{r.top2} {r.p_top2:.2f}", fontsize=7)
    return fig


def embedding_scatter(coords, labels, ax=None, class_names=CLASS_NAMES, title=None):
    """A 2-D embedding (t-SNE) of the faces, coloured by label.

    Parameters
    ----------
    coords : array ``(n, 2)``
        From :func:`fervis.labels.embed`.
    labels : int array ``(n,)``
    ax : matplotlib.axes.Axes, optional
    class_names : sequence of str
    title : str, optional

    Returns
    -------
    matplotlib.axes.Axes

    Example
    -------
    >>> embedding_scatter(fervis.labels.embed(features), faces.labels)  # doctest: +SKIP
    """
    ax = _axes(ax)
    coords, labels = np.asarray(coords), np.asarray(labels)
    colors = plt.get_cmap("tab10")
    for c, name in enumerate(class_names):
        sel = labels == c
        if sel.any():
            ax.scatter(coords[sel, 0], coords[sel, 1], s=8, color=colors(c), label=f"{name} ({int(sel.sum())})",
                       alpha=0.8, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "t-SNE of penultimate features")
    ax.legend(fontsize=7, markerscale=2, loc="best")
    return ax


# --- monitoring (notebook 4) -----------------------------------------------------------


def _epoch_axis(history):
    """Epochs counted from 1 for readers (Keras and the CSV count from 0)."""
    if "epoch" in history:
        return history["epoch"].to_numpy() + 1
    return np.arange(1, len(history) + 1)


def _mark_best(ax, x, best):
    if best is not None:
        ax.axvline(x[best], color="0.45", linestyle="--", linewidth=1, zorder=0)


def _curve_verdicts(history, best, flags, patience):
    """``best`` and ``flags`` as given, else as :func:`fervis.monitoring.history` stored them."""
    func = "fervis.plots.training_curves"
    if best is None and flags is None and "overfitting" in history.attrs:
        best = history.attrs.get("best_epoch")
        flags = history.attrs["overfitting"].get(patience)
        if flags is None or len(flags) != len(history):
            raise ValueError(f"The 'flags' parameter of {func} is needed for patience {patience!r}: pass "
                             "flags=fervis.monitoring.overfitting(history, patience).")
    elif flags is None:
        raise ValueError(f"The 'flags' parameter of {func} must be the overfitting flags per epoch, from "
                         "fervis.monitoring.overfitting(history, patience). Got None instead.")
    flags = np.asarray(flags)
    if flags.shape != (len(history),) or flags.dtype != bool:
        raise ValueError(f"The 'flags' parameter of {func} must be {len(history)} booleans, one per epoch. "
                         f"Got dtype {flags.dtype} and shape {flags.shape} instead.")
    if best is not None and (isinstance(best, bool) or not isinstance(best, (int, np.integer))
                             or not 0 <= best < len(history)):
        raise ValueError(f"The 'best' parameter of {func} must be a row of the history in [0, {len(history)}) "
                         f"or None. Got {best!r} instead.")
    return best, flags


def _shade(ax, x, flags):
    for xi in x[np.asarray(flags, bool)]:
        ax.axvspan(xi - 0.5, xi + 0.5, color="tab:red", alpha=0.12, linewidth=0)


def training_curves(history, best=None, flags=None, fig=None, patience=3):
    """Loss, accuracy and per-class validation recall per epoch, train against validation.

    Draws only: the best epoch (a dashed line on every panel) and the overfitting flags (epochs
    shaded red, named in the title) come computed from :mod:`fervis.monitoring`.

    Parameters
    ----------
    history : pandas.DataFrame
        One row per epoch: ``loss``, ``accuracy``, optionally ``val_loss``, ``val_accuracy``
        and ``val_recall_<class>`` (as :class:`fervis.monitoring.Monitor` writes them).
    best : int, optional
        Row of the best epoch, :func:`fervis.monitoring.best_epoch` ``(history, "val_loss")``; None
        for none. Default: ``history.attrs["best_epoch"]`` (set by :func:`fervis.monitoring.history`).
    flags : array of bool ``(len(history),)``, optional
        :func:`fervis.monitoring.overfitting` ``(history, patience)``. Default: the flags for
        ``patience`` that :func:`fervis.monitoring.history` stored in ``history.attrs["overfitting"]``.
    fig : matplotlib Figure or SubFigure, optional
    patience : int, default 3
        The patience ``flags`` were computed with (named in the title).

    Returns
    -------
    matplotlib.figure.Figure (or the SubFigure given)

    Example
    -------
    >>> h = monitoring.history(run)  # doctest: +SKIP
    >>> fig = training_curves(h, best=monitoring.best_epoch(h), flags=monitoring.overfitting(h, 2), patience=2)  # doctest: +SKIP
    """
    best, flags = _curve_verdicts(history, best, flags, patience)
    if fig is None:
        fig = plt.figure(figsize=(11, 3.3), dpi=80, layout="constrained")
    recall = [c for c in history.columns if c.startswith("val_recall_")]
    panels = ["loss", "accuracy"] + (["recall"] if recall else [])
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    x = _epoch_axis(history)
    for ax, metric in zip(axes, panels[:2]):
        for key, label, style in ((metric, "train", "-o"), (f"val_{metric}", "validation", "-s")):
            if key in history and history[key].notna().any():
                ax.plot(x, history[key], style, markersize=3, label=label)
        if best is not None and f"val_{metric}" in history:
            ax.plot(x[best], history[f"val_{metric}"].iloc[best], "*", color="black", markersize=11, zorder=5,
                    label=f"best epoch {x[best]}")
        _mark_best(ax, x, best)
        _shade(ax, x, flags)
        ax.set_title(metric if best is None else f"{metric} (best epoch {x[best]})", fontsize=10)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    loss = history[[c for c in ("loss", "val_loss") if c in history]].to_numpy(dtype=float)
    finite = loss[np.isfinite(loss) & (loss > 0)]
    if finite.size and finite.max() / finite.min() > 8:
        axes[0].set_yscale("log")  # a first epoch far above the rest would flatten the curves
    if recall:
        ax = axes[2]
        colors = plt.get_cmap("tab10")
        for i, column in enumerate(recall):
            ax.plot(x, history[column], "-", color=colors(i % 10), linewidth=1.4, label=column[len("val_recall_"):])
        _mark_best(ax, x, best)
        _shade(ax, x, flags)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title("validation recall per class", fontsize=10)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=6.5, ncol=2, loc="upper left")
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
    if flags.any():
        first = x[np.flatnonzero(flags)[0]]
        fig.suptitle(f"overfitting from epoch {first}: validation loss rose {patience} epochs in a row, to more "
                     f"than {OVERFIT_MIN_RISE:.0%} above its best, while training loss fell",
                     color="tab:red", fontsize=10)
    else:
        fig.suptitle(f"no overfitting flag (validation loss never rose {patience} epochs in a row to more than "
                     f"{OVERFIT_MIN_RISE:.0%} above its best while training loss fell)", fontsize=10)
    return fig


def explanation_drift(history, fig=None, method=None):
    """How the probe faces' saliency maps change: rank correlation with the previous epoch's map
    (per probe and mean) and the share of map mass on each face region.

    Parameters
    ----------
    history : pandas.DataFrame
        With ``drift_<class>``, ``drift_mean`` and ``share_<region>`` columns.
    fig : matplotlib Figure or SubFigure, optional
    method : str, optional
        The method the maps come from, as titles name it (``saliency.method_label``: "Grad-CAM on
        block4_act2"); shown in both titles.

    Returns
    -------
    matplotlib.figure.Figure (or the SubFigure given)

    Example
    -------
    >>> fig = explanation_drift(monitoring.history(run))  # doctest: +SKIP
    """
    if fig is None:
        fig = plt.figure(figsize=(11, 3.0), dpi=80, layout="constrained")
    ax_drift, ax_share = fig.subplots(1, 2)
    x = _epoch_axis(history)
    drift = [c for c in history.columns if c.startswith("drift_") and c != "drift_mean"]
    colors = plt.get_cmap("tab10")
    for i, column in enumerate(drift):
        ax_drift.plot(x, history[column], "-", color=colors(i % 10), linewidth=1, alpha=0.8,
                      label=column[len("drift_"):])
    if "drift_mean" in history:
        ax_drift.plot(x, history["drift_mean"], "-o", color="black", linewidth=2.2, markersize=4, label="mean")
    values = history[drift + (["drift_mean"] if "drift_mean" in history else [])].to_numpy(dtype=float)
    low = np.nanmin(values) if np.isfinite(values).any() else 0.0
    ax_drift.set_ylim(min(0.0, low) - 0.05, 1.03)
    of = f" of {method}" if method else ""
    ax_drift.set_title(f"explanation drift{of}: Spearman ρ with the previous epoch's map", fontsize=10)
    ax_drift.set_xlabel("epoch")
    ax_drift.legend(fontsize=6.5, ncol=2, loc="lower right")
    shares = [c for c in history.columns if c.startswith("share_")]
    if shares:
        data = np.nan_to_num(history[shares].to_numpy(dtype=float).T)
        ax_share.stackplot(x, data, labels=[c[len("share_"):] for c in shares],
                           colors=[plt.get_cmap("tab20")(i % 20) for i in range(len(shares))])
        ax_share.set_ylim(0, 1)
        ax_share.legend(fontsize=6.5, ncol=1, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax_share.set_title(f"share of the probe maps' mass per face region{' (' + method + ')' if method else ''}",
                       fontsize=10)
    ax_share.set_xlabel("epoch")
    for ax in (ax_drift, ax_share):
        if len(x):  # both panels over every epoch, although drift starts at the second
            ax.set_xlim(x.min() - 0.2, max(x.max(), x.min() + 1) + 0.2)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return fig


def training_dashboard(history, fig=None, patience=3, best=None, flags=None):
    """:func:`training_curves` above :func:`explanation_drift` (when the history has drift), in
    one figure: what :class:`fervis.monitoring.LiveCurves` redraws after every epoch.

    ``best`` and ``flags`` are passed to :func:`training_curves`.

    Returns
    -------
    matplotlib.figure.Figure

    Example
    -------
    >>> fig = training_dashboard(monitoring.history(run), patience=2)  # doctest: +SKIP
    """
    if fig is None:
        fig = plt.figure(figsize=(11, 6.2), dpi=72, layout="constrained")
    if any(c.startswith("drift_") or c.startswith("share_") for c in history.columns):
        top, bottom = fig.subfigures(2, 1, height_ratios=[1.1, 1.0])
        training_curves(history, best, flags, fig=top, patience=patience)
        explanation_drift(history, fig=bottom)
    else:
        training_curves(history, best, flags, fig=fig, patience=patience)
    return fig


def probe_maps_grid(probe_history, epochs=None, max_epochs=6, fig=None, size=1.1):
    """The probe faces' saliency maps as a grid: one row per epoch, one column per emotion.

    Each cell is the face with its map over it (``jet``, red = most salient) and, from the
    second epoch, ρ: the Spearman correlation with the previous epoch's map.

    Parameters
    ----------
    probe_history : fervis.monitoring.ProbeHistory
        From :func:`fervis.monitoring.probe_maps`.
    epochs : sequence of int, optional
        Keras epochs (from 0) to show; default: up to ``max_epochs`` spread evenly, the first
        and the last included.
    max_epochs : int, default 6
    fig : matplotlib Figure, optional
    size : float, default 1.1
        Inches per cell.

    Returns
    -------
    matplotlib.figure.Figure

    Example
    -------
    >>> fig = probe_maps_grid(monitoring.probe_maps(run))  # doctest: +SKIP
    """
    ph = probe_history
    available = list(np.asarray(ph.epochs).tolist())
    if not available:
        raise ValueError("The 'probe_history' parameter of fervis.plots.probe_maps_grid holds no epoch yet.")
    if epochs is None:
        picks = np.unique(np.linspace(0, len(available) - 1, min(max_epochs, len(available))).round().astype(int))
        epochs = [available[i] for i in picks]
    missing = [e for e in epochs if e not in available]
    if missing:
        raise ValueError(
            f"The 'epochs' parameter of fervis.plots.probe_maps_grid must list monitored epochs, {available}. "
            f"Got {list(epochs)} instead."
        )
    rows = [available.index(e) for e in epochs]
    names = ph.probes.names
    drift = ph.drift
    levels = plt.get_cmap("jet", 10)
    if fig is None:
        fig = plt.figure(figsize=(size * len(names) + 0.6, size * 1.12 * len(rows) + 0.3), dpi=72)
    axes = fig.subplots(len(rows), len(names), squeeze=False)
    for r, i in enumerate(rows):
        for c, name in enumerate(names):
            ax = axes[r, c]
            show_face(ph.probes.images[c], ax=ax)
            # ten colour levels: as readable as a continuous map, and a far smaller PNG
            ax.imshow(ph.maps[i, c], cmap=levels, vmin=0, vmax=1, alpha=0.5, interpolation="nearest")
            if r == 0:
                ax.set_title(name, fontsize=9)
            if np.isfinite(drift[i, c]):
                ax.text(0.5, -0.02, f"ρ {drift[i, c]:.2f}", transform=ax.transAxes, ha="center", va="top",
                        fontsize=7)
        axes[r, 0].text(-0.08, 0.5, f"epoch {int(ph.epochs[i]) + 1}", transform=axes[r, 0].transAxes,
                        ha="right", va="center", fontsize=8, rotation=90)
    fig.subplots_adjust(left=0.05, right=0.99, top=0.95, bottom=0.03, wspace=0.05, hspace=0.22)
    return fig


__all__ += ["training_curves", "explanation_drift", "training_dashboard", "probe_maps_grid"]
