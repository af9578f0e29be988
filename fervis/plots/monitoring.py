"""Drawing for notebook 4 (:mod:`fervis.monitoring`): training curves with the best epoch and the
overfitting flags, explanation drift and the probe faces' maps per epoch."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from fervis._checks import positive_int
from fervis.constants import OVERFIT_MIN_RISE
from fervis.plots import _common as draw

__all__ = ["training_curves", "explanation_drift", "training_dashboard", "probe_maps_grid"]


def _epoch_axis(history):
    """Epochs counted from 1 for readers (Keras and the CSV count from 0)."""
    if "epoch" in history:
        return history["epoch"].to_numpy() + 1
    return np.arange(1, len(history) + 1)


def _mark_best(ax, x, best):
    if best is not None:
        ax.axvline(x[best], color="0.45", linestyle="--", linewidth=1, zorder=0)


def _curve_verdicts(history, best, flags, patience):
    """``best`` and ``flags`` as given; each one left out, as :func:`fervis.monitoring.history` stored it."""
    func = "fervis.plots.training_curves"
    if best is None:
        best = history.attrs.get("best_epoch")
    if flags is None and "overfitting" in history.attrs:
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
    if best is not None:  # a row of the history
        best = positive_int(best, "best", func, 0, len(history) - 1)
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
        Row of the best epoch, :func:`fervis.monitoring.best_epoch` ``(history, "val_loss")``.
        Default: ``history.attrs["best_epoch"]`` (set by :func:`fervis.monitoring.history`), or no
        best epoch when the history has none stored.
    flags : array of bool ``(len(history),)``, optional
        :func:`fervis.monitoring.overfitting` ``(history, patience)``. Default: the flags for
        ``patience`` that :func:`fervis.monitoring.history` stored in ``history.attrs["overfitting"]``.
        Each default is filled on its own: ``best`` given, ``flags`` still comes from the history,
        and the other way round.
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
    fig, axes = draw.grid(len(rows), len(names), fig, size=size, aspect=1.12, pad=(0.6, 0.3), dpi=72)
    for r, i in enumerate(rows):
        for c, name in enumerate(names):
            ax = axes[r, c]
            # ten colour levels: as readable as a continuous map, and a far smaller PNG
            draw.face(ax, ph.probes.images[c], ph.maps[i, c], title=name if r == 0 else None, fontsize=9,
                      cmap=levels, vmin=0, vmax=1)
            if np.isfinite(drift[i, c]):
                ax.text(0.5, -0.02, f"ρ {drift[i, c]:.2f}", transform=ax.transAxes, ha="center", va="top",
                        fontsize=7)
    draw.label_rows(axes[:, 0], [f"epoch {int(ph.epochs[i]) + 1}" for i in rows])
    fig.subplots_adjust(left=0.05, right=0.99, top=0.95, bottom=0.03, wspace=0.05, hspace=0.22)
    return fig
