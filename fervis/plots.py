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

# --- filters (notebook 2) --------------------------------------------------------------

# --- labels (notebook 3) ---------------------------------------------------------------

# --- monitoring (notebook 4) -----------------------------------------------------------
