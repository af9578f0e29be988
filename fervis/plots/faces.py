"""Faces as they are: one face (with an optional map over it) and a grid of faces."""

from __future__ import annotations

import numpy as np

from fervis.plots import _common as draw

__all__ = ["show_face", "face_grid"]


def show_face(image, ax=None, title=None, overlay=None, cmap="gray", alpha=0.5):
    """Draw one 48x48 face, optionally with a heat map ``overlay`` of the same shape.

    Parameters
    ----------
    image : array ``(48, 48)`` or ``(48, 48, 1)``, 0-255
    ax : matplotlib.axes.Axes, optional
    title : str, optional
    overlay : array ``(48, 48)``, optional
        Drawn in ``jet`` at ``alpha`` over the face.
    cmap : str, default "gray"
        The face's colour map.
    alpha : float, default 0.5

    Returns
    -------
    matplotlib.axes.Axes

    Example
    -------
    >>> show_face(faces.images[0], overlay=maps[0], title="happy")  # doctest: +SKIP
    """
    return draw.face(draw.ensure_axes(ax), image, overlay, title=title, alpha=alpha, face_cmap=cmap)


def face_grid(images, titles=None, ncols=7, size=1.4, fig=None):
    """Draw faces in a grid, ``ncols`` to a row.

    Parameters
    ----------
    images : array ``(n, 48, 48)`` or ``(n, 48, 48, 1)``
    titles : list of str, optional
        One per face.
    ncols : int, default 7
    size : float, default 1.4
        Inches per face.
    fig : matplotlib.figure.Figure, optional

    Returns
    -------
    matplotlib.figure.Figure

    Example
    -------
    >>> face_grid(plan.probes.images, titles=plan.probes.names)  # doctest: +SKIP
    """
    images = np.asarray(images)
    fig, axes = draw.grid(draw.rows_for(len(images), ncols), ncols, fig, size=size, aspect=1.15, axis_off=True)
    for i, (ax, image) in enumerate(zip(axes.ravel(), images)):
        draw.face(ax, image, title=None if titles is None else titles[i])
    return fig
