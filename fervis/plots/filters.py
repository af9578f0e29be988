"""Drawing for notebook 2 (:mod:`fervis.filters`): gradient-ascent images, feature maps and the
faces that drive each filter hardest."""

from __future__ import annotations

import numpy as np

from fervis.plots import _common as draw

__all__ = ["ascent_grid", "compare_presets", "feature_map_grid", "exemplar_grid", "filter_panel"]


def _ascent_title(result, i, name=None):
    """'f3 s0' (or ``name``) and the numbers of image ``i``: activation, % of the best face, noise."""
    head = name or f"f{int(result.filter_idx[i])} s{int(result.seed[i])}"
    frac = result.fraction[i]
    share = "" if not np.isfinite(frac) else f" ({100 * frac:.0f}%)"
    return f"{head}\nact {result.activation[i]:.2f}{share}\nnoise {result.noise[i]:.2f}"


def _exemplar_title(exemplars, row, j):
    """'#index activation' of the j-th top face of a filter."""
    return f"#{exemplars.indices[row, j]} {exemplars.values[row, j]:.2f}"


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
    fig, axes = draw.grid(len(filters), seeds, fig, size=size, aspect=1.5, pad=(0.2, 0.3), layout="constrained")
    for i in range(len(result)):
        f, seed = int(result.filter_idx[i]), int(result.seed[i])
        head = f"{names[f] if names is not None else f'f{f}'}" + (f" s{seed}" if seeds > 1 else "")
        draw.face(axes[filters.index(f), seed], result.images[i], title=_ascent_title(result, i, head), fontsize=7)
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
    fig, axes = draw.grid(len(filters), len(names), fig, size=size, aspect=1.5, pad=(0.2, 0.3), layout="constrained")
    for col, name in enumerate(names):
        result = results[name]
        for row, f in enumerate(filters):
            i = int(np.flatnonzero((result.filter_idx == f) & (result.seed == 0))[0])
            draw.face(axes[row, col], result.images[i], title=_ascent_title(result, i, f"{name} f{f}"), fontsize=7)
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
    fig, axes = draw.grid(draw.rows_for(panels, ncols), ncols, fig, size=size, aspect=1.15, pad=(0.0, 0.3),
                          axis_off=True, layout="constrained")
    axes = axes.ravel()
    if face is not None:
        draw.face(axes[0], face, title="face")
    for c in range(count):
        draw.heat(axes[(face is not None) + c], maps[..., c], title=f"f{c} max {maps[..., c].max():.1f}", fontsize=6,
                  cmap="viridis", vmin=None)
    if title is not None:
        fig.suptitle(title, fontsize=9)
    return fig


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
    fig, axes = draw.grid(len(filters), ncols, fig, size=size, aspect=1.45, pad=(0.0, 0.3), axis_off=True,
                          layout="constrained")
    for row, f in enumerate(filters):
        if lead:
            hits = np.flatnonzero((ascent.filter_idx == f) & (ascent.seed == 0))
            if len(hits):
                draw.face(axes[row, 0], ascent.images[hits[0]],
                          title=_ascent_title(ascent, int(hits[0]), f"ascent f{f}"), fontsize=7)
        for j in range(k):
            ax = axes[row, lead + j]
            draw.face(ax, exemplars.faces[row, j], title=_exemplar_title(exemplars, row, j), fontsize=7)
            if exemplars.receptive_field.spatial:
                draw.box(ax, exemplars.boxes[row, j])
            if crops:
                draw.face(axes[row, lead + k + j], exemplars.crops[row, j], title="crop" if j == 0 else None,
                          fontsize=7)
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
    fig, axes = draw.grid(2, ncols, fig, size=size, aspect=1.4, axis_off=True, layout="constrained")
    i = int(np.flatnonzero(ascent.filter_idx == filter_idx)[0])
    draw.face(axes[0, 0], ascent.images[i], title=_ascent_title(ascent, i, f"{ascent.preset} f{filter_idx}"),
              fontsize=7)
    draw.face(axes[0, 1], face, title="face")
    if maps is not None:
        draw.heat(axes[0, 2], np.asarray(maps)[..., filter_idx], title=f"map f{filter_idx}", fontsize=7, cmap="viridis",
                  vmin=None)
    for j in range(k):
        ax = axes[1, j]
        draw.face(ax, exemplars.faces[row, j], title=_exemplar_title(exemplars, row, j), fontsize=7)
        if exemplars.receptive_field.spatial:
            draw.box(ax, exemplars.boxes[row, j])
    fig.suptitle(f"{ascent.layer_name} filter {filter_idx}", fontsize=9)
    return fig
