"""Drawing for notebook 1 (:mod:`fervis.saliency`): saliency maps over faces, class means,
region tables, faithfulness curves and the randomisation check."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from fervis.constants import CLASS_NAMES
from fervis.plots import _common as draw

__all__ = ["saliency_panel", "saliency_gallery", "class_mean_grid", "table_heatmap", "region_template", "registration",
           "faithfulness_curves", "randomization_strip", "cue_bars"]


def saliency_panel(image, saliency_map, title=None, fig=None, size=2.0, alpha=0.5):
    """One face, its map and the overlay side by side, with a title above.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, axes = draw.grid(1, 3, fig, size=size, pad=(0.0, 0.5))
    draw.face(axes[0, 0], image, title="face")
    draw.heat(axes[0, 1], saliency_map, title="map")
    draw.face(axes[0, 2], image, saliency_map, alpha=alpha, title="overlay")
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
    fig, axes = draw.grid(rows, max(n, 1), fig, size=size, aspect=1.12, pad=(0.4, 0.3))
    for j in range(n):
        draw.face(axes[0, j], images[j], title=None if titles is None else titles[j])
        r = 1
        if show_map and methods:
            draw.heat(axes[r, j], maps[methods[0]][j])
            draw.mark(axes[r, j], problems[methods[0]][j] if methods[0] in problems else "")
            r += 1
        for method in methods:
            draw.face(axes[r, j], images[j], maps[method][j], alpha=alpha)
            draw.mark(axes[r, j], problems[method][j] if method in problems else "")
            r += 1
    draw.label_rows(axes[:, 0], ["face"] + ([f"{methods[0]} map"] if show_map and methods else []) + methods)
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
    fig, axes = draw.grid(rows, k, fig, size=size, aspect=1.2, pad=(0.4, 0.2), axis_off=True)
    for r in range(rows):
        for c in range(k):
            ax = axes[r, c]
            left = 0 if excluded is None else int(excluded[r, c])
            caption = f"{class_names[c]} (n={int(counts[r, c])}" + (f", {left} left out)" if left else ")")
            if not np.isfinite(means[r, c]).all():
                ax.set_title(f"{class_names[c]} (none" + (f"; {left} left out)" if left else ")"), fontsize=7)
                continue
            if background is not None and np.isfinite(background[r, c]).all():
                draw.face(ax, background[r, c], means[r, c], alpha=alpha, title=caption, fontsize=7)
            else:
                draw.heat(ax, means[r, c], title=caption, fontsize=7)
    draw.label_rows(axes[:, 0], row_names)
    if title is not None:
        fig.suptitle(title, fontsize=9)
    return fig


def _row_labels(table):
    """Each row's name, with its n of faces from ``table.attrs["n"]`` where the table carries it."""
    n = (getattr(table, "attrs", None) or {}).get("n")
    if hasattr(n, "columns"):  # one n per cell: only the columns shown count
        n = n.reindex(columns=table.columns)
    labels = []
    for row in table.index:
        counts = None
        if n is not None and row in getattr(n, "index", ()):
            counts = np.unique(np.asarray(n.loc[row], dtype=float).ravel())
            counts = counts[np.isfinite(counts)].astype(int)
        if counts is None or not counts.size:
            labels.append(str(row))
        else:
            labels.append(f"{row} (n = {counts[0]}" + (f"-{counts[-1]}" if len(counts) > 1 else "") + ")")
    return labels


def table_heatmap(table, ax=None, title=None, fmt="{:.2f}", cmap="viridis", center=None):
    """A class x region table (region shares, concentrations, occlusion drops) as a heat map
    with its numbers written in each cell.

    Parameters
    ----------
    table : pandas.DataFrame
        Rows are labelled with their n of faces when ``table.attrs["n"]`` holds it (one per row, or
        one per cell: then its range over the row), as the fervis tables do.
    center : float, optional
        Colour scale centred here with a diverging map (1 for concentrations, 0 for drops).

    Returns
    -------
    matplotlib.axes.Axes
    """
    ax = draw.ensure_axes(ax, figsize=(0.75 * table.shape[1] + 2.2, 0.36 * table.shape[0] + 1.0))
    values = table.to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    kwargs = {"cmap": cmap}
    if center is not None and finite.size:
        spread = max(np.abs(finite - center).max(), 1e-9)
        kwargs = {"cmap": "RdBu_r", "vmin": center - spread, "vmax": center + spread}
    image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", **kwargs)
    ax.set_xticks(range(table.shape[1]), [str(c) for c in table.columns], rotation=40, ha="right", fontsize=7)
    ax.set_yticks(range(table.shape[0]), _row_labels(table), fontsize=7)
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

    ax = draw.ensure_axes(ax, figsize=(3.6, 2.6))
    regions = np.asarray(regions)
    colors = plt.get_cmap("tab10").colors
    cmap = ListedColormap([colors[i % len(colors)] for i in range(len(region_names))])
    draw.face(ax, mean_face, regions, title=title, alpha=alpha, cmap=cmap, vmin=-0.5, vmax=len(region_names) - 0.5)
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
    ax = draw.ensure_axes(ax, figsize=(3.6, 2.4))
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
    fig, axes = draw.grid(faces, cols, fig, size=size, aspect=1.25, pad=(0.3, 0.4))
    rho = result.correlation[method]
    for i in range(faces):
        if lead:
            draw.face(axes[i, 0], images[i], title="face" if i == 0 else None)
        for s, stage in enumerate(stages):
            value = f"ρ {rho.iloc[s]:.2f}" if np.isfinite(rho.iloc[s]) else "ρ undefined"
            draw.heat(axes[i, lead + s], maps[s, i], title=f"{stage}\n{value}" if i == 0 else None, fontsize=6.5)
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
    ax = draw.ensure_axes(ax, figsize=(1.05 * len(classes) + 1.5, 3.0))
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
