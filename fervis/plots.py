"""All drawing in fervis. Every function takes ``ax=None`` (or ``fig=None``), draws, and
returns the axes (or figure); none calls ``plt.show()`` or ``savefig()``.

Sections, one per question; each developer edits only their own section.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from fervis.constants import CLASS_NAMES

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

__all__ += ["saliency_panel", "saliency_gallery", "class_mean_grid", "table_heatmap", "region_template", "faithfulness_curves",
            "randomization_strip", "cue_bars"]


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
    show_face(image, ax=axes[0], title="face")
    axes[1].imshow(np.asarray(saliency_map), cmap="jet", vmin=0)
    axes[1].set_title("map", fontsize=8)
    axes[1].set_axis_off()
    show_face(image, ax=axes[2], overlay=saliency_map, alpha=alpha, title="overlay")
    if title is not None:
        fig.suptitle(title, fontsize=9)
    return fig


def saliency_gallery(images, maps, titles=None, show_map=True, fig=None, size=1.35, alpha=0.5):
    """Faces and their saliency: a column per face, the face on top, then (``show_map``) the
    first method's bare map, then one overlay row per method.

    Parameters
    ----------
    images : array ``(n, 48, 48)`` or ``(n, 48, 48, 1)``
    maps : dict method name -> array ``(n, 48, 48)``
    titles : list of str, optional
        One per face (true/predicted label and probability, say).

    Returns
    -------
    matplotlib.figure.Figure
    """
    images = np.asarray(images)
    methods = list(maps)
    n = len(images)
    rows = 1 + bool(show_map and methods) + len(methods)
    if fig is None:
        fig = plt.figure(figsize=(size * max(n, 1) + 0.4, size * 1.12 * rows + 0.3))
    axes = fig.subplots(rows, max(n, 1), squeeze=False)
    for j in range(n):
        show_face(images[j], ax=axes[0, j], title=None if titles is None else titles[j])
        r = 1
        if show_map and methods:
            axes[r, j].imshow(np.asarray(maps[methods[0]][j]), cmap="jet", vmin=0)
            axes[r, j].set_axis_off()
            r += 1
        for method in methods:
            show_face(images[j], ax=axes[r, j], overlay=maps[method][j], alpha=alpha)
            r += 1
    labels = ["face"] + ([f"{methods[0]} map"] if show_map and methods else []) + methods
    for r, text in enumerate(labels):
        _label_row(axes[r, 0], text)
    return fig


def class_mean_grid(means, counts, class_names=CLASS_NAMES, row_names=("correct", "wrong"), background=None,
                    fig=None, size=1.35, alpha=0.55):
    """Class-mean saliency maps (:func:`fervis.saliency.class_mean_maps`): a row per group
    (correct, wrong), a column per class, titled with the number of faces averaged.

    Parameters
    ----------
    means : array ``(rows, k, 48, 48)``; NaN where a group has no face
    counts : int array ``(rows, k)``
    background : array ``(rows, k, 48, 48)``, optional
        Mean faces drawn under the maps.

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
            title = f"{class_names[c]} (n={int(counts[r, c])})"
            if not np.isfinite(means[r, c]).all():
                ax.set_title(f"{class_names[c]} (none)", fontsize=7)
                continue
            if background is not None and np.isfinite(background[r, c]).all():
                show_face(background[r, c], ax=ax, overlay=means[r, c], alpha=alpha, title=title)
            else:
                ax.imshow(means[r, c], cmap="jet", vmin=0)
                ax.set_title(title, fontsize=7)
        _label_row(axes[r, 0], row_names[r])
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
    show_face(mean_face, ax=ax, title=title)
    ax.imshow(regions, cmap=cmap, vmin=-0.5, vmax=len(region_names) - 0.5, alpha=alpha, interpolation="nearest")
    present = sorted(set(np.unique(regions).tolist()))
    ax.legend(handles=[Patch(color=cmap(i), label=region_names[i]) for i in present], fontsize=6,
              loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    return ax


def faithfulness_curves(result, fig=None):
    """Mean deletion and insertion curves per method (:func:`fervis.saliency.faithfulness`),
    the random baseline dashed, AUCs in the legend.

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
            style = {"color": "black", "linestyle": "--"} if method == "random" else {}
            ax.plot(result.fractions, curves[kind].mean(axis=0), label=f"{method} {auc:.3f}", **style)
        ax.set_xlabel(f"fraction of pixels {'removed' if kind == 'deletion' else 'inserted'}", fontsize=8)
        ax.set_ylabel("probability of the class", fontsize=8)
        ax.set_title(f"{kind} ({'lower' if kind == 'deletion' else 'higher'} AUC is better)", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, frameon=False)
    fig.tight_layout()
    return fig


def randomization_strip(result, method, images=None, faces=3, fig=None, size=1.15):
    """The model-randomisation strip for one method: a row per face, a column per stage
    (trained, then re-initialised down to each layer), titled with the mean rank correlation.

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
            show_face(images[i], ax=axes[i, 0], title="face" if i == 0 else None)
        for s, stage in enumerate(stages):
            ax = axes[i, lead + s]
            ax.imshow(maps[s, i], cmap="jet", vmin=0)
            ax.set_axis_off()
            if i == 0:
                ax.set_title(f"{stage}\nρ {rho.iloc[s]:.2f}", fontsize=6.5)
    fig.suptitle(f"{method}: layers re-initialised from the top (ρ: Spearman with the trained maps)", fontsize=8)
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

# --- labels (notebook 3) ---------------------------------------------------------------

# --- monitoring (notebook 4) -----------------------------------------------------------
