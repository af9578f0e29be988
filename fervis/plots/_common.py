"""The drawing primitives every plot module shares: one way to draw a face, one way to draw a
map, one grid layout, one way to label rows.

Every face and map is drawn pixel for pixel (``interpolation="nearest"``): 48x48 faces and maps
are not smoothed into detail they do not have, and the stored figures stay small.
"""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["ensure_axes", "face", "heat", "grid", "rows_for", "label_rows", "mark", "box"]


def ensure_axes(ax, figsize=None):
    """``ax``, or the axes of a new figure (of ``figsize``) when it is None."""
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def face(ax, image, overlay=None, title=None, fontsize=8, alpha=0.5, cmap="jet", vmin=None, vmax=None,
         face_cmap="gray"):
    """Draw a grey 0-255 face (``(h, w)`` or ``(h, w, 1)``) with an optional ``overlay`` over it:
    a map (coloured by ``cmap``, ``vmin``, ``vmax``, at ``alpha``) or an RGBA image (``alpha=None``:
    its own alpha channel). Hides the frame; returns ``ax``."""
    image = np.asarray(image)
    ax.imshow(image[..., 0] if image.ndim == 3 else image, cmap=face_cmap, vmin=0, vmax=255,
              interpolation="nearest")
    if overlay is not None:
        ax.imshow(np.asarray(overlay), cmap=cmap, vmin=vmin, vmax=vmax, alpha=alpha, interpolation="nearest")
    if title is not None:
        ax.set_title(title, fontsize=fontsize)
    ax.set_axis_off()
    return ax


def heat(ax, values, title=None, fontsize=8, cmap="jet", vmin=0, vmax=None):
    """Draw a bare map (a saliency map from 0 up by default; ``vmin=None`` for a map's own range).
    Hides the frame; returns ``ax``."""
    ax.imshow(np.asarray(values), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    if title is not None:
        ax.set_title(title, fontsize=fontsize)
    ax.set_axis_off()
    return ax


def rows_for(n, ncols):
    """Rows needed to lay ``n`` panels out ``ncols`` to a row (at least one)."""
    return max(1, int(np.ceil(n / ncols)))


def grid(rows, cols, fig=None, size=1.0, aspect=1.0, pad=(0.0, 0.0), axis_off=False, **figure_kw):
    """A ``rows`` x ``cols`` grid of axes on ``fig``, or on a new figure of cells ``size`` inches
    wide and ``size * aspect`` tall plus ``pad`` (width, height) inches for titles and labels.

    Returns
    -------
    (figure, axes)
        ``axes`` is always 2-D ``(rows, cols)``; with ``axis_off`` every frame is hidden first, so
        cells left empty stay blank.
    """
    if fig is None:
        fig = plt.figure(figsize=(size * cols + pad[0], size * aspect * rows + pad[1]), **figure_kw)
    grid_axes = fig.subplots(rows, cols, squeeze=False)
    if axis_off:
        for ax in grid_axes.ravel():
            ax.set_axis_off()
    return fig, grid_axes


def label_rows(row_axes, texts, fontsize=8):
    """Write a label left of each row's first axes (whose frame is hidden), turned upright.

    A label longer than its row is tall ("Grad-CAM++ on block4_act2" beside a 1-inch face) is
    wrapped onto more lines, so the labels of neighbouring rows never run into each other.
    """
    for ax, text in zip(row_axes, texts):
        height = ax.get_window_extent().height * 72 / ax.figure.dpi  # the row's height in points
        per_line = max(6, int(height / (0.6 * fontsize)))  # characters average about 0.6 em
        wrapped = textwrap.fill(str(text), per_line, break_long_words=False, break_on_hyphens=False)
        ax.text(-0.08, 0.5, wrapped, transform=ax.transAxes, rotation=90, ha="right", va="center",
                multialignment="center", fontsize=fontsize)


def mark(ax, problem):
    """Write what is wrong with a map (``"empty"``, ``"constant"``, ``"non-finite"``) across its axes."""
    if problem:
        ax.text(0.5, 0.5, f"{problem} map", transform=ax.transAxes, ha="center", va="center", fontsize=7,
                color="white", bbox={"facecolor": "red", "alpha": 0.8, "pad": 1.5, "linewidth": 0})


def box(ax, corners, color="red"):
    """Outline the pixels ``(y0, x0, y1, x1)`` (end exclusive) on an image drawn in ``ax``."""
    from matplotlib.patches import Rectangle

    y0, x0, y1, x1 = (int(v) for v in corners)
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=1))
