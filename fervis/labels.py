"""Why are some expression labels easy and others hard? Metrics, LIME, drill-downs, embeddings.

Notebook 3 tests a seed's guesses (happy is easy; disgust is hard because it is rare and looks
like angry) against numbers:

* **Metrics**, with scikit-learn underneath: :func:`confusion` (rows true, columns predicted),
  :func:`class_report` (precision, recall, F1, support, calibration error per class),
  :func:`confused_pairs`, :func:`reliability` and :func:`expected_calibration_error`
  (Naeini et al., "Obtaining Well Calibrated Probabilities Using Bayesian Binning", AAAI 2015;
  Guo et al., "On Calibration of Modern Neural Networks", ICML 2017; per class as the
  class-wise ECE of Kull et al., NeurIPS 2019) and :func:`support_recall`.
* **LIME** (Ribeiro, Singh & Guestrin, "Why Should I Trust You?", KDD 2016) sized for 48x48
  grayscale faces: :func:`lime_explain` (signed weights; the engine is
  ``fervis.saliency.explain(..., method="lime")``, whose maps keep the positive part like the
  other saliency methods) wraps ``lime.lime_image`` with SLIC superpixels
  (Achanta et al., TPAMI 2012; lime's default quickshift makes two or three regions on a 48x48
  face), 3-channel images for LIME and raw 1-channel pixels for the model, one batched model
  call per face, and seeds for both the segmentation and the sampling (lime issue #477:
  ``random_seed`` alone only seeds the segmentation). :func:`lime_stability` reports the IoU of
  the top superpixels across repeated runs.
* **Drill-down**: :func:`confusion_cell` and :func:`cell_saliency` (saliency for the true and
  the predicted class, and their difference, via :func:`fervis.saliency.explain`), and
  :func:`ambiguous_faces` (highest-loss faces with their top-2 classes).
* **Embedding**: :func:`penultimate_features`, :func:`embed` (PCA, then t-SNE: van der Maaten &
  Hinton, JMLR 2008) and :func:`separability` (leave-one-out kNN recall and silhouette per
  class).
* :func:`headline` and :func:`assess_guesses` turn those numbers into sentences: the easiest
  and hardest class and the closing verdict. Recall and F1 carry percentile-bootstrap 95 %
  intervals (:func:`class_report`; where every resample gives the same value, as for a class
  with no face right, Wilson-based bounds instead, never a point); a sentence states a finding only where its interval
  excludes "no effect", and a class with fewer than :data:`MIN_SUPPORT` faces is named as too
  few to tell, never ranked.

Metrics need labels: an unlabelled dataset (the course's ``test.csv``) gets a clear
``ValueError`` there, while predictions and LIME work on it as on any faces.
"""

from __future__ import annotations

import numpy as np

from fervis._checks import (class_index, class_indices, class_labels, default_names, face_model, face_pixels,
                            image_model, images_for, is_dataset, positive_int, probabilities, real, require_dataset,
                            saliency_maps)
from fervis.constants import CLASS_NAMES, IMAGE_SIZE
from fervis.saliency import lime_segments  # re-exported: LIME's superpixels live with its engine
from fervis.stats import wilson

__all__ = [
    "class_index", "class_distribution", "confusion", "class_report", "confused_pairs", "reliability",
    "expected_calibration_error", "support_recall", "example_faces", "lime_segments", "lime_explain", "top_superpixels",
    "lime_stability", "lime_region_shares", "confusion_cell", "cell_saliency", "ambiguous_faces",
    "penultimate_features", "embed", "separability", "headline", "assess_guesses", "format_verdict",
    "MIN_SUPPORT", "MIN_LIME_FACES",
]


# --------------------------------------------------------------------------- checks


def _name(func):
    return f"fervis.labels.{func}"


def _int(value, name, func, low=1, high=None):
    return positive_int(value, name, _name(func), low, high)


def _real(value, name, func, low, high=None, low_open=False, high_open=False):
    return real(value, name, _name(func), low, high, low_open, high_open)


def _classes(class_idx, n, func, class_names=CLASS_NAMES, name="class_idx"):
    return class_indices(class_idx, n, _name(func), class_names, name)


def _faces(images, func, name="images"):
    return face_pixels(images, _name(func), name)


def _probs(probs, func, n=None):
    return probabilities(probs, _name(func), n)


def _labels(y_true, n, num_classes, func, name="y_true"):
    return class_labels(y_true, n, num_classes, _name(func), name)


def _model(model, func):
    """The class count of a model that takes raw 48x48 grey faces (LIME's superpixels, the embeddings)."""
    return face_model(model, _name(func))


def _names(class_names, k, func):
    if class_names is None:
        class_names = CLASS_NAMES
    names = [str(c) for c in class_names]
    if len(names) != k:
        raise ValueError(f"The 'class_names' parameter of {_name(func)} must name all {k} classes. "
                         f"Got {len(names)} names instead.")
    return names


_default_names = default_names


def _predicted(y_pred, n, k, func):
    """Predicted labels from labels ``(n,)`` or probabilities ``(n, k)``."""
    array = np.asarray(y_pred)
    if array.ndim == 2:
        return _probs(array, func, n).argmax(axis=1)
    return _labels(array, n, k, func, "y_pred")


# --------------------------------------------------------------------------- metrics


def class_distribution(dataset, normalize=False):
    """Faces per split and class (the seed's bar chart, for every split at once).

    Parameters
    ----------
    dataset : fervis.data.Dataset
    normalize : bool, default False
        Shares of each split (rows sum to 1) instead of counts.

    Returns
    -------
    pandas.DataFrame
        Splits x classes (plus ``unlabeled`` where some labels are -1).

    Example
    -------
    >>> class_distribution(fervis.data.load("synthetic"), normalize=True).loc["Training", "disgust"]  # doctest: +SKIP
    0.015
    """
    require_dataset(dataset, "fervis.labels.class_distribution")
    counts = dataset.counts()
    if normalize:
        return counts.div(counts.sum(axis=1).where(lambda s: s > 0), axis=0)
    return counts


def confusion(y_true, y_pred, normalize=None, class_names=CLASS_NAMES):
    """Confusion matrix: rows are the true class, columns the predicted class.

    Parameters
    ----------
    y_true : int array ``(n,)`` or Dataset
    y_pred : int array ``(n,)`` or probabilities ``(n, k)``
    normalize : {None, "true", "pred", "all"}, default None
        As in :func:`sklearn.metrics.confusion_matrix`: ``"true"`` divides each row by the
        class's support (the diagonal is then the recall).
    class_names : sequence of str

    Returns
    -------
    pandas.DataFrame ``(k, k)``
        Index named ``true``, columns named ``predicted``: :func:`fervis.models.confusion_matrix`
        (which :func:`fervis.training.evaluate` and ``fervis.monitoring.Monitor`` count with too).

    Example
    -------
    >>> confusion([0, 1, 1], [0, 0, 1], class_names=["a", "b"]).values.tolist()
    [[1, 0], [1, 1]]
    """
    import pandas as pd

    from fervis import models

    func = "confusion"
    if normalize not in (None, "true", "pred", "all"):
        raise ValueError(f"The 'normalize' parameter of {_name(func)} must be one of [None, 'true', 'pred', 'all']. "
                         f"Got {normalize!r} instead.")
    y_pred_arr = np.asarray(y_pred)
    k = y_pred_arr.shape[1] if y_pred_arr.ndim == 2 else len(class_names)
    names = _names(class_names, k, func)
    n = len(y_pred_arr)
    y_true = _labels(y_true, n, k, func)
    y_hat = _predicted(y_pred_arr, n, k, func)
    cm = models.confusion_matrix(y_true, y_hat, k, normalize=normalize)  # the one count, shared with training
    return pd.DataFrame(cm, index=pd.Index(names, name="true"), columns=pd.Index(names, name="predicted"))


def _bins(y, p, n_bins):
    """Per-bin mean confidence, accuracy and count, binned as sklearn's calibration_curve does."""
    from sklearn.calibration import calibration_curve

    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], p)
    counts = np.bincount(ids, minlength=n_bins)
    confidence = np.full(n_bins, np.nan)
    accuracy = np.full(n_bins, np.nan)
    if len(y):
        acc, conf = calibration_curve(y, p, n_bins=n_bins, strategy="uniform", pos_label=1)
        accuracy[counts > 0], confidence[counts > 0] = acc, conf
    return edges, confidence, accuracy, counts


def _calibration_inputs(y_true, probs, class_idx, func):
    probs = _probs(probs, func)
    k = probs.shape[1]
    y_true = _labels(y_true, len(probs), k, func)
    if class_idx is None:
        return (probs.argmax(axis=1) == y_true).astype(int), probs.max(axis=1)
    c = _classes(class_idx, 1, func, _default_names(k))[0]
    return (y_true == c).astype(int), probs[:, c]


def reliability(y_true, probs, n_bins=10, class_idx=None):
    """The reliability diagram's numbers: accuracy against confidence in equal-width bins.

    Parameters
    ----------
    y_true : int array ``(n,)`` or Dataset
    probs : float array ``(n, k)``
    n_bins : int, default 10
    class_idx : None, int or str
        ``None``: top-label calibration (confidence = the highest probability, accuracy = the
        prediction is right). A class: that class's probability against "the face is of
        that class" (one-vs-rest).

    Returns
    -------
    pandas.DataFrame
        One row per bin: ``lower``, ``upper``, ``confidence`` (mean probability), ``accuracy``
        (observed frequency), ``count``; NaN in empty bins.

    Example
    -------
    >>> reliability(y, probs, n_bins=5)["count"].sum() == len(y)  # doctest: +SKIP
    True
    """
    import pandas as pd

    func = "reliability"
    n_bins = _int(n_bins, "n_bins", func, 1, 1000)
    y, p = _calibration_inputs(y_true, probs, class_idx, func)
    edges, confidence, accuracy, counts = _bins(y, p, n_bins)
    return pd.DataFrame({"lower": edges[:-1], "upper": edges[1:], "confidence": confidence,
                         "accuracy": accuracy, "count": counts}, index=pd.RangeIndex(n_bins, name="bin"))


def expected_calibration_error(y_true, probs, n_bins=10, class_idx=None):
    """Expected calibration error: the count-weighted mean gap between accuracy and confidence.

    Parameters
    ----------
    y_true, probs, n_bins, class_idx
        As in :func:`reliability`.

    Returns
    -------
    float
        In [0, 1]; 0 is perfectly calibrated. NaN for no faces.

    Example
    -------
    >>> expected_calibration_error(np.array([0, 1]), np.array([[1.0, 0.0], [0.0, 1.0]]))
    0.0
    """
    table = reliability(y_true, probs, n_bins=n_bins, class_idx=class_idx)
    total = table["count"].sum()
    if total == 0:
        return float("nan")
    gap = (table["accuracy"] - table["confidence"]).abs().fillna(0.0)
    return float((gap * table["count"]).sum() / total)


def _train_counts(train_counts, names, func):
    if train_counts is None:
        return None
    if hasattr(train_counts, "reindex"):  # a Series or dict-like keyed by class name
        values = train_counts.reindex(names).to_numpy()
    elif isinstance(train_counts, dict):
        values = np.array([train_counts.get(c, np.nan) for c in names], dtype=float)
    else:
        values = np.asarray(train_counts, dtype=float)
    values = np.asarray(values, dtype=float)
    if values.shape != (len(names),) or np.isnan(values).any() or (values < 0).any():
        raise ValueError(f"The 'train_counts' parameter of {_name(func)} must give a non-negative count for each of "
                         f"{names}. Got {train_counts!r} instead.")
    return values.astype(np.int64)


def _bootstrap_recall_f1(y_true, y_pred, k, n_boot, confidence, seed):
    """Percentile bootstrap intervals of each class's recall and F1, faces resampled with
    replacement (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993).

    Returns ``(recall_low, recall_high, f1_low, f1_high)``, each ``(k,)``; NaN for a class with
    no face."""
    n = len(y_true)
    out = np.full((4, k), np.nan)
    if n == 0:
        return out
    rng = np.random.default_rng(seed)
    cell = y_true * k + y_pred
    recall, f1 = [], []
    for start in range(0, n_boot, 200):  # resamples in chunks: memory stays ~200 * n ints
        b = min(200, n_boot - start)
        idx = rng.integers(0, n, (b, n))
        counts = np.stack([np.bincount(row, minlength=k * k) for row in cell[idx]]).reshape(b, k, k)
        tp = counts[:, np.arange(k), np.arange(k)].astype(float)
        support, predicted = counts.sum(axis=2), counts.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            recall.append(np.where(support > 0, tp / support, np.nan))
            f1.append(np.where(support > 0, 2 * tp / (support + predicted), np.nan))
    alpha = 100 * (1 - confidence) / 2
    present = np.bincount(y_true, minlength=k) > 0
    for row, values in enumerate((np.concatenate(recall), np.concatenate(f1))):
        low, high = np.nanpercentile(values[:, present], [alpha, 100 - alpha], axis=0)
        out[2 * row, present], out[2 * row + 1, present] = low, high
    return out


def _boundary_intervals(tp, support, predicted, confidence, intervals):
    """Replace, in place, the bootstrap intervals that collapse to a point at the boundary.

    A class with 0 of its 78 faces right gives recall 0 and F1 0 in every resample: a percentile
    bootstrap says [0, 0], as if 78 faces settled it. There, recall takes the Wilson interval of
    ``tp`` of ``support``, and F1 bounds from the Wilson intervals of recall R and precision P
    (``tp`` of ``predicted``; [0, 1] for a class never predicted): F1 = 2PR / (P + R) lies between
    min(P, R) and 2 P_high R_high / (P_high + R_high), with R and P each at ``(1 + confidence) / 2``
    so that both hold together at ``confidence`` at least (Bonferroni). Never a point.
    """
    r_low, r_high, f_low, f_high = intervals
    each = (1 + confidence) / 2
    for c in np.flatnonzero((support > 0) & ((r_low == r_high) | (f_low == f_high))):
        if r_low[c] == r_high[c]:
            r_low[c], r_high[c] = wilson(tp[c], support[c], confidence)
        if f_low[c] == f_high[c]:
            rl, rh = wilson(tp[c], support[c], each)
            pl, ph = wilson(tp[c], predicted[c], each) if predicted[c] > 0 else (0.0, 1.0)
            f_low[c], f_high[c] = min(pl, rl), (2 * ph * rh / (ph + rh) if ph + rh > 0 else 0.0)


def class_report(y_true, probs, train_counts=None, n_bins=10, class_names=CLASS_NAMES, n_boot=1000,
                 confidence=0.95, seed=0):
    """Precision, recall, F1 (with intervals), support and calibration error per class.

    Recall and F1 carry percentile-bootstrap intervals; where every resample gives the same value (a
    class with no face right, or every face right), Wilson-based bounds instead, never a point.

    Parameters
    ----------
    y_true : int array ``(n,)`` or Dataset
    probs : float array ``(n, k)``
    train_counts : sequence of k ints, dict or pandas.Series, optional
        Training faces per class (``dataset.counts().loc["Training"]``), added as
        ``train_support`` so support and recall can be compared.
    n_bins : int, default 10
        Bins of the class-wise expected calibration error.
    class_names : sequence of str
    n_boot : int, default 1000
        Bootstrap resamples of the faces for the intervals of recall and F1.
    confidence : float in (0, 1), default 0.95
        Coverage of the intervals.
    seed : int, default 0
        Seeds the resampling: the same faces give the same intervals.

    Returns
    -------
    pandas.DataFrame
        One row per class: ``precision``, ``recall``, ``recall_low``, ``recall_high``, ``f1``,
        ``f1_low``, ``f1_high``, ``support`` (evaluation faces of the class: the n of recall, F1
        and ``ece``), ``predicted`` (faces predicted as the class: the n of precision), ``ece``
        and, when given, ``train_support``. A class with no face has NaN recall, F1 and
        intervals, a class never predicted (``predicted`` 0) NaN precision (undefined, shown as
        "—" by :func:`fervis.stats.shown`); with few faces the intervals are wide, and with very few (see
        :data:`MIN_SUPPORT`) they are not to be trusted at all.

    Example
    -------
    >>> class_report(y, probs).loc["happy", "recall"]  # doctest: +SKIP
    0.93
    """
    import pandas as pd

    from fervis import models

    func = "class_report"
    probs = _probs(probs, func)
    k = probs.shape[1]
    names = _names(class_names, k, func)
    y_true = _labels(y_true, len(probs), k, func)
    n_bins = _int(n_bins, "n_bins", func, 1, 1000)
    n_boot = _int(n_boot, "n_boot", func, 10)
    confidence = _real(confidence, "confidence", func, 0.0, 1.0, low_open=True, high_open=True)
    seed = _int(seed, "seed", func, 0, 2 ** 32 - 1)
    y_pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
    # From the one confusion matrix, as training.evaluate and the Monitor count: an undefined ratio
    # is NaN (recall and F1 of a class without faces, precision of a class never predicted), as in
    # the bootstrap intervals, where scikit-learn's zero_division would give a made-up 0.
    cm = models.confusion_matrix(y_true, y_pred, k)
    tp, support, predicted = cm.diagonal().astype(float), cm.sum(axis=1), cm.sum(axis=0)
    recall, precision = models.class_recall(cm), models.class_precision(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(support > 0, 2 * tp / np.maximum(support + predicted, 1), np.nan)
    r_low, r_high, f_low, f_high = _bootstrap_recall_f1(y_true, y_pred, k, n_boot, confidence, seed)
    _boundary_intervals(tp, support, predicted, confidence, (r_low, r_high, f_low, f_high))
    table = pd.DataFrame({"precision": precision, "recall": recall, "recall_low": r_low, "recall_high": r_high,
                          "f1": f1, "f1_low": f_low, "f1_high": f_high, "support": support, "predicted": predicted},
                         index=pd.Index(names, name="class"))
    table["ece"] = [expected_calibration_error(y_true, probs, n_bins, class_idx=c) for c in range(k)]
    counts = _train_counts(train_counts, names, func)
    if counts is not None:
        table["train_support"] = counts
    # computed here, so plots.support_recall_scatter only draws
    table.attrs["support_recall"] = {c: support_recall(table, c) for c in ("support", "train_support") if c in table}
    return table


def confused_pairs(y_true, y_pred, top=10, by="rate", class_names=CLASS_NAMES):
    """The most-confused (true, predicted) pairs, ranked.

    Parameters
    ----------
    y_true : int array ``(n,)`` or Dataset
    y_pred : int array ``(n,)`` or probabilities ``(n, k)``
    top : int, default 10
    by : {"rate", "count"}, default "rate"
        ``rate`` is the share of the true class's faces given the predicted class, so a rare
        class's confusion is not hidden behind a frequent class's larger counts.
    class_names : sequence of str

    Returns
    -------
    pandas.DataFrame
        Columns ``true``, ``predicted``, ``count``, ``rate``; pairs with no face left out.

    Example
    -------
    >>> confused_pairs(y, probs, top=3)  # doctest: +SKIP
    """
    import pandas as pd

    func = "confused_pairs"
    if by not in ("rate", "count"):
        raise ValueError(f"The 'by' parameter of {_name(func)} must be one of ['rate', 'count']. Got {by!r} instead.")
    top = _int(top, "top", func)
    counts = confusion(y_true, y_pred, class_names=class_names)
    support = counts.sum(axis=1).to_numpy()
    rows = []
    for i, true in enumerate(counts.index):
        for j, pred in enumerate(counts.columns):
            if i != j and counts.iat[i, j] > 0:
                rows.append((true, pred, int(counts.iat[i, j]), counts.iat[i, j] / support[i]))
    table = pd.DataFrame(rows, columns=["true", "predicted", "count", "rate"])
    other = "count" if by == "rate" else "rate"
    table = table.sort_values([by, other], ascending=False, kind="stable").head(top)
    return table.reset_index(drop=True)


def support_recall(report, column=None):
    """Spearman rank correlation between support and recall across classes.

    Parameters
    ----------
    report : pandas.DataFrame
        From :func:`class_report`.
    column : str, optional
        The support column; default ``train_support`` when present, else ``support``.

    Returns
    -------
    float
        In [-1, 1]: 1 when recall follows sample count exactly; NaN when either is constant.

    Example
    -------
    >>> support_recall(class_report(y, probs, train_counts=counts))  # doctest: +SKIP
    0.71
    """
    from scipy.stats import spearmanr

    column = column or ("train_support" if "train_support" in report else "support")
    if column not in report or "recall" not in report:
        raise ValueError(f"The 'report' parameter of {_name('support_recall')} must have columns 'recall' and "
                         f"{column!r} (from fervis.labels.class_report). Got columns {list(report.columns)} instead.")
    x, y = report[column].to_numpy(float), report["recall"].to_numpy(float)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def example_faces(y_true, probs, per_class=2, class_names=CLASS_NAMES):
    """Faces to explain per class: the most confident correct and the most confident wrong ones.

    Parameters
    ----------
    y_true : int array ``(n,)`` or Dataset
    probs : float array ``(n, k)``
    per_class : int, default 2
        Faces per class, alternating correct and wrong (correct first); when a class has too
        few of one kind the other fills in.
    class_names : sequence of str

    Returns
    -------
    pandas.DataFrame
        One row per face, by class: ``index`` (into ``probs``), ``label``, ``predicted``,
        ``correct``, ``p_predicted``, ``p_label``.

    Example
    -------
    >>> example_faces(faces, probs, per_class=2)  # doctest: +SKIP
    """
    import pandas as pd

    func = "example_faces"
    probs = _probs(probs, func)
    k = probs.shape[1]
    names = _names(class_names, k, func)
    y_true = _labels(y_true, len(probs), k, func)
    per_class = _int(per_class, "per_class", func)
    y_pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, int)
    rows = []
    for c in range(k):
        mine = np.flatnonzero(y_true == c)
        right = mine[y_pred[mine] == c]
        wrong = mine[y_pred[mine] != c]
        right = list(right[np.argsort(-probs[right, c], kind="stable")])
        wrong = list(wrong[np.argsort(-probs[wrong].max(axis=1), kind="stable")])
        chosen = []
        while len(chosen) < per_class and (right or wrong):
            want = right if (len(chosen) % 2 == 0 and right) or not wrong else wrong
            chosen.append(want.pop(0))
        for i in chosen:
            rows.append((int(i), names[c], names[y_pred[i]], bool(y_pred[i] == c), probs[i, y_pred[i]],
                         probs[i, c]))
    return pd.DataFrame(rows, columns=["index", "label", "predicted", "correct", "p_predicted", "p_label"])


# --------------------------------------------------------------------------- LIME


def lime_explain(model, images, class_idx=None, num_samples=1000, num_segments=50, seed=0, batch_size=500,
                 segments=None, hide_color=None, kernel_width=0.25):
    """LIME maps: each pixel carries its superpixel's weight for the class (+ for, - against).

    Parameters
    ----------
    model : keras.Model
        Takes raw 0-255 faces ``(n, 48, 48, 1)``, outputs probabilities.
    images : array ``(n, 48, 48)`` or ``(n, 48, 48, 1)``, or a Dataset
        Labels are not needed: unlabelled faces are explained like any others.
    class_idx : None, int, str or sequence of those
        ``None`` explains the predicted class; one class for every face; or one per face.
    num_samples : int, default 1000
        Perturbed copies per face (LIME's neighbourhood), scored in batches of ``batch_size``.
    num_segments : int, default 50
        SLIC target (see :func:`lime_segments`); ignored when ``segments`` is given.
    seed : int, default 0
        Seeds the sampling and the ridge fit (lime's ``random_state``) and lime's
        ``random_seed``; the same seed gives the same maps. Any int (folded into numpy's
        0 .. 2**32 - 1), as in :func:`fervis.saliency.explain`.
    batch_size : int, default 500
        Perturbed faces per model call.
    segments : int array ``(n, 48, 48)``, optional
        Precomputed superpixels (from :func:`lime_segments`).
    hide_color : None or float, default None
        A superpixel switched off takes its mean grey (``None``) or this value, a pixel value
        in the model's input units (any finite number, as in :func:`fervis.saliency.explain`).
    kernel_width : float, default 0.25
        lime's exponential kernel width on the cosine distance to the face.

    Returns
    -------
    ndarray float32 ``(n, 48, 48)``
        The superpixel weights of LIME's local linear model, painted on the pixels:
        :func:`fervis.saliency.explain` with ``method="lime"``, ``normalize=False`` and
        ``options={"sign": "signed"}`` (the one LIME engine; its default maps keep the positive
        part, scaled to a maximum of 1, like every other saliency map).

    Example
    -------
    >>> from fervis import data, models
    >>> faces = data.load("synthetic").x()
    >>> maps = lime_explain(models.build("tiny"), faces[:2], num_samples=300)
    >>> maps.shape
    (2, 48, 48)
    """
    from fervis import saliency

    func = "lime_explain"
    k = _model(model, func)
    x = _faces(images, func)
    classes = _classes(class_idx, len(x), func, _default_names(k))
    num_samples = _int(num_samples, "num_samples", func, 2)
    # The one LIME engine, behind saliency.explain; here its signed weights, unscaled. The other settings
    # are checked there, as explain's options (the same values allowed), in messages naming this function.
    return saliency.explain(
        model, x, "lime", class_idx=None if (classes < 0).all() else classes, batch_size=batch_size, normalize=False,
        options={"samples": num_samples, "num_segments": num_segments, "segments": segments, "seed": seed,
                 "kernel_width": kernel_width, "hide_color": hide_color, "sign": "signed"}, _func=_name(func))


def _superpixel_weights(maps, segments):
    """Each face's weight per superpixel, read back from a painted map."""
    out = []
    for m, s in zip(maps, segments):
        ids = s.ravel()
        sums = np.bincount(ids, weights=m.ravel().astype(np.float64))
        sizes = np.bincount(ids)
        out.append(np.divide(sums, sizes, out=np.zeros_like(sums), where=sizes > 0))
    return out


def top_superpixels(maps, segments, k=5, sign="positive"):
    """Masks of the ``k`` superpixels with the largest weight for (or against) the class.

    Parameters
    ----------
    maps : float array ``(n, 48, 48)``
        From :func:`lime_explain`.
    segments : int array ``(n, 48, 48)``
        The superpixels the maps were made with (:func:`lime_segments`).
    k : int, default 5
    sign : {"positive", "negative"}, default "positive"
        ``positive``: the superpixels for the class (largest positive weights);
        ``negative``: those against it. Superpixels of the other sign are never chosen, so a
        mask can hold fewer than ``k``.

    Returns
    -------
    ndarray bool ``(n, 48, 48)``

    Example
    -------
    >>> masks = top_superpixels(maps, lime_segments(faces), k=3)  # doctest: +SKIP
    """
    func = "top_superpixels"
    maps = np.asarray(maps, dtype=np.float64)
    segments = np.asarray(segments)
    if maps.ndim != 3 or segments.shape != maps.shape or segments.dtype.kind not in "iu":
        raise ValueError(f"The 'maps' and 'segments' parameters of {_name(func)} must be arrays of the same shape "
                         f"(n, 48, 48), segments of integer ids. Got {maps.shape} and {segments.shape} "
                         f"({segments.dtype}) instead.")
    if sign not in ("positive", "negative"):
        raise ValueError(f"The 'sign' parameter of {_name(func)} must be one of ['positive', 'negative']. "
                         f"Got {sign!r} instead.")
    k = _int(k, "k", func)
    direction = 1.0 if sign == "positive" else -1.0
    masks = np.zeros(maps.shape, bool)
    for i, w in enumerate(_superpixel_weights(maps, segments)):
        w = direction * w
        order = np.argsort(-w, kind="stable")[:k]
        chosen = order[w[order] > 0]
        masks[i] = np.isin(segments[i], chosen)
    return masks


def lime_stability(model, images, class_idx=None, runs=3, top_k=5, num_samples=1000, num_segments=50, seed=0,
                   batch_size=500, segments=None, hide_color=None):
    """How much LIME's top superpixels move between runs that differ only in their seed.

    Parameters
    ----------
    model, images, class_idx, num_samples, num_segments, batch_size, segments, hide_color
        As in :func:`lime_explain`.
    runs : int, default 3
        Runs with seeds ``seed, seed + 1, ...``; the segmentation is the same in every run.
    top_k : int, default 5
        Superpixels compared: the ``top_k`` with the largest positive weight.
    seed : int, default 0

    Returns
    -------
    ndarray float ``(n,)``
        Mean pairwise IoU (intersection over union of the pixels) of the top-k masks:
        1 is perfectly stable, 0 is no overlap at all.

    Example
    -------
    >>> lime_stability(model, faces[:4], runs=3, num_samples=500)  # doctest: +SKIP
    array([0.82, 0.71, 1.  , 0.64])
    """
    from fervis import saliency

    func = "lime_stability"
    _model(model, func)
    x = _faces(images, func)
    runs = _int(runs, "runs", func, 2)
    top_k = _int(top_k, "top_k", func)
    seed = _int(seed, "seed", func, 0, 2 ** 32 - 1 - runs)
    if segments is None:
        segments = lime_segments(x, num_segments)
    if class_idx is None and len(x):  # fix the class once, so every run explains the same one
        class_idx = saliency.predict(model, x, batch_size=batch_size).argmax(axis=1)
    masks = []
    for r in range(runs):
        maps = lime_explain(model, x, class_idx, num_samples=num_samples, seed=seed + r, batch_size=batch_size,
                            segments=segments, hide_color=hide_color)
        masks.append(top_superpixels(maps, np.asarray(segments), k=top_k))
    ious = []
    for a in range(runs):
        for b in range(a + 1, runs):
            inter = (masks[a] & masks[b]).sum(axis=(1, 2))
            union = (masks[a] | masks[b]).sum(axis=(1, 2))
            ious.append(np.divide(inter, union, out=np.ones(len(x)), where=union > 0))
    return np.mean(ious, axis=0) if ious else np.zeros(0)


def lime_region_shares(maps, dataset, class_idx, normalize=None, class_names=CLASS_NAMES):
    """How each class's positive LIME weight splits over the face regions of notebook 1.

    The positive part of each map (the evidence *for* the class) is treated like a saliency
    map and summed per region with :func:`fervis.saliency.region_shares`, so LIME and the
    gradient methods are compared on the same axes.

    Parameters
    ----------
    maps : float array ``(n, 48, 48)``
        From :func:`lime_explain`.
    dataset : fervis.data.Dataset
        The faces explained; its ground-truth ``regions`` when it has them (synthetic),
        otherwise :func:`fervis.regions.template` for registered FER2013 crops.
    class_idx : sequence of n classes
        The class each map explains (and is counted under).
    normalize : {None, "area"}
        As in :func:`fervis.saliency.region_shares`.
    class_names : sequence of str

    Returns
    -------
    pandas.DataFrame
        Classes x regions, plus a row ``"all"``; ``attrs["n"]`` (a Series) gives each row's number
        of usable maps: a LIME map with no positive weight is empty and left out, as in
        :func:`fervis.saliency.region_shares`.

    Example
    -------
    >>> lime_region_shares(maps, faces, classes)  # doctest: +SKIP
    """
    from fervis import saliency

    func = "lime_region_shares"
    maps = saliency_maps(maps, _name(func), shape=(IMAGE_SIZE, IMAGE_SIZE))
    n = len(maps)
    if not is_dataset(dataset) or len(dataset) != n:
        raise ValueError(f"The 'dataset' parameter of {_name(func)} must be the Dataset of the {n} faces explained. "
                         f"Got {type(dataset).__name__} with {len(getattr(dataset, 'images', ()))} faces instead.")
    classes = _classes(class_idx, n, func, class_names)
    if (classes < 0).any():
        raise ValueError(f"The 'class_idx' parameter of {_name(func)} must name the class each map explains. "
                         "Got None instead.")
    table = saliency.region_shares(np.clip(maps, 0.0, None), dataset, classes, class_names=class_names,
                                   normalize=normalize)  # the dataset's regions and their names
    return table  # attrs["n"]: the usable maps behind each row (region_shares leaves degenerate ones out)


# --------------------------------------------------------------------------- drill-down


def confusion_cell(y_true, probs, true, predicted, class_names=CLASS_NAMES):
    """The faces of one confusion-matrix cell, most confidently (mis)predicted first.

    Parameters
    ----------
    y_true : int array ``(n,)`` or Dataset
    probs : float array ``(n, k)``
    true, predicted : int or str
        The cell: faces of class ``true`` predicted as ``predicted`` (equal: the correct ones).
    class_names : sequence of str

    Returns
    -------
    ndarray int ``(m,)``
        Indices into ``y_true``/``probs``, by decreasing probability of ``predicted``.

    Raises
    ------
    ValueError
        For an unknown class, or an empty cell (the message lists the cells of that row that
        do hold faces).

    Example
    -------
    >>> confusion_cell(y, probs, "disgust", "angry")  # doctest: +SKIP
    array([12, 40, 7])
    """
    func = "confusion_cell"
    probs = _probs(probs, func)
    k = probs.shape[1]
    names = _names(class_names, k, func)
    y_true = _labels(y_true, len(probs), k, func)
    t = _classes(true, 1, func, names, "true")[0]
    p = _classes(predicted, 1, func, names, "predicted")[0]
    y_pred = probs.argmax(axis=1)
    idx = np.flatnonzero((y_true == t) & (y_pred == p))
    if not len(idx):
        row = np.bincount(y_pred[y_true == t], minlength=k)
        filled = {names[j]: int(row[j]) for j in range(k) if row[j]}
        raise ValueError(
            f"The confusion cell (true={names[t]!r}, predicted={names[p]!r}) of {_name(func)} is empty: no "
            f"{names[t]} face is predicted {names[p]}. Cells of that row with faces: {filled or 'none'}."
        )
    return idx[np.argsort(-probs[idx, p], kind="stable")]


def cell_saliency(model, images, true, predicted, method="gradient", batch_size=64, class_names=CLASS_NAMES):
    """Saliency for the true and for the predicted class, and where they differ.

    Parameters
    ----------
    model : keras.Model
        Any image classifier :func:`fervis.saliency.explain` takes.
    images : array ``(n, h, w, c)`` as the model takes them (``(n, 48, 48)`` for a fervis model), or a Dataset
        Faces of one confusion cell (:func:`confusion_cell`).
    true, predicted : int or str
    method : str, default "gradient"
        Any method of :func:`fervis.saliency.explain` (:data:`fervis.saliency.ALL_METHODS`; the
        gradient methods run in a ``tf.function``, ``"lime"`` gives its positive superpixel weights).
    batch_size : int, default 64
    class_names : sequence of str

    Returns
    -------
    (maps_true, maps_predicted, difference) : three float32 arrays ``(n, h, w)``
        The maps are normalised to a maximum of 1 per face; ``difference`` is
        ``maps_predicted - maps_true``, positive where the predicted class draws more on
        the pixel than the true class does.

    Example
    -------
    >>> t, p, d = cell_saliency(model, faces[cell], "disgust", "angry")  # doctest: +SKIP
    """
    from fervis import saliency

    func = "cell_saliency"
    input_shape, _ = image_model(model, _name(func))  # any model saliency.explain takes
    x = images_for(images, input_shape, _name(func))
    t = _classes(true, 1, func, class_names, "true")[0]
    p = _classes(predicted, 1, func, class_names, "predicted")[0]
    maps_true = saliency.explain(model, x, method=method, class_idx=int(t), batch_size=batch_size)
    maps_pred = saliency.explain(model, x, method=method, class_idx=int(p), batch_size=batch_size)
    return maps_true, maps_pred, (maps_pred - maps_true).astype(np.float32)


def ambiguous_faces(y_true, probs, per_class=3, class_names=CLASS_NAMES):
    """The highest-loss faces of each class, with their top-2 predicted classes.

    A face the model gives to another class with high confidence is a candidate for a
    doubtful label; one spread over two neighbours is a genuinely ambiguous expression.

    Parameters
    ----------
    y_true : int array ``(n,)`` or Dataset
    probs : float array ``(n, k)``
    per_class : int, default 3
    class_names : sequence of str

    Returns
    -------
    pandas.DataFrame
        One row per face, grouped by class, highest loss first: ``index`` (into ``probs``),
        ``label``, ``loss`` (cross-entropy), ``p_label``, ``top1``, ``p_top1``, ``top2``,
        ``p_top2``.

    Example
    -------
    >>> ambiguous_faces(train.labels, train_probs, per_class=2)  # doctest: +SKIP
    """
    import pandas as pd

    func = "ambiguous_faces"
    probs = _probs(probs, func)
    k = probs.shape[1]
    names = _names(class_names, k, func)
    y_true = _labels(y_true, len(probs), k, func)
    per_class = _int(per_class, "per_class", func)
    p_label = probs[np.arange(len(probs)), y_true] if len(probs) else np.zeros(0)
    loss = -np.log(np.clip(p_label, 1e-12, 1.0))
    order = np.argsort(-probs, axis=1, kind="stable")
    rows = []
    for c in range(k):
        mine = np.flatnonzero(y_true == c)
        for i in mine[np.argsort(-loss[mine], kind="stable")][:per_class]:
            a, b = order[i, 0], order[i, 1]
            rows.append((int(i), names[c], loss[i], p_label[i], names[a], probs[i, a], names[b], probs[i, b]))
    return pd.DataFrame(rows, columns=["index", "label", "loss", "p_label", "top1", "p_top1", "top2", "p_top2"])


# --------------------------------------------------------------------------- embedding


def _penultimate_layers(model, func):
    """Names of the layers feeding the last Dense layer (the classifier's features); in an ensemble
    (:func:`fervis.models.ensemble`) each member's, whose features its averaged logits weigh."""
    import keras

    from fervis import models

    named = models.named_layers(model)
    found = []
    for part in models.ensemble_members(model) or [model]:
        # trained_layers: the class-order Dense of an adapted model is fervis's, not the classifier's.
        dense = [layer for _, layer in models.trained_layers(part) if isinstance(layer, keras.layers.Dense)]
        source = dense[-1]._inbound_nodes[0].input_tensors[0]._keras_history[0] if dense else None
        if source is None or isinstance(source, keras.layers.InputLayer):
            raise ValueError(f"The 'model' parameter of {_name(func)} has no Dense layer fed by another layer whose "
                             f"output could serve as features; pass layer_name, one of {[n for n, _ in named]}.")
        found.append(next(name for name, layer in named if layer is source))
    return found


def penultimate_features(model, images, layer_name=None, batch_size=256):
    """The features the classifier's last Dense layer sees, one vector per face.

    Parameters
    ----------
    model : keras.Model
    images : array ``(n, 48, 48)`` or ``(n, 48, 48, 1)``, or a Dataset
    layer_name : str or list of str, optional
        Another layer to read, or several, whose features are put side by side; a 4-D output is
        averaged over space. Default: the input of the last Dense layer (``predictions`` for
        fervis models), also in nested models; in an ensemble, each member's.
    batch_size : int, default 256

    Returns
    -------
    ndarray float32 ``(n, d)``

    Example
    -------
    >>> penultimate_features(model, faces).shape  # doctest: +SKIP
    (600, 128)
    """
    from fervis import models

    func = "penultimate_features"
    _model(model, func)
    x = _faces(images, func)
    batch_size = _int(batch_size, "batch_size", func)
    names = _penultimate_layers(model, func) if layer_name is None else layer_name
    names = [names] if isinstance(names, str) else names
    paths = models.layer_paths(model)
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"The 'layer_name' parameter of {_name(func)} must be a layer name or a list of them, "
                         f"from {paths}. Got {layer_name!r} instead.")
    names = [models.canonical_layer_name(model, name) for name in names]
    for name in names:
        if name not in paths:
            raise ValueError(f"The 'layer_name' parameter of {_name(func)} must be one of {paths}. "
                             f"Got {name!r} instead.")
    return np.concatenate([_features(models.truncate_at(model, name), x, batch_size) for name in names], axis=1)


def _features(features, x, batch_size):
    out = [np.asarray(features(x[a:a + batch_size], training=False)) for a in range(0, len(x), batch_size)]
    if not out:
        return np.zeros((0, int(features.output_shape[-1])), np.float32)
    out = np.concatenate(out)
    if out.ndim > 2:
        out = out.reshape(len(out), -1, out.shape[-1]).mean(axis=1)
    return out.astype(np.float32)


def _reduce(features, pca_components, seed, func):
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 3 or not np.isfinite(features).all():
        raise ValueError(f"The 'features' parameter of {_name(func)} must be a finite array shaped (n, d) with n >= 3. "
                         f"Got shape {features.shape} instead.")
    pca_components = _int(pca_components, "pca_components", func)
    z = StandardScaler().fit_transform(features)
    m = min(pca_components, features.shape[1], len(features))
    return PCA(n_components=m, random_state=seed).fit_transform(z)


def embed(features, pca_components=50, perplexity=30.0, seed=0):
    """A 2-D map of the features: standardised, PCA, then t-SNE.

    Parameters
    ----------
    features : float array ``(n, d)``
        From :func:`penultimate_features`.
    pca_components : int, default 50
    perplexity : float, default 30
        Lowered to ``(n - 1) / 3`` for small ``n``, as t-SNE needs.
    seed : int, default 0

    Returns
    -------
    ndarray float32 ``(n, 2)``

    Example
    -------
    >>> coords = embed(penultimate_features(model, faces))  # doctest: +SKIP
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    func = "embed"
    seed = _int(seed, "seed", func, 0, 2 ** 32 - 1)
    perplexity = _real(perplexity, "perplexity", func, 0.0, low_open=True)
    z = _reduce(features, pca_components, seed, func)
    perplexity = min(perplexity, (len(z) - 1) / 3.0)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    # One thread: on a shared 2-core CPU, the Barnes-Hut loop's OpenMP threads spin-wait for
    # each other and run ~10x slower than one thread (measured: 600 faces, 82 s against 9 s).
    with threadpool_limits(1):
        return tsne.fit_transform(z).astype(np.float32)


def separability(features, labels, k=10, pca_components=50, class_names=CLASS_NAMES):
    """How well each class separates from the others in feature space.

    Parameters
    ----------
    features : float array ``(n, d)``
    labels : int array ``(n,)`` or Dataset
    k : int, default 10
        Neighbours of the leave-one-out kNN vote.
    pca_components : int, default 50
        Features are standardised and reduced with PCA first (as for :func:`embed`).
    class_names : sequence of str

    Returns
    -------
    pandas.DataFrame
        One row per class with faces, and ``all``: ``n``, ``knn_recall`` (share of the
        class's faces whose k nearest other faces vote for their class), ``silhouette``
        (mean silhouette of its faces, -1 to 1) and ``nearest_class`` (the class its faces'
        neighbours vote for most when they vote wrong).

    Example
    -------
    >>> separability(penultimate_features(model, faces), faces.labels)  # doctest: +SKIP
    """
    import pandas as pd
    from sklearn.metrics import silhouette_samples
    from sklearn.neighbors import NearestNeighbors

    func = "separability"
    z = _reduce(features, pca_components, 0, func)
    n = len(z)
    num_classes = len(class_names)
    y = _labels(labels, n, num_classes, func, "labels")
    if len(np.unique(y)) < 2:
        raise ValueError(f"The 'labels' parameter of {_name(func)} must hold at least two classes. "
                         f"Got only {[class_names[c] for c in np.unique(y)]} instead.")
    k = _int(k, "k", func, 1, n - 1)
    _, neighbours = NearestNeighbors(n_neighbors=k + 1).fit(z).kneighbors(z)
    votes = y[neighbours[:, 1:]]  # the face itself is its own nearest neighbour: left out
    tally = np.stack([(votes == c).sum(axis=1) for c in range(num_classes)], axis=1)
    knn = tally.argmax(axis=1)  # ties go to the lower class index
    sil = silhouette_samples(z, y)
    rows, index = [], []
    for c in range(num_classes):
        sel = y == c
        if not sel.any():
            continue
        wrong = knn[sel][knn[sel] != c]
        nearest = class_names[np.bincount(wrong, minlength=num_classes).argmax()] if len(wrong) else ""
        rows.append((int(sel.sum()), float((knn[sel] == c).mean()), float(sil[sel].mean()), nearest))
        index.append(class_names[c])
    rows.append((n, float((knn == y).mean()), float(sil.mean()), ""))
    index.append("all")
    return pd.DataFrame(rows, columns=["n", "knn_recall", "silhouette", "nearest_class"],
                        index=pd.Index(index, name="class"))


# --------------------------------------------------------------------------- verdict

#: Fewest evaluation faces of a class for a generated sentence to say anything about it: below
#: this, recall and F1 move by more than 3 points with one face, and a percentile bootstrap of
#: 0 of 9 (or 9 of 9) collapses to a zero-width interval that looks certain and is not.
MIN_SUPPORT = 30

#: Fewest LIME-explained faces of a class for the verdict to read its region shares.
MIN_LIME_FACES = 5

_INTERVALS = ("f1_low", "f1_high")


def _f1_text(report, c):
    row = report.loc[c]
    return f"{c} {row['f1']:.2f} [{row['f1_low']:.2f}, {row['f1_high']:.2f}] (n = {int(row['support'])})"


def _check_report(report, func):
    import pandas as pd

    needed = ("recall", "f1", "f1_low", "f1_high", "support")
    if not isinstance(report, pd.DataFrame) or any(c not in report for c in needed):
        got = list(report.columns) if isinstance(report, pd.DataFrame) else type(report).__name__
        raise ValueError(f"The 'report' parameter of {_name(func)} must be the DataFrame of fervis.labels.class_report, "
                         f"with columns {list(needed)}. Got {got} instead.")


def _too_few(report, min_support):
    few = report.index[report["support"] < min_support]
    return ", ".join(f"{c} (n = {int(report.loc[c, 'support'])})" for c in few)


def headline(report, min_support=MIN_SUPPORT):
    """Which class is easiest and which hardest, by F1, from the numbers of ``report``.

    Only classes with at least ``min_support`` faces are ranked; the others are named as too
    few to tell. The two are called easiest and hardest only when their 95 % F1 intervals do
    not overlap; otherwise the sentence says the data cannot order them.

    Parameters
    ----------
    report : pandas.DataFrame
        From :func:`class_report`.
    min_support : int, default :data:`MIN_SUPPORT`

    Returns
    -------
    str

    Example
    -------
    >>> print(headline(class_report(faces, probs)))  # doctest: +SKIP
    Easiest: happy 0.97 [0.95, 0.99] (n = 151); hardest: neutral 0.84 [0.79, 0.88] (n = 103).
    """
    func = "headline"
    _check_report(report, func)
    min_support = _int(min_support, "min_support", func)
    ranked = report[report["support"] >= min_support]
    few = _too_few(report, min_support)
    tail = f" Too few faces (n < {min_support}) to tell: {few}." if few else ""
    if len(ranked) < 2:
        return f"Fewer than two classes have {min_support} faces or more: no easiest or hardest class.{tail}"
    best, worst = ranked["f1"].idxmax(), ranked["f1"].idxmin()
    if ranked.loc[worst, "f1_high"] >= ranked.loc[best, "f1_low"]:
        return (f"No class is clearly easiest or hardest: the 95 % F1 intervals of the highest, "
                f"{_f1_text(report, best)}, and the lowest, {_f1_text(report, worst)}, overlap.{tail}")
    return f"Easiest: {_f1_text(report, best)}; hardest: {_f1_text(report, worst)} (F1, 95 % interval).{tail}"


def _verdict(strong, weak):
    return "yes" if strong else ("partly" if weak else "no")


def assess_guesses(report, pairs, separation=None, shares=None, min_correlation=0.5, min_confusion=0.25,
                   min_lift=2.0, min_share=0.35, min_gap=0.2, min_support=MIN_SUPPORT, min_lime_faces=MIN_LIME_FACES,
                   alpha=0.05):
    """Which labels are good and bad, and which of the seed's explanations the numbers support.

    Only classes with at least ``min_support`` evaluation faces are judged; the others are
    named as too few to tell. The best and the worst class are the highest and lowest F1 among
    them, and the guesses are judged on them only when their 95 % F1 intervals (from
    :func:`class_report`) do not overlap; otherwise every guess is ``n/a``, there being no hard
    class to explain. A finding is stated only when its interval excludes "no effect":

    * *few training samples*: recall rises with support (Spearman rho >= ``min_correlation``
      with p < ``alpha``) and the worst class is among the two rarest ("partly": one of the two);
    * *confused with a neighbour*: at least ``min_confusion`` of the worst class's faces go to
      one other class, at least ``min_lift`` times as often as the faces of the other classes
      do (so a model that calls nearly everything *happy* does not make *happy* a neighbour),
      and the rate's 95 % Wilson interval lies above the other faces' rate; "partly": at least
      half that share, with the interval above the other faces' rate;
    * *evidence in one region*: the best class puts at least ``min_share`` of its positive
      LIME weight in one region, more than the worst class does in its top region
      ("partly": only the second holds); ``n/a`` when either class has fewer than
      ``min_lime_faces`` LIME-explained faces;
    * *separability*: in feature space the best class's kNN recall exceeds the worst's by
      ``min_gap`` and their 95 % Wilson intervals do not overlap ("partly": they do not overlap
      but the gap is smaller) and the worst class's nearest class is noted.

    Parameters
    ----------
    report : pandas.DataFrame
        :func:`class_report` (with ``train_support`` for the sample-count guess).
    pairs : pandas.DataFrame
        :func:`confused_pairs` (``by="rate"``) with every pair (``top=k * k``), so the rate at
        which other faces go to the same class can be counted.
    separation : pandas.DataFrame, optional
        :func:`separability`.
    shares : pandas.DataFrame, optional
        :func:`lime_region_shares` (its ``attrs["n"]`` gives the faces behind each class's row).
    min_correlation, min_confusion, min_lift, min_share, min_gap : float
    min_support : int, default :data:`MIN_SUPPORT`
    min_lime_faces : int, default :data:`MIN_LIME_FACES`
    alpha : float, default 0.05
        Significance level of the rank correlation.

    Returns
    -------
    pandas.DataFrame
        Rows ``labels``, ``few training samples``, ``confused with a neighbour``,
        ``evidence in one region``, ``separability``; columns ``evidence`` (a sentence with
        the numbers, their n and intervals) and ``supported`` (``yes``/``partly``/``no``/``n/a``).

    Example
    -------
    >>> print(assess_guesses(report, pairs, separation, shares).to_string())  # doctest: +SKIP
    """
    import pandas as pd
    from scipy.stats import spearmanr

    func = "assess_guesses"
    _check_report(report, func)
    if not isinstance(pairs, pd.DataFrame) or any(c not in pairs for c in ("true", "predicted", "count", "rate")):
        raise ValueError(f"The 'pairs' parameter of {_name(func)} must be a DataFrame with columns "
                         f"['true', 'predicted', 'count', 'rate']. Got {type(pairs).__name__} instead.")
    min_support = _int(min_support, "min_support", func)
    min_lime_faces = _int(min_lime_faces, "min_lime_faces", func)
    alpha = _real(alpha, "alpha", func, 0.0, 1.0, low_open=True)
    f1 = report["f1"]
    mean = float(f1.mean())
    judged = report[report["support"] >= min_support]
    few = _too_few(report, min_support)
    above = [c for c in judged.sort_values("f1", ascending=False).index if judged.loc[c, "f1_low"] > mean]
    below = [c for c in judged.sort_values("f1").index if judged.loc[c, "f1_high"] < mean]
    level = [c for c in judged.sort_values("f1", ascending=False).index if c not in above and c not in below]
    parts = [f"F1 above the mean {mean:.2f} (95 % interval above it): "
             f"{', '.join(_f1_text(report, c) for c in above) or 'none'}",
             f"below it: {', '.join(_f1_text(report, c) for c in below) or 'none'}"]
    if level:
        parts.append(f"not distinguishable from the mean: {', '.join(_f1_text(report, c) for c in level)}")
    if few:
        parts.append(f"too few faces (n < {min_support}) to tell: {few}")
    rows = {"labels": ("; ".join(parts) + ".", "")}
    guesses = ("few training samples", "confused with a neighbour", "evidence in one region", "separability")

    if len(judged) < 2:
        reason = f"Fewer than two classes have {min_support} faces or more: no easy and hard class to explain."
        rows.update({g: (reason, "n/a") for g in guesses})
        return _verdict_table(rows)
    best, worst = judged["f1"].idxmax(), judged["f1"].idxmin()
    if judged.loc[worst, "f1_high"] >= judged.loc[best, "f1_low"]:
        reason = (f"The 95 % F1 intervals of the best class, {_f1_text(report, best)}, and the worst, "
                  f"{_f1_text(report, worst)}, overlap: no hard class to explain.")
        rows.update({g: (reason, "n/a") for g in guesses})
        return _verdict_table(rows)

    column = "train_support" if "train_support" in report else "support"
    counts = report[column]
    x, y = counts.to_numpy(float), report["recall"].to_numpy(float)
    rho, p = (float("nan"), float("nan")) if np.ptp(x) == 0 or np.ptp(y) == 0 else spearmanr(x, y)
    rank = int((counts < counts[worst]).sum()) + 1  # 1 = the rarest
    share = counts[worst] / counts.sum() if counts.sum() else float("nan")
    correlated = bool(np.isfinite(rho) and rho >= min_correlation and p < alpha)
    rho_text = "undefined (count or recall constant)" if not np.isfinite(rho) else (
        f"{rho:.2f} (p = {p:.2f} over {len(counts)} classes{'' if p < alpha else ', not significant'})")
    rows["few training samples"] = (
        f"{worst} has {int(counts[worst])} {'training ' if column == 'train_support' else ''}faces "
        f"({100 * share:.1f} %, rank {rank} of {len(counts)} from the rarest); Spearman rho(count, recall) = "
        f"{rho_text}.",
        _verdict(correlated and rank <= 2, correlated or rank <= 2))

    mine = pairs[pairs["true"] == worst]
    neighbour = None
    if len(mine):
        top = mine.iloc[0]
        neighbour = top["predicted"]
        position = int(np.flatnonzero(pairs.index == top.name)[0]) + 1
        # How often faces of the other classes are predicted as the neighbour too.
        drawn = pairs.loc[(pairs["true"] != worst) & (pairs["predicted"] == neighbour), "count"].sum()
        drawn += report.loc[neighbour, "recall"] * report.loc[neighbour, "support"]
        others = report["support"].sum() - report.loc[worst, "support"]
        base = drawn / others if others else float("nan")
        n_worst = int(report.loc[worst, "support"])
        low, high = wilson(top["rate"] * n_worst, n_worst)
        lift = top["rate"] / base if base > 0 else float("nan")
        lift_text = f"{lift:.1f}x" if np.isfinite(lift) else "against none of"
        clear = bool(np.isfinite(base) and low > base)
        rows["confused with a neighbour"] = (
            f"{100 * top['rate']:.1f} % of {worst} faces are predicted {neighbour} (pair #{position} by rate; "
            f"95 % interval {100 * low:.1f}-{100 * high:.1f} %, n = {n_worst}), {lift_text} the {100 * base:.1f} % "
            f"of other faces predicted {neighbour}"
            f"{'' if clear else '; the interval does not lie above it'}.",
            _verdict(clear and top["rate"] >= min_confusion and lift >= min_lift,
                     clear and top["rate"] >= min_confusion / 2))
    else:
        rows["confused with a neighbour"] = (f"No {worst} face is misclassified among the pairs given.", "no")

    if shares is not None and best in shares.index and worst in shares.index:
        n_lime = {k: int(v) for k, v in dict(getattr(shares, "attrs", {}).get("n", {})).items()}
        n_best, n_worst = n_lime.get(best), n_lime.get(worst)
        regions = [c for c in shares.columns if c != "n"]
        empty = any(shares.loc[c, regions].isna().all() for c in (best, worst))  # every map of the class degenerate
        if n_best is None or n_worst is None or min(n_best, n_worst) < min_lime_faces or empty:
            given = "not given" if n_best is None or n_worst is None else f"{best} n = {n_best}, {worst} n = {n_worst}"
            rows["evidence in one region"] = (
                f"Too few LIME-explained faces to tell ({given}; at least {min_lime_faces} per class needed).", "n/a")
        else:
            top_best, top_worst = shares.loc[best, regions].idxmax(), shares.loc[worst, regions].idxmax()
            s_best, s_worst = shares.loc[best, top_best], shares.loc[worst, top_worst]
            rows["evidence in one region"] = (
                f"{best}: {100 * s_best:.0f} % of the positive LIME weight on the {top_best} (n = {n_best}); {worst}: "
                f"{100 * s_worst:.0f} % on the {top_worst} (n = {n_worst}).",
                _verdict(s_best >= min_share and s_best > s_worst, s_best > s_worst))
    else:
        rows["evidence in one region"] = ("No LIME region shares for both classes.", "n/a")

    if separation is not None and best in separation.index and worst in separation.index:
        kb, kw = separation.loc[best, "knn_recall"], separation.loc[worst, "knn_recall"]
        nb = int(separation.loc[best, "n"]) if "n" in separation else int(report.loc[best, "support"])
        nw = int(separation.loc[worst, "n"]) if "n" in separation else int(report.loc[worst, "support"])
        (bl, bh), (wl, wh) = wilson(kb * nb, nb), wilson(kw * nw, nw)
        nearest = separation.loc[worst, "nearest_class"] or "none"
        same = " (the class it is confused with)" if nearest == neighbour else ""
        apart = bool(wh < bl)
        rows["separability"] = (
            f"kNN recall in feature space: {best} {kb:.2f} [{bl:.2f}, {bh:.2f}] (n = {nb}), {worst} {kw:.2f} "
            f"[{wl:.2f}, {wh:.2f}] (n = {nw}){'' if apart else ', intervals overlap'}; silhouette {best} "
            f"{separation.loc[best, 'silhouette']:.2f}, {worst} {separation.loc[worst, 'silhouette']:.2f}; "
            f"{worst}'s nearest class: {nearest}{same}.",
            _verdict(apart and kb - kw >= min_gap, apart))
    else:
        rows["separability"] = ("No separability table for both classes.", "n/a")
    return _verdict_table(rows)


def _verdict_table(rows):
    import pandas as pd

    table = pd.DataFrame.from_dict(rows, orient="index", columns=["evidence", "supported"])
    table.index.name = "guess"
    return table


def format_verdict(table):
    """The verdict of :func:`assess_guesses` as text, one guess per paragraph.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`assess_guesses`.

    Returns
    -------
    str

    Example
    -------
    >>> print(format_verdict(assess_guesses(report, pairs)))  # doctest: +SKIP
    """
    import textwrap

    if not hasattr(table, "iterrows") or any(c not in table for c in ("evidence", "supported")):
        raise ValueError("The 'table' parameter of fervis.labels.format_verdict must be the DataFrame of "
                         f"fervis.labels.assess_guesses. Got {type(table).__name__} instead.")
    parts = []
    for guess, row in table.iterrows():
        head = f"{guess}: " if not row["supported"] else f"{guess} - supported: {row['supported']}. "
        parts.append(textwrap.fill(head + row["evidence"], width=96, subsequent_indent="    "))
    return "\n".join(parts)
