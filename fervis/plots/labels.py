"""Drawing for notebook 3 (:mod:`fervis.labels`): class balance, confusion, calibration, recall
against support, LIME overlays, confused cells, ambiguous faces and the embedding."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from fervis.constants import CLASS_NAMES
from fervis.plots import _common as draw

__all__ = [
    "class_distribution_bars", "confusion_heatmap", "reliability_diagram", "class_metric_bars",
    "support_recall_scatter",
    "lime_overlay", "lime_grid", "lime_examples", "region_share_heatmap", "confusion_cell_grid", "ambiguous_grid",
    "embedding_scatter",
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
    ax = draw.ensure_axes(ax)
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

    ax = draw.ensure_axes(ax)
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
    ax = draw.ensure_axes(ax)
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
    ax = draw.ensure_axes(ax)
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
    ax = draw.ensure_axes(ax)
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
    lime_map = np.asarray(lime_map, dtype=float)
    peak = np.abs(lime_map).max()
    scaled = lime_map / peak if peak > 0 else lime_map
    rgba = np.zeros(lime_map.shape + (4,))
    rgba[..., 1] = scaled > 0
    rgba[..., 0] = scaled < 0
    rgba[..., 3] = alpha * np.abs(scaled)
    ax = draw.face(draw.ensure_axes(ax), image, rgba, title=title, alpha=None)  # green for, red against
    if segments is not None:
        from skimage.segmentation import find_boundaries

        edges = find_boundaries(np.asarray(segments), mode="inner")
        ax.imshow(np.ma.masked_where(~edges, edges), cmap="Greys", alpha=0.15, vmin=0, vmax=1, interpolation="nearest")
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
    fig, axes = draw.grid(draw.rows_for(len(images), ncols), ncols, fig, size=size, aspect=1.25, axis_off=True)
    for i, ax in enumerate(axes.ravel()[:len(images)]):
        lime_overlay(images[i], maps[i], segments[i], ax=ax, title=None if titles is None else titles[i])
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
    fig, axes = draw.grid(nrows, max(len(classes), 1), fig, size=size, aspect=1.3, axis_off=True)
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
    ax = draw.ensure_axes(ax)
    values = table.to_numpy(float)
    ax.imshow(values, cmap="Greens", vmin=0, vmax=max(np.nanmax(values), 1e-9) if values.size else 1, aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(table.columns)), list(table.columns), rotation=30, ha="right")
    counts = table.attrs.get("n")  # the faces behind each row, where the table carries them
    rows = list(table.index)
    if counts is not None and hasattr(counts, "get"):
        rows = [f"{row} (n={counts.get(row)})" if counts.get(row) is not None else str(row) for row in rows]
    ax.set_yticks(range(len(table.index)), rows)
    ax.set_xlabel("face region")
    ax.set_ylabel("class explained (its faces)" if rows != list(table.index) else "class explained")
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
    fig, axes = draw.grid(max(n, 1), 4, fig, size=size, aspect=1.15, axis_off=True)
    heads = ["face", f"saliency: {true}", f"saliency: {predicted}", f"{predicted} - {true}"]
    for i in range(n):
        draw.face(axes[i, 0], images[i], title=heads[0] if titles is None else titles[i])
        draw.face(axes[i, 1], images[i], maps_true[i], title=heads[1] if i == 0 else None)
        draw.face(axes[i, 2], images[i], maps_predicted[i], title=heads[2] if i == 0 else None)
        draw.heat(axes[i, 3], difference[i], title=heads[3] if i == 0 else None, cmap="RdBu_r", vmin=-1, vmax=1)
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
    fig, axes = draw.grid(draw.rows_for(len(table), ncols), ncols, fig, size=size, aspect=1.35, axis_off=True)
    for ax, image, r in zip(axes.ravel(), faces, table.itertuples()):
        draw.face(ax, image, title=f"label {r.label}\n{r.top1} {r.p_top1:.2f}\n{r.top2} {r.p_top2:.2f}", fontsize=7)
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
    ax = draw.ensure_axes(ax)
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
