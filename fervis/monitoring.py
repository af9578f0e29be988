"""Watching a CNN learn: Keras callbacks for live curves, TensorBoard and explanation drift.

Three callbacks, usable in any Keras 3 ``model.fit`` (TensorFlow backend) and in
:func:`fervis.training.fit` (``callbacks=``), plus readers for what they leave on disk:

* :class:`Monitor` measures once per epoch what the others show: per-class recall and the
  confusion matrix on validation faces, the learning rate, the saliency maps of a fixed set
  of probe faces (one per emotion, explained for its true label), how far each map moved
  since the previous epoch (Spearman rank correlation, the similarity measure of Adebayo et
  al., "Sanity Checks for Saliency Maps", NeurIPS 2018) and the share of each map's mass on
  each face region. With ``log_dir`` it keeps all of it on disk (``monitoring.csv``, one
  ``probe_maps/epoch_NNNN.npz`` per epoch), so a killed run resumed with ``resume=True``
  continues as one run.
* :class:`LiveCurves` redraws loss, accuracy, per-class recall and the drift in one output
  area of the notebook after every epoch, marks the best epoch and flags overfitting.
* :class:`TensorBoardWriter` writes scalars, weight and gradient histograms per layer, the
  confusion matrix and the probe maps as images, as TensorBoard event files.

Saliency maps are the vanilla gradient (Simonyan, Vedaldi & Zisserman, "Deep Inside
Convolutional Networks", 2014) of the pre-softmax class score, or SmoothGrad (Smilkov et al.,
2017). Every gradient is taken inside one batched ``tf.function``: TF 2.21's oneDNN kernels
corrupt the heap on *eager* input gradients through some convolutions, and the visualizers of
``tf_keras_vis`` run their tape eagerly, so they are not called here.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pathlib
import shutil
import tempfile
import warnings

import keras
import numpy as np
import pandas as pd

from fervis import models, regions
from fervis._checks import image_model, is_dataset, labelled_arrays, positive_int, real, require_dataset
from fervis.constants import BUDGETS, CLASS_NAMES, IMAGE_SIZE, OVERFIT_MIN_RISE
from fervis.files import write_atomic
from fervis.stats import shown, wilson

__all__ = [
    "Probes", "probe_set", "spearman",
    "overfitting", "OVERFIT_MIN_RISE", "best_epoch", "summarize",
    "Monitor", "LiveCurves", "TensorBoardWriter", "callbacks",
    "history", "epoch_table", "ProbeHistory", "probe_maps", "region_focus", "event_tags", "run_dir",
    "tensorboard_command",
    "TrainingPlan", "training_plan", "enable_determinism",
]

HISTORY = "monitoring.csv"
META = "monitoring.json"
PROBES = "probes.npz"
MAPS_DIR = "probe_maps"
TB_DIR = os.path.join("tb", "monitor")


# --------------------------------------------------------------------------- small helpers


def _check_writable(path, func, param="log_dir"):
    """Create ``path`` and prove a file can be written there, or raise a clear ValueError."""
    path = pathlib.Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".fervis-write-test-"):
            pass
    except OSError as err:
        raise ValueError(
            f"The {param!r} parameter of {func} must be a directory fervis can write to. "
            f"Got {str(path)!r} instead ({err.strerror or err})."
        ) from None
    return path


_OTHER_FILES = "other files"


def _describe_run(path):
    """A short description of the monitored or trained run in ``path``, or None when empty."""
    path = pathlib.Path(path)
    parts = []
    csv_path = path / HISTORY
    if csv_path.exists():
        try:
            epochs = pd.read_csv(csv_path)["epoch"]
            parts.append(f"monitored epochs {int(epochs.min()) + 1}-{int(epochs.max()) + 1}")
        except (ValueError, KeyError, pd.errors.EmptyDataError):
            parts.append("a monitoring history")
    if (path / "checkpoint.keras").exists():
        parts.append("a training checkpoint")
    tb = path / TB_DIR
    if tb.is_dir() and any(p.name.startswith("events.out.tfevents") for p in tb.iterdir()):
        parts.append("TensorBoard events")
    if (path / META).exists() and not parts:
        parts.append("monitoring files")
    if not parts and path.is_dir() and any(path.iterdir()):
        return _OTHER_FILES
    return ", ".join(parts) or None


def _check_modes(overwrite, resume, func):
    if overwrite and resume:
        raise ValueError(
            f"The 'overwrite' and 'resume' parameters of {func} exclude each other. Got both True."
        )


# --------------------------------------------------------------------------- probes


@dataclasses.dataclass(frozen=True, repr=False)
class Probes:
    """A fixed set of faces whose explanations are followed through training.

    Attributes
    ----------
    images : ndarray uint8 ``(k, 48, 48)``
    labels : ndarray int64 ``(k,)``
        The true class of each face; its map explains that class.
    regions : ndarray int ``(k, 48, 48)``
        Face-region id of each pixel (ground truth for synthetic faces, else a template).
    region_names : tuple of str
    class_names : tuple of str
    """

    images: np.ndarray
    labels: np.ndarray
    regions: np.ndarray
    region_names: tuple
    class_names: tuple = CLASS_NAMES

    @property
    def names(self):
        """The class name of each probe, in order."""
        return [self.class_names[i] for i in self.labels]

    def __len__(self):
        return len(self.labels)

    def __repr__(self):
        return f"Probes({len(self)} faces: {', '.join(self.names)}; regions {list(self.region_names)})"


def probe_set(dataset, seed=0):
    """One face per emotion present in ``dataset``, with the face regions of each.

    Parameters
    ----------
    dataset : fervis.data.Dataset
        Labelled faces, e.g. the validation split. Synthetic datasets carry ground-truth
        regions; for others the registered-face template is used.
    seed : int, default 0
        Which face of each class is drawn.

    Returns
    -------
    Probes

    Example
    -------
    >>> from fervis import data
    >>> probes = probe_set(data.load("synthetic").subset("PublicTest"))
    >>> probes.names
    ['angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral']
    """
    func = "fervis.monitoring.probe_set"
    require_dataset(dataset, func)
    labels = np.asarray(dataset.labels)
    present = [c for c in range(len(dataset.class_names)) if (labels == c).any()]
    if not present:
        raise ValueError(
            f"The 'dataset' parameter of {func} must hold labelled faces. "
            f"Got {len(labels)} faces and none with a label."
        )
    rng = np.random.default_rng(seed)
    idx = np.array([rng.choice(np.flatnonzero(labels == c)) for c in present])
    maps = regions.for_dataset(dataset)[idx].astype(np.int64)
    return Probes(np.asarray(dataset.images)[idx].copy(), labels[idx].astype(np.int64), maps,
                  regions.names_for(dataset), tuple(dataset.class_names))


# --------------------------------------------------------------------------- compute


def _check_model(model, func):
    """Any image classifier :func:`fervis.saliency.explain` takes, on the TensorFlow backend."""
    image_model(model, func)
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"{func} needs the TensorFlow backend of Keras (gradients run in a tf.function). "
            f"Got backend {keras.backend.backend()!r} instead."
        )


def _check_method(method, func):
    from fervis import saliency

    if method not in saliency.METHODS:
        raise ValueError(f"The 'method' parameter of {func} must be one of {list(saliency.METHODS)}. "
                         f"Got {method!r} instead.")


def _explainer(model, method):
    """A callable ``(images, class_idx) -> (n, h, w)`` maps scaled to a maximum of 1:
    :func:`fervis.saliency.explain` (one cached graph per model, live weights)."""
    from fervis import saliency

    def explain(images, class_idx):
        return saliency.explain(model, images, method=method, class_idx=class_idx, normalize=True)

    return explain


def spearman(a, b):
    """Spearman rank correlation between each map of ``a`` and the map of ``b`` at its index.

    :func:`fervis.saliency.spearman`, the package's one rank correlation of maps.

    Parameters
    ----------
    a, b : array ``(n, h, w)``

    Returns
    -------
    ndarray float64 ``(n,)``
        In [-1, 1]; NaN where a map is constant or not finite.

    Example
    -------
    >>> spearman(np.arange(8.0).reshape(1, 2, 4), np.arange(8.0).reshape(1, 2, 4) ** 2)
    array([1.])
    """
    from fervis import saliency

    return saliency.spearman(a, b)


def _check_history(history, func):
    if not isinstance(history, pd.DataFrame):
        raise ValueError(
            f"The 'history' parameter of {func} must be a pandas DataFrame with one row per epoch. "
            f"Got {type(history).__name__} instead."
        )


def overfitting(history, patience=3, min_rise=OVERFIT_MIN_RISE):
    """Epochs where validation loss has risen ``patience`` epochs in a row, to well above its
    best so far, while training loss fell.

    Parameters
    ----------
    history : pandas.DataFrame
        One row per epoch with ``loss`` and ``val_loss``.
    patience : int, default 3
    min_rise : float, default :data:`OVERFIT_MIN_RISE` (0.1)
        The rise that counts: ``val_loss[t]`` must exceed the lowest validation loss of epochs
        ``0..t`` by this fraction of it, so that a local rise of a few percent (the noise of a
        run that is still improving) is not called overfitting.

    Returns
    -------
    ndarray bool ``(len(history),)``
        True at epoch ``t`` when ``val_loss`` rose at each of the epochs ``t-patience+1..t``,
        ``val_loss[t] > (1 + min_rise) * min(val_loss[:t + 1])`` and
        ``loss[t] < loss[t-patience]``; all False without validation loss.

    Example
    -------
    >>> h = pd.DataFrame({"loss": [3, 2, 1, 0.5], "val_loss": [2, 1, 1.5, 2]})
    >>> overfitting(h, patience=2).tolist()
    [False, False, False, True]
    """
    func = "fervis.monitoring.overfitting"
    _check_history(history, func)
    patience = positive_int(patience, "patience", func)
    min_rise = real(min_rise, "min_rise", func, 0.0)
    flags = np.zeros(len(history), bool)
    if "val_loss" not in history or "loss" not in history:
        return flags
    val = history["val_loss"].to_numpy(dtype=float)
    train = history["loss"].to_numpy(dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # leading NaN epochs: no best yet
        best = np.fmin.accumulate(val) if len(val) else val
    for t in range(patience, len(history)):
        rising = all(val[t - i] > val[t - i - 1] for i in range(patience))
        flags[t] = rising and val[t] > (1.0 + min_rise) * best[t] and train[t] < train[t - patience]
    return flags


def best_epoch(history, monitor="val_loss"):
    """The row index of the best epoch: lowest loss, or highest accuracy or recall.

    Parameters
    ----------
    history : pandas.DataFrame
    monitor : str, default "val_loss"
        A column of ``history``; names containing "loss" are minimised, others maximised.

    Returns
    -------
    int or None
        None when the column holds no number yet.

    Example
    -------
    >>> best_epoch(pd.DataFrame({"val_loss": [2.0, 1.0, 1.5]}))
    1
    """
    func = "fervis.monitoring.best_epoch"
    _check_history(history, func)
    if monitor not in history:
        raise ValueError(
            f"The 'monitor' parameter of {func} must be a column of the history, one of {list(history.columns)}. "
            f"Got {monitor!r} instead."
        )
    values = history[monitor].to_numpy(dtype=float)
    if np.isnan(values).all():
        return None
    return int(np.nanargmin(values) if "loss" in monitor else np.nanargmax(values))


def _check_n_val(history, n_val):
    """An accuracy over n faces is a whole number of faces over n: a clear error where a
    ``val_accuracy`` of the history cannot be one over ``n_val`` (n_val then counts other faces)."""
    if "val_accuracy" not in history:
        return
    accuracy = history["val_accuracy"].to_numpy(dtype=float)
    faces = accuracy * n_val
    # Keras logs float32: a count over n comes back off by up to n x 6e-8 faces (half a unit in the last place)
    off = np.flatnonzero(np.isfinite(faces) & (np.abs(faces - np.round(faces)) > max(0.01, 2e-7 * n_val)))
    if len(off):
        i = int(off[0])
        raise ValueError(
            f"The 'n_val' parameter of fervis.monitoring.summarize must be the number of validation faces behind "
            f"the history's val_accuracy; got {n_val}, but epoch {int(_epochs_from_one(history)[i])}'s "
            f"val_accuracy {accuracy[i]:.6g} x {n_val} = {faces[i]:.2f} is not a whole number of faces."
        )


def summarize(history, patience=3, recall_threshold=0.5, settled_threshold=0.8, n_val=None):
    """What a run's history says, as numbers: best epoch, overfitting, learning order, drift.

    Parameters
    ----------
    history : pandas.DataFrame
        As written by :class:`Monitor` (see :func:`history`).
    patience : int, default 3
        For :func:`overfitting`.
    recall_threshold : float, default 0.5
        A class counts as learned from the first epoch its validation recall and precision both
        reach this (recall alone for a history written before the Monitor kept precision): a
        model that calls most faces "sad" has sad's recall at once, not its precision.
    settled_threshold : float, default 0.8
        Explanations count as settled from the epoch after which the mean Spearman drift
        stays at or above this.
    n_val : int, optional
        The validation faces behind ``val_accuracy`` (``len(plan.validation)``): the best epoch's
        accuracy then carries its n and 95 % Wilson interval (``best["val_accuracy_low"]``,
        ``best["val_accuracy_high"]``, ``best["n_val"]``). Refused where an epoch's accuracy
        times ``n_val`` is not a whole number of faces.

    Returns
    -------
    dict
        ``best_epoch`` (1-based), ``best`` (the best row's ``val_loss`` and ``val_accuracy``, with
        ``n_val``: its interval),
        ``overfitting_from`` (1-based epoch or None), ``learned_at`` (class -> 1-based epoch or
        None), ``settled_at`` (1-based epoch or None), ``top_regions`` (region -> share at the
        last epoch, largest three).

    Example
    -------
    >>> summarize(history(run))["best_epoch"]  # doctest: +SKIP
    6
    """
    _check_history(history, "fervis.monitoring.summarize")
    history = history.reset_index(drop=True)
    if n_val is not None:
        n_val = positive_int(n_val, "n_val", "fervis.monitoring.summarize")
        _check_n_val(history, n_val)
    epochs = _epochs_from_one(history)
    monitor = "val_loss" if "val_loss" in history else "loss"
    best = best_epoch(history, monitor) if monitor in history else None
    flags = overfitting(history, patience)
    learned = {}
    for column in [c for c in history.columns if c.startswith("val_recall_")]:
        name = column[len("val_recall_"):]
        reached = history[column].to_numpy(dtype=float) >= recall_threshold
        if f"val_precision_{name}" in history:
            reached &= history[f"val_precision_{name}"].to_numpy(dtype=float) >= recall_threshold
        hits = np.flatnonzero(reached)
        learned[name] = int(epochs[hits[0]]) if len(hits) else None
    settled = None
    if "drift_mean" in history:
        drift = history["drift_mean"].to_numpy(dtype=float)
        ok = ~(drift < settled_threshold)  # NaN (the first epoch) does not count against
        below = np.flatnonzero(~ok)
        start = 0 if len(below) == 0 else below[-1] + 1
        if start < len(drift) and np.isfinite(drift[start:]).any():
            settled = int(epochs[start])
    shares = {c[len("share_"):]: float(history[c].iloc[-1]) for c in history.columns if c.startswith("share_")}
    top = dict(sorted(shares.items(), key=lambda kv: -np.nan_to_num(kv[1]))[:3])
    row = history.iloc[best] if best is not None else None
    numbers = {} if row is None else {k: float(row[k]) for k in ("val_loss", "val_accuracy", "loss", "accuracy")
                                      if k in row}
    if n_val is not None and np.isfinite(numbers.get("val_accuracy", np.nan)):
        low, high = wilson(numbers["val_accuracy"] * n_val, n_val)
        numbers.update(val_accuracy_low=low, val_accuracy_high=high, n_val=n_val)
    return {
        "best_epoch": None if best is None else int(epochs[best]),
        "best": numbers,
        "overfitting_from": int(epochs[np.flatnonzero(flags)[0]]) if flags.any() else None,
        "learned_at": learned,
        "settled_at": settled,
        "top_regions": top,
    }


# --------------------------------------------------------------------------- the monitor


class Monitor(keras.callbacks.Callback):
    """Per-epoch measurements that the live curves and TensorBoard show, kept on disk.

    After every epoch: the epoch's logs (loss, accuracy, ``val_*``), the learning rate,
    per-class recall and precision (``val_recall_<class>``, ``val_precision_<class>``; NaN for a
    class never predicted) with the number of faces predicted as the class behind each precision
    (``val_predicted_<class>``; a class's faces behind its recall do not change between epochs)
    and balanced accuracy on ``validation``, the
    confusion matrix, the probe faces' saliency maps, their Spearman rank correlation with
    the previous epoch's maps (``drift_<class>``, ``drift_mean``; NaN at the first epoch),
    the mean share of the maps on each face region (``share_<region>``) and the overfitting
    flag. The values are also added to the epoch's ``logs``, for callbacks that run later.

    Parameters
    ----------
    validation : Dataset or tuple (images, labels)
        Labelled faces for recall and the confusion matrix.
    probes : Probes, optional
        Defaults to :func:`probe_set` of ``validation`` (a Dataset).
    log_dir : str or os.PathLike, optional
        Where ``monitoring.csv``, ``monitoring.json``, ``probes.npz`` and
        ``probe_maps/epoch_NNNN.npz`` go. Without it, everything stays in memory.
    method : {"gradient", "smoothgrad"}, default "gradient"
    patience : int, default 3
        For the overfitting flag (:func:`overfitting`).
    overwrite : bool, default False
        Replace a monitored run already in ``log_dir``.
    resume : bool, default False
        Continue the monitored run in ``log_dir``: the first epoch trained keeps the rows
        and maps of the epochs before it and drops those after.
    batch_size : int, default 256

    Attributes
    ----------
    history : pandas.DataFrame
        One row per monitored epoch (``epoch`` counts from 0, as in Keras).

    Example
    -------
    >>> monitor = Monitor(validation, log_dir="runs/a")  # doctest: +SKIP
    >>> model.fit(x, y, epochs=5, callbacks=[monitor])  # doctest: +SKIP
    >>> monitor.history[["epoch", "val_loss", "drift_mean"]]  # doctest: +SKIP
    """

    def __init__(self, validation, probes=None, log_dir=None, method="gradient", patience=3,
                 overwrite=False, resume=False, batch_size=256):
        super().__init__()
        func = "fervis.monitoring.Monitor"
        self.x, self.y = labelled_arrays(validation, func, "validation")
        if probes is None:
            if not is_dataset(validation):
                raise ValueError(
                    f"The 'probes' parameter of {func} is needed when 'validation' is a tuple of arrays "
                    "(fervis.monitoring.probe_set picks them from a Dataset). Got probes=None."
                )
            probes = probe_set(validation)
        if not isinstance(probes, Probes):
            raise ValueError(
                f"The 'probes' parameter of {func} must be a fervis.monitoring.Probes (see probe_set). "
                f"Got {type(probes).__name__} instead."
            )
        _check_method(method, func)
        _check_modes(overwrite, resume, func)
        overfitting(pd.DataFrame(), patience)  # validates patience
        self.probes, self.method, self.patience = probes, method, patience
        self.overwrite, self.resume, self.batch_size = overwrite, resume, batch_size
        self.class_names = tuple(probes.class_names)
        self.log_dir = None if log_dir is None else _check_writable(log_dir, func)
        if self.log_dir is not None and not (overwrite or resume):
            held = _describe_run_files(self.log_dir)
            if held:
                raise ValueError(
                    f"The 'log_dir' parameter of {func} names {str(self.log_dir)!r}, which already holds a "
                    f"monitored run ({held}); pass resume=True to continue it, overwrite=True to replace it, "
                    "or choose another log_dir."
                )
        self._rows, self._maps, self._shares, self._confusion = {}, {}, {}, {}
        self._started = False
        self._ready_for = None
        self._measured = None

    # --- Keras hooks ---------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._prepare()
        self._started = False  # the first epoch of this fit decides what is kept

    def on_epoch_begin(self, epoch, logs=None):
        if not self._started:
            self._start_at(epoch)

    def on_epoch_end(self, epoch, logs=None):
        self.measure(epoch, logs)

    # --- state ---------------------------------------------------------------------
    def _prepare(self):
        if self._ready_for is self.model:
            return
        _check_model(self.model, "fervis.monitoring.Monitor")
        expected = tuple(self.model.input_shape[1:])
        if tuple(self.x.shape[1:]) != expected:
            raise ValueError(
                f"The 'validation' parameter of fervis.monitoring.Monitor must hold images shaped (n,) + "
                f"{expected} for model {self.model.name!r}. Got {tuple(self.x.shape)} instead."
            )
        k = self.model.output_shape[-1]
        if self.y.max() >= k or self.probes.labels.max() >= k:
            raise ValueError(
                f"The 'validation' parameter of fervis.monitoring.Monitor has labels up to "
                f"{int(max(self.y.max(), self.probes.labels.max()))}, but model {self.model.name!r} "
                f"outputs {k} classes."
            )
        model = self.model
        self._predict = models.forward_graph(model)  # the one traced forward pass, live weights
        self._saliency = _explainer(model, self.method)
        self._ready_for = model
        if self.log_dir is not None:
            self._open_log_dir()
        self._started = False

    def _meta(self):
        return {
            "class_names": list(self.class_names),
            "probe_labels": self.probes.labels.tolist(),
            "region_names": list(self.probes.region_names),
            "num_validation": int(len(self.y)),
            "num_classes": int(self.model.output_shape[-1]),
            "method": self.method,
        }

    def _open_log_dir(self):
        log_dir = self.log_dir
        meta_path = log_dir / META
        if self.overwrite and not getattr(self, "_cleared", False):
            for name in (HISTORY, META, PROBES):
                (log_dir / name).unlink(missing_ok=True)
            shutil.rmtree(log_dir / MAPS_DIR, ignore_errors=True)
            self._cleared = True
        meta = self._meta()
        if meta_path.exists() and not self._rows:
            saved = json.loads(meta_path.read_text())
            changed = sorted(k for k in meta if saved.get(k) != meta[k])
            if changed:
                raise ValueError(
                    f"The 'log_dir' parameter of fervis.monitoring.Monitor names {str(log_dir)!r}, which holds "
                    f"another run: its {changed} differ (saved {[saved.get(k) for k in changed]}, now "
                    f"{[meta[k] for k in changed]}). Choose another log_dir, or pass overwrite=True to replace it."
                )
        (log_dir / MAPS_DIR).mkdir(exist_ok=True)
        write_atomic(meta_path, json.dumps(meta, indent=1))
        buffer = io.BytesIO()
        np.savez_compressed(buffer, images=self.probes.images, labels=self.probes.labels,
                            regions=self.probes.regions.astype(np.uint8),
                            region_names=np.array(self.probes.region_names),
                            class_names=np.array(self.class_names))
        write_atomic(log_dir / PROBES, buffer.getvalue())

    def _start_at(self, epoch):
        """Keep what was measured before ``epoch`` (from memory or, on resume, from disk)."""
        self._started = True
        if self.log_dir is not None and not self._rows:
            if self.resume:
                self._load(before=epoch)
            elif (self.log_dir / HISTORY).exists():
                (self.log_dir / HISTORY).unlink()
        for store in (self._rows, self._maps, self._shares, self._confusion):
            for e in [e for e in store if e >= epoch]:
                del store[e]
        if self.log_dir is not None:
            for path in (self.log_dir / MAPS_DIR).glob("epoch_*.npz"):
                if int(path.stem.split("_")[1]) >= epoch:
                    path.unlink()
            self._write_history()

    def _load(self, before):
        path = self.log_dir / HISTORY
        if path.exists():
            frame = pd.read_csv(path)
            for row in frame.to_dict("records"):
                if int(row["epoch"]) < before:
                    self._rows[int(row["epoch"])] = row
        for path in (self.log_dir / MAPS_DIR).glob("epoch_*.npz"):
            e = int(path.stem.split("_")[1])
            if e < before:
                with np.load(path) as f:
                    self._maps[e] = f["maps"].astype(np.float32)
                    self._shares[e] = f["shares"]
                    self._confusion[e] = f["confusion"]

    def _write_history(self):
        if self.log_dir is None:
            return
        frame = self.history
        if len(frame):
            write_atomic(self.log_dir / HISTORY, frame.to_csv(index=False))
        else:
            (self.log_dir / HISTORY).unlink(missing_ok=True)

    @property
    def history(self):
        """One row per monitored epoch, in order."""
        if not self._rows:
            return pd.DataFrame({"epoch": pd.Series([], dtype=int)})
        frame = pd.DataFrame([self._rows[e] for e in sorted(self._rows)])
        frame["epoch"] = frame["epoch"].astype(int)
        return frame

    def probe_maps(self):
        """The probe maps of every monitored epoch, as :func:`probe_maps` returns them."""
        epochs = sorted(self._maps)
        return _probe_history(epochs, self._maps, self._shares, self._confusion, self.probes)

    # --- one epoch -----------------------------------------------------------------
    def measure(self, epoch, logs=None):
        """Measure ``epoch`` once (later calls for the same epoch return the same row).

        Returns
        -------
        dict
            The epoch's row of :attr:`history`; its values are also added to ``logs``.
        """
        if self._measured == (epoch, id(logs)) and epoch in self._rows:
            return self._rows[epoch]
        self._prepare()
        if not self._started:
            self._start_at(epoch)
        k = self.model.output_shape[-1]
        row = {"epoch": int(epoch)}
        for key, value in (logs or {}).items():
            if np.ndim(value) == 0:
                try:
                    row[key] = float(value)
                except (TypeError, ValueError):
                    pass
        if "learning_rate" not in row:
            row["learning_rate"] = _learning_rate(self.model)
        probs = np.concatenate([np.asarray(self._predict(self.x[i:i + self.batch_size]))
                                for i in range(0, len(self.x), self.batch_size)])
        pred = probs.argmax(axis=1)
        cm = models.confusion_matrix(self.y, pred, k)  # the package's one confusion matrix
        recall, precision = models.class_recall(cm), models.class_precision(cm)  # NaN: no faces / never predicted
        names = list(self.class_names) + [str(i) for i in range(len(self.class_names), k)]
        for name, r, pr, n in zip(names, recall, precision, cm.sum(axis=0)):
            row[f"val_recall_{name}"] = float(r)
            row[f"val_precision_{name}"] = float(pr)
            row[f"val_predicted_{name}"] = int(n)  # the faces behind the precision
        row["val_balanced_accuracy"] = float(np.nanmean(recall))
        maps = self._saliency(self.probes.images, self.probes.labels)
        previous = self._maps.get(epoch - 1)
        drift = spearman(maps, previous) if previous is not None else np.full(len(maps), np.nan)
        for name, d in zip(self.probes.names, drift):
            row[f"drift_{name}"] = float(d)
        row["drift_mean"] = float(np.nanmean(drift)) if np.isfinite(drift).any() else float("nan")
        shares = regions.shares(maps, self.probes.regions, normalize=None, n_regions=len(self.probes.region_names))
        for name, s in zip(self.probes.region_names, np.nanmean(shares, axis=0)):
            row[f"share_{name}"] = float(s)
        self._maps[epoch], self._shares[epoch], self._confusion[epoch] = maps, shares, cm
        self._rows[epoch] = row
        row["overfitting"] = float(overfitting(self.history, self.patience)[-1]) if "val_loss" in row else 0.0
        if self.log_dir is not None:
            buffer = io.BytesIO()
            np.savez_compressed(buffer, maps=maps.astype(np.float16), shares=shares, confusion=cm)
            write_atomic(self.log_dir / MAPS_DIR / f"epoch_{epoch:04d}.npz", buffer.getvalue())
            self._write_history()
        if logs is not None:
            logs.update({key: value for key, value in row.items() if key != "epoch"})
        self._measured = (epoch, id(logs))
        return row


def _describe_run_files(path):
    """What a monitored run left in ``path`` (None when nothing)."""
    path = pathlib.Path(path)
    if not ((path / HISTORY).exists() or (path / META).exists() or (path / MAPS_DIR).is_dir()):
        return None
    return _describe_run(path) or "monitoring files"


def _learning_rate(model):
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return float("nan")
    try:
        return float(np.asarray(optimizer.learning_rate))
    except (TypeError, ValueError, AttributeError):
        return float("nan")


# --------------------------------------------------------------------------- post hoc


@dataclasses.dataclass(frozen=True)
class ProbeHistory:
    """The probe faces and their saliency maps at each monitored epoch.

    Attributes
    ----------
    epochs : ndarray int ``(e,)``
        Keras epoch numbers (from 0).
    maps : ndarray float32 ``(e, k, 48, 48)``
        Each map scaled to a maximum of 1.
    shares : ndarray ``(e, k, r)``
        Region shares of each map.
    confusion : ndarray int ``(e, c, c)``
        Validation confusion matrix (rows true class).
    probes : Probes
    """

    epochs: np.ndarray
    maps: np.ndarray
    shares: np.ndarray
    confusion: np.ndarray
    probes: Probes

    @property
    def drift(self):
        """Spearman correlation of each map with the previous epoch's, ``(e, k)``; NaN where that
        epoch was not monitored."""
        out = np.full(self.maps.shape[:2], np.nan)
        for i in range(1, len(self.epochs)):
            if self.epochs[i] == self.epochs[i - 1] + 1:
                out[i] = spearman(self.maps[i], self.maps[i - 1])
        return out


def _probe_history(epochs, maps, shares, confusion, probes):
    k, r, c = len(probes), len(probes.region_names), len(probes.class_names)
    return ProbeHistory(
        np.asarray(epochs, dtype=np.int64),
        np.stack([maps[e] for e in epochs]).astype(np.float32) if epochs else np.zeros((0, k, IMAGE_SIZE, IMAGE_SIZE)),
        np.stack([shares[e] for e in epochs]) if epochs else np.zeros((0, k, r)),
        np.stack([confusion[e] for e in epochs]) if epochs else np.zeros((0, c, c), np.int64),
        probes,
    )


def _log_dir_arg(log_dir, func):
    path = pathlib.Path(log_dir)
    if not (path / HISTORY).exists():
        raise ValueError(
            f"The 'log_dir' parameter of {func} must be a directory written by fervis.monitoring.Monitor "
            f"(holding {HISTORY}). Got {str(path)!r} instead."
        )
    return path


def history(log_dir):
    """The monitored history of a run, read from ``log_dir`` (or a :class:`Monitor`).

    Parameters
    ----------
    log_dir : str, os.PathLike or Monitor

    Returns
    -------
    pandas.DataFrame
        One row per epoch, sorted; ``epoch`` counts from 0. ``attrs["best_epoch"]`` (the row of the
        lowest ``val_loss``, or None) and ``attrs["overfitting"]`` (patience 1-10 -> :func:`overfitting`'s
        flags) are what :func:`fervis.plots.training_curves` draws when not given them.

    Example
    -------
    >>> history("runs/a")[["epoch", "val_accuracy"]]  # doctest: +SKIP
    """
    if isinstance(log_dir, Monitor):
        return _with_verdicts(log_dir.history)
    path = _log_dir_arg(log_dir, "fervis.monitoring.history")
    return _with_verdicts(pd.read_csv(path / HISTORY).sort_values("epoch").reset_index(drop=True))


#: The patience values for which :func:`history` stores overfitting flags in ``attrs``.
_STORED_PATIENCE = range(1, 11)


def _with_verdicts(frame):
    """``frame`` with what :func:`fervis.plots.training_curves` draws, computed here: ``attrs["best_epoch"]``
    (row of the lowest ``val_loss``, or None) and ``attrs["overfitting"]`` (patience -> flags per epoch)."""
    has_val = "val_loss" in frame and frame["val_loss"].notna().any()
    frame.attrs["best_epoch"] = best_epoch(frame, "val_loss") if has_val else None
    frame.attrs["overfitting"] = {p: overfitting(frame, p).tolist() for p in _STORED_PATIENCE}
    return frame


def epoch_table(history, columns=("loss", "val_loss", "accuracy", "val_accuracy", "learning_rate", "drift_mean"),
                decimals=3):
    """A history for reading: the chosen columns, indexed by epoch counted from 1, rounded.

    Parameters
    ----------
    history : pandas.DataFrame
        As returned by :func:`history`.
    columns : sequence of str
        Columns to keep; those missing from ``history`` are left out.
    decimals : int, default 3
        The learning rate keeps three more, since it is small.

    Returns
    -------
    pandas.DataFrame
        Numbers rounded; a value that does not exist (the drift of the first epoch, which has no
        epoch before it) is shown as "—", never as NaN.

    Example
    -------
    >>> table = epoch_table(pd.DataFrame({"epoch": [0, 1], "loss": [2.0, 1.23456]}))
    >>> table.index.tolist(), table["loss"].tolist()
    ([1, 2], [2.0, 1.235])
    """
    _check_history(history, "fervis.monitoring.epoch_table")
    kept = [c for c in columns if c in history]
    table = history[kept].copy()
    table.index = pd.Index(_epochs_from_one(history), name="epoch")
    return shown(table, {c: decimals + 3 if c == "learning_rate" else decimals for c in kept})


def _epochs_from_one(history):
    return (history["epoch"].to_numpy() + 1) if "epoch" in history else np.arange(1, len(history) + 1)


def probe_maps(log_dir):
    """The probe faces and their maps at every monitored epoch, from ``log_dir`` (or a Monitor).

    Parameters
    ----------
    log_dir : str, os.PathLike or Monitor

    Returns
    -------
    ProbeHistory

    Example
    -------
    >>> ph = probe_maps("runs/a")  # doctest: +SKIP
    >>> ph.maps.shape  # doctest: +SKIP
    (6, 7, 48, 48)
    """
    if isinstance(log_dir, Monitor):
        return log_dir.probe_maps()
    path = _log_dir_arg(log_dir, "fervis.monitoring.probe_maps")
    with np.load(path / PROBES) as f:
        probes = Probes(f["images"], f["labels"].astype(np.int64), f["regions"].astype(np.int64),
                        tuple(f["region_names"].tolist()), tuple(f["class_names"].tolist()))
    maps, shares, confusion = {}, {}, {}
    for file in sorted((path / MAPS_DIR).glob("epoch_*.npz")):
        e = int(file.stem.split("_")[1])
        with np.load(file) as f:
            maps[e], shares[e], confusion[e] = f["maps"].astype(np.float32), f["shares"], f["confusion"]
    return _probe_history(sorted(maps), maps, shares, confusion, probes)


def region_focus(probe_history):
    """How strongly the probe maps concentrate on each face region, epoch by epoch.

    The concentration of :func:`fervis.regions.shares` (``normalize="area"``): a region's share
    of a map's mass divided by its share of the face's area, so 1 is what a uniform map gives
    and 3 is three times that; averaged over the probe faces that have the region.

    Parameters
    ----------
    probe_history : ProbeHistory
        From :func:`probe_maps`.

    Returns
    -------
    pandas.DataFrame
        Index ``epoch`` (counted from 1), one column per region that some probe face has
        (a region absent from every probe, such as the synthetic occluder on FER2013, is left out).

    Example
    -------
    >>> region_focus(probe_maps(run)).iloc[-1].nlargest(3)  # doctest: +SKIP
    """
    if not isinstance(probe_history, ProbeHistory):
        raise ValueError(
            "The 'probe_history' parameter of fervis.monitoring.region_focus must be a ProbeHistory "
            f"(see fervis.monitoring.probe_maps). Got {type(probe_history).__name__} instead."
        )
    probes = probe_history.probes
    rows = []
    for maps in probe_history.maps:
        conc = regions.shares(maps, probes.regions, normalize="area", n_regions=len(probes.region_names))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a region absent from every probe: NaN
            rows.append(np.nanmean(conc, axis=0))
    index = pd.Index(np.asarray(probe_history.epochs) + 1, name="epoch")
    table = pd.DataFrame(np.reshape(rows, (len(index), len(probes.region_names))), index=index,
                         columns=list(probes.region_names))
    # A region no probe face has (the synthetic occluder on FER2013's template) is not shown.
    return table.loc[:, table.notna().any(axis=0)]


def event_tags(log_dir):
    """What a TensorBoard log directory holds: each tag, its kind and how many steps it has.

    Reads the event files with TensorFlow's own record reader, so it works without the
    tensorboard package.

    Parameters
    ----------
    log_dir : str or os.PathLike
        A directory of ``events.out.tfevents.*`` files (searched recursively).

    Returns
    -------
    pandas.DataFrame
        Columns ``run`` (sub-directory), ``tag``, ``kind`` (scalars, histograms, images...),
        ``steps`` (distinct steps), sorted.

    Example
    -------
    >>> event_tags("runs/a/tb").groupby("kind").size()  # doctest: +SKIP
    """
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    path = pathlib.Path(log_dir)
    if not path.is_dir():
        raise ValueError(
            f"The 'log_dir' parameter of fervis.monitoring.event_tags must be an existing directory. "
            f"Got {str(path)!r} instead."
        )
    found = {}
    for file in sorted(path.rglob("events.out.tfevents*")):
        run = str(file.parent.relative_to(path)).replace(os.sep, "/")
        kinds = {}
        for record in tf.data.TFRecordDataset(str(file)):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                kind = value.metadata.plugin_data.plugin_name or kinds.get(value.tag)
                if not kind:
                    kind = ("scalars" if value.HasField("simple_value") else "histograms" if value.HasField("histo")
                            else "images" if value.HasField("image") else "tensors")
                kinds[value.tag] = kind
                found.setdefault((run, value.tag, kind), set()).add(int(event.step))
    rows = [{"run": r, "tag": t, "kind": k, "steps": len(s)} for (r, t, k), s in found.items()]
    frame = pd.DataFrame(rows, columns=["run", "tag", "kind", "steps"])
    return frame.sort_values(["run", "kind", "tag"]).reset_index(drop=True)


# --------------------------------------------------------------------------- live curves


class LiveCurves(keras.callbacks.Callback):
    """Loss, accuracy, per-class recall and explanation drift, redrawn after every epoch in
    one notebook output area (an IPython display handle updated in place).

    The best epoch (lowest ``val_loss``) is marked and epochs flagged by :func:`overfitting`
    are shaded, with a note in the title.

    Parameters
    ----------
    monitor : Monitor, optional
        Shows its recall and drift too (measured when needed, so the order of the callbacks
        does not matter). Without it only the epoch logs are drawn.
    patience : int, default 3
        For the overfitting flag.
    display : bool, default True
        Show the figure when running in IPython; False only keeps :attr:`figure` updated.
    every : int, default 1
        Redraw every ``every`` epochs (and at the end).

    Attributes
    ----------
    figure : matplotlib.figure.Figure
    history : pandas.DataFrame
    flags : ndarray bool
        :func:`overfitting` of :attr:`history`.

    Example
    -------
    >>> model.fit(x, y, validation_data=(xv, yv), epochs=10, callbacks=[LiveCurves()])  # doctest: +SKIP
    """

    def __init__(self, monitor=None, patience=3, display=True, every=1):
        super().__init__()
        func = "fervis.monitoring.LiveCurves"
        if monitor is not None and not isinstance(monitor, Monitor):
            raise ValueError(
                f"The 'monitor' parameter of {func} must be a fervis.monitoring.Monitor or None. "
                f"Got {type(monitor).__name__} instead."
            )
        overfitting(pd.DataFrame(), patience)
        every = positive_int(every, "every", func)
        self.monitor, self.patience, self.display, self.every = monitor, patience, display, every
        self.figure, self._handle, self._rows, self.redraws = None, None, {}, 0

    @property
    def history(self):
        if self.monitor is not None:
            return self.monitor.history
        if not self._rows:
            return pd.DataFrame({"epoch": pd.Series([], dtype=int)})
        return pd.DataFrame([self._rows[e] for e in sorted(self._rows)])

    @property
    def flags(self):
        return overfitting(self.history, self.patience)

    def on_train_begin(self, logs=None):
        from matplotlib.figure import Figure

        if self.figure is None:
            # A Figure outside pyplot: the inline backend does not show it again at the cell's end.
            self.figure = Figure(figsize=(11, 6.2), dpi=72, layout="constrained")

    def on_epoch_begin(self, epoch, logs=None):
        if self.monitor is None:
            for e in [e for e in self._rows if e >= epoch]:
                del self._rows[e]

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor is not None:
            if self.monitor.model is None:
                self.monitor.set_model(self.model)
            self.monitor.measure(epoch, logs)
        else:
            row = {"epoch": int(epoch)}
            row.update({k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0})
            self._rows[epoch] = row
        if (epoch + 1) % self.every == 0:
            self.redraw()

    def on_train_end(self, logs=None):
        self.redraw()

    def redraw(self):
        """Draw the current history into :attr:`figure` and update the output area."""
        from fervis import plots

        if self.figure is None:
            self.on_train_begin()
        self.figure.clear()
        history = self.history
        has_val = "val_loss" in history and history["val_loss"].notna().any()
        plots.training_dashboard(history, fig=self.figure, patience=self.patience,
                                 best=best_epoch(history, "val_loss") if has_val else None,
                                 flags=overfitting(history, self.patience))
        self.redraws += 1
        if self.display:
            self._show()

    def _show(self):
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:  # pragma: no cover - IPython ships with the notebooks
            return
        if get_ipython() is None:
            return
        if self._handle is None:
            self._handle = display(self.figure, display_id=True)
        else:
            self._handle.update(self.figure)


# --------------------------------------------------------------------------- TensorBoard


def _metadata(plugin, data_class):
    from tensorflow.core.framework import summary_pb2

    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = plugin
    meta.data_class = data_class
    return meta


def _histogram(values, bins=30):
    """TensorBoard's histogram tensor: rows ``(left edge, right edge, count)``."""
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.zeros((0, 3))
    lo, hi = values.min(), values.max()
    if lo == hi:
        return np.array([[lo, hi, float(values.size)]])
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    return np.stack([edges[:-1], edges[1:], counts.astype(np.float64)], axis=1)


def _png(rgb):
    import tensorflow as tf

    return tf.io.encode_png(np.ascontiguousarray(rgb, dtype=np.uint8)).numpy()


def _probe_strip(images, maps, scale=2, alpha=0.5):
    """The probe faces side by side with their maps in ``jet`` over them: uint8 RGB."""
    import matplotlib

    cmap = matplotlib.colormaps["jet"]
    gray = np.asarray(images, dtype=np.float64)[..., None].repeat(3, axis=-1) / 255.0
    heat = cmap(np.clip(np.asarray(maps, dtype=np.float64), 0, 1))[..., :3]
    tiles = (1 - alpha) * gray + alpha * heat
    tiles = np.kron(tiles, np.ones((1, scale, scale, 1)))
    gap = np.ones((tiles.shape[1], 2, 3))
    parts = []
    for tile in tiles:
        parts += [tile, gap]
    return (np.concatenate(parts[:-1], axis=1) * 255).round().astype(np.uint8)


def _confusion_png(cm, class_names, title):
    """The confusion matrix drawn by :func:`fervis.plots.confusion_heatmap`: ``(png, width, height)``."""
    from matplotlib.figure import Figure

    from fervis import plots

    fig = Figure(figsize=(4.6, 4.2), dpi=72, layout="constrained")
    plots.confusion_heatmap(pd.DataFrame(cm, index=class_names, columns=class_names), ax=fig.subplots(), title=title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")  # a Figure of its own, never shown: not a plot function's savefig
    width, height = fig.canvas.get_width_height()
    return buffer.getvalue(), width, height


_SCALAR_TAGS = {
    "loss": "loss/train", "val_loss": "loss/validation",
    "accuracy": "accuracy/train", "val_accuracy": "accuracy/validation",
    "val_balanced_accuracy": "accuracy/validation_balanced",
    "learning_rate": "learning_rate", "drift_mean": "drift/mean", "overfitting": "overfitting",
}


def _scalar_tag(key):
    if key in _SCALAR_TAGS:
        return _SCALAR_TAGS[key]
    for prefix, group in (("val_recall_", "recall/"), ("val_precision_", "precision/"),
                          ("val_predicted_", "predicted/"), ("drift_", "drift/"), ("share_", "region_share/")):
        if key.startswith(prefix):
            return group + key[len(prefix):]
    return ("validation/" + key[4:]) if key.startswith("val_") else "train/" + key


class TensorBoardWriter(keras.callbacks.Callback):
    """TensorBoard event files: scalars, weight and gradient histograms, confusion matrix and
    probe maps, once per epoch (step = Keras epoch, from 0).

    Tags: ``loss/train``, ``loss/validation``, ``accuracy/...``, ``learning_rate``,
    ``recall/<class>``, ``precision/<class>``, ``predicted/<class>`` (the faces behind the precision),
    ``drift/<class>`` and ``drift/mean`` (from the second epoch),
    ``region_share/<region>``, ``overfitting`` (scalars); ``weights/<variable path>`` and
    ``gradients/<variable path>`` for every trainable variable (histograms; the gradients
    of the loss on a fixed batch of validation faces, taken in a ``tf.function``);
    ``confusion_matrix`` and ``probe_saliency`` (images). Written with ``tf.summary.write``
    and the TensorBoard plugin metadata, so the tensorboard package is needed only to view.

    Parameters
    ----------
    log_dir : str or os.PathLike
    monitor : Monitor
        Supplies the measurements (measured when needed, whatever the callback order).
    histograms : bool, default True
    images : bool, default True
    grad_batch : int, default 64
        Validation faces in the fixed batch for gradient histograms.
    overwrite, resume : bool, default False
        What to do when ``log_dir`` already holds event files: replace them, or add to them.

    Example
    -------
    >>> monitor = Monitor(validation, log_dir="runs/a")  # doctest: +SKIP
    >>> model.fit(..., callbacks=[monitor, TensorBoardWriter("runs/a/tb/monitor", monitor)])  # doctest: +SKIP
    """

    def __init__(self, log_dir, monitor, histograms=True, images=True, grad_batch=64, overwrite=False,
                 resume=False):
        super().__init__()
        func = "fervis.monitoring.TensorBoardWriter"
        if not isinstance(monitor, Monitor):
            raise ValueError(
                f"The 'monitor' parameter of {func} must be a fervis.monitoring.Monitor. "
                f"Got {type(monitor).__name__} instead."
            )
        grad_batch = positive_int(grad_batch, "grad_batch", func)
        _check_modes(overwrite, resume, func)
        self.log_dir = _check_writable(log_dir, func)
        events = sorted(self.log_dir.glob("events.out.tfevents*"))
        if events and not (overwrite or resume):
            raise ValueError(
                f"The 'log_dir' parameter of {func} names {str(self.log_dir)!r}, which already holds "
                f"{len(events)} TensorBoard event file(s) of another run; pass resume=True to add to them, "
                "overwrite=True to replace them, or choose another log_dir."
            )
        self.monitor, self.histograms, self.images, self.overwrite = monitor, histograms, images, overwrite
        self.grad_batch = grad_batch
        self._writer, self._grads = None, None

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        if self.overwrite:
            for path in self.log_dir.glob("events.out.tfevents*"):
                path.unlink()
            self.overwrite = False
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(self.log_dir))
        if self.monitor.model is None:
            self.monitor.set_model(self.model)
        if self.histograms:
            model = self.model
            x, y = _stratified_batch(self.monitor.x, self.monitor.y, self.grad_batch)
            k = model.output_shape[-1]
            self._batch = (tf.constant(x), tf.constant(keras.utils.to_categorical(y, k)))

            @tf.function
            def grads(images, onehot):
                with tf.GradientTape() as tape:
                    probs = model(images, training=False)
                    loss = tf.reduce_mean(keras.losses.categorical_crossentropy(onehot, probs))
                return tape.gradient(loss, model.trainable_variables)

            self._grads = grads

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        row = self.monitor.measure(epoch, logs)
        S = _summary_metadata()
        with self._writer.as_default(step=epoch):
            for key, value in row.items():
                if key == "epoch" or not np.isfinite(value):
                    continue
                tf.summary.write(_scalar_tag(key), tf.constant(value, tf.float32), metadata=S["scalar"])
            if self.histograms:
                variables = self.model.trainable_variables
                grads = self._grads(*self._batch)
                for variable, grad in zip(variables, grads):
                    name = variable.path.replace(":", "_")
                    tf.summary.write(f"weights/{name}", _histogram(np.asarray(variable)), metadata=S["histogram"])
                    if grad is not None:
                        tf.summary.write(f"gradients/{name}", _histogram(np.asarray(grad)),
                                         metadata=S["histogram"])
            if self.images:
                cm = self.monitor._confusion[epoch]
                names = list(self.monitor.class_names) + [str(i) for i in range(len(self.monitor.class_names),
                                                                               len(cm))]
                png, width, height = _confusion_png(cm, names, f"validation, epoch {epoch + 1}")
                self._image("confusion_matrix", png, width, height, S["image"])
                strip = _probe_strip(self.monitor.probes.images, self.monitor._maps[epoch])
                self._image("probe_saliency", _png(strip), strip.shape[1], strip.shape[0], S["image"])
        self._writer.flush()  # a killed run keeps every finished epoch

    def _image(self, tag, png, width, height, metadata):
        import tensorflow as tf

        tensor = tf.constant([str(width).encode(), str(height).encode(), png])
        tf.summary.write(tag, tensor, metadata=metadata)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()


def _summary_metadata():
    """Plugin metadata for scalars, histograms and images (TensorBoard's own plugin names)."""
    from tensorflow.core.framework import summary_pb2

    return {
        "scalar": _metadata("scalars", summary_pb2.DATA_CLASS_SCALAR),
        "histogram": _metadata("histograms", summary_pb2.DATA_CLASS_TENSOR),
        "image": _metadata("images", summary_pb2.DATA_CLASS_BLOB_SEQUENCE),
    }


def _stratified_batch(x, y, n):
    """Up to ``n`` faces, taking the classes in turn, so the gradient batch covers every class."""
    by_class = [np.flatnonzero(y == c) for c in np.unique(y)]
    picked, i = [], 0
    while len(picked) < min(n, len(y)):
        for idx in by_class:
            if i < len(idx) and len(picked) < n:
                picked.append(idx[i])
        i += 1
    picked = np.sort(np.array(picked, dtype=np.int64))
    return x[picked], y[picked]


# --------------------------------------------------------------------------- wiring


def callbacks(validation, probes=None, log_dir=None, live=True, tensorboard=None, patience=3,
              method="gradient", overwrite=False, resume=False):
    """The monitoring callbacks, wired together: ``[Monitor, TensorBoardWriter, LiveCurves]``.

    Parameters
    ----------
    validation : Dataset or tuple (images, labels)
    probes : Probes, optional
    log_dir : str or os.PathLike, optional
        The run directory (the ``out_dir`` of :func:`fervis.training.fit` fits well): the
        monitor writes there and TensorBoard events go to ``<log_dir>/tb/monitor``, beside the
        ``tb/train`` and ``tb/validation`` runs written by ``training.fit``.
    live : bool, default True
        Include :class:`LiveCurves`.
    tensorboard : bool, optional
        Include :class:`TensorBoardWriter`; default: when ``log_dir`` is given.
    patience : int, default 3
    method : {"gradient", "smoothgrad"}, default "gradient"
    overwrite, resume : bool, default False

    Returns
    -------
    list of keras.callbacks.Callback
        The :class:`Monitor` first.

    Example
    -------
    >>> cbs = callbacks(validation, log_dir="runs/a")  # doctest: +SKIP
    >>> model, history = training.fit(model, train, "quick", out_dir="runs/a", callbacks=cbs)  # doctest: +SKIP
    """
    if tensorboard is None:
        tensorboard = log_dir is not None
    if tensorboard and log_dir is None:
        raise ValueError(
            "The 'tensorboard' parameter of fervis.monitoring.callbacks needs a log_dir to write to. "
            "Got tensorboard=True and log_dir=None."
        )
    monitor = Monitor(validation, probes, log_dir=log_dir, method=method, patience=patience,
                      overwrite=overwrite, resume=resume)
    result = [monitor]
    if tensorboard:
        result.append(TensorBoardWriter(pathlib.Path(log_dir) / TB_DIR, monitor, overwrite=overwrite,
                                        resume=resume))
    if live:
        result.append(LiveCurves(monitor, patience=patience))
    return result


def run_dir(name, overwrite=False, resume=False, root=None):
    """A directory for one monitored training run, under ``$FERVIS_HOME/monitoring``.

    Parameters
    ----------
    name : str
        A plain directory name (letters, digits, ``-``, ``_``, ``.``).
    overwrite : bool, default False
        Delete a run already there (checkpoint, history, maps, events) and start afresh. A
        directory holding anything else is never deleted.
    resume : bool, default False
        Keep a run already there, to continue it (``training.fit(..., resume=True)``).
    root : str or os.PathLike, optional
        Instead of ``$FERVIS_HOME/monitoring``.

    Returns
    -------
    pathlib.Path

    Example
    -------
    >>> run = run_dir("04_training_monitoring", overwrite=True)  # doctest: +SKIP
    """
    import re

    from fervis import training

    func = "fervis.monitoring.run_dir"
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ValueError(
            f"The 'name' parameter of {func} must be a plain directory name (letters, digits, '.', '_', '-'). "
            f"Got {name!r} instead."
        )
    _check_modes(overwrite, resume, func)
    path = (pathlib.Path(root) if root is not None else training.fervis_home() / "monitoring") / name
    held = _describe_run(path) if path.is_dir() else None
    if held == _OTHER_FILES:  # never delete what fervis did not write
        raise ValueError(
            f"The 'name' parameter of {func} names {str(path)!r}, which holds files that are not a fervis run; "
            "choose another name."
        )
    if held and overwrite:
        shutil.rmtree(path)
    elif held and not resume:
        raise ValueError(
            f"The 'name' parameter of {func} names {str(path)!r}, which already holds a run ({held}); "
            "pass resume=True to continue it, overwrite=True to replace it, or choose another name."
        )
    return _check_writable(path, func, "name" if root is None else "root")


def tensorboard_command(log_dir):
    """The shell command that opens ``log_dir`` in TensorBoard, without machine-specific paths
    where possible (``$FERVIS_HOME/...`` or a path relative to the working directory).

    Example
    -------
    >>> tensorboard_command(run)  # doctest: +SKIP
    'tensorboard --logdir "$FERVIS_HOME/monitoring/04_training_monitoring/tb"'
    """
    from fervis import training

    path = pathlib.Path(log_dir).resolve()
    shown = path.as_posix()
    home = training.fervis_home().resolve()
    cwd, user = pathlib.Path.cwd().resolve(), pathlib.Path.home().resolve()
    if os.environ.get("FERVIS_HOME") and home in path.parents:
        shown = "$FERVIS_HOME/" + path.relative_to(home).as_posix()
    elif user in path.parents:
        shown = "~/" + path.relative_to(user).as_posix()
    elif cwd in path.parents:
        shown = path.relative_to(cwd).as_posix()
    return f'tensorboard --logdir "{shown}"'


# --------------------------------------------------------------------------- the notebook's run


@dataclasses.dataclass(frozen=True, repr=False)
class TrainingPlan:
    """What a monitored run trains: a fresh copy of the model, the faces and the recipe.

    Attributes
    ----------
    model : keras.Model
        Untrained, same architecture as the session's model (unless ``stands_in_for``).
    train, validation : fervis.data.Dataset
    recipe : fervis.recipes.Recipe
    probes : Probes
    stands_in_for : str or None
        The session model's name when the budget trains another architecture in its place (the
        quick budget on real faces); None when ``model`` is a fresh copy of it.
    """

    model: object
    train: object
    validation: object
    recipe: object
    probes: Probes
    stands_in_for: object = None

    def __repr__(self):
        weights = int(sum(np.prod(v.shape) for v in self.model.trainable_weights))
        instead = (f"; in place of the session's model {self.stands_in_for!r}, which budget 'full' trains a fresh "
                   f"copy of" if self.stands_in_for else "")
        return (f"TrainingPlan: model {self.model.name!r} ({weights:,} trainable weights, fresh{instead}), "
                f"{len(self.train)} training faces, {len(self.validation)} validation faces, "
                f"{self.recipe.epochs} epochs of batches of {self.recipe.batch_size} "
                f"({self.recipe.optimizer}, peak learning rate {self.recipe.learning_rate:g}); "
                f"probes: {', '.join(self.probes.names)}")


def training_plan(session, epochs=None, n_train=None, n_val=None, batch_size=None, recipe="quick", seed=0):
    """The run a notebook watches: the session's architecture, freshly initialised, trained on
    (a sample of) its data within the session's budget.

    On real faces (a dataset without synthetic regions, such as FER2013) the quick budget trains
    the ``small`` architecture instead, on 8,000 faces for 8 epochs of 64: a fresh copy of the
    shipped model stays at "always happy" for the quick budget's minutes (see
    :data:`fervis.constants.BUDGETS`, whose ``plan`` and ``plan_real`` give the defaults).

    Parameters
    ----------
    session : fervis.session.Session
    epochs, n_train, n_val, batch_size : int, optional
        Override the budget's defaults (quick: 6 epochs, 2400 training and 350 validation
        faces, batches of 32; quick on real faces: 8 epochs, 8000 and 350 faces, batches of 64;
        full: the recipe's epochs and batch size, every face).
    recipe : Recipe or str, default "quick"
    seed : int, default 0

    Returns
    -------
    TrainingPlan

    Example
    -------
    >>> plan = training_plan(fervis.session.prepare("synthetic"))  # doctest: +SKIP
    >>> model, hist = training.fit(plan.model, plan.train, plan.recipe, validation=plan.validation)  # doctest: +SKIP
    """
    from fervis import recipes

    func = "fervis.monitoring.training_plan"
    for param in ("dataset", "model", "evaluation", "budget"):
        if not hasattr(session, param):
            raise ValueError(
                f"The 'session' parameter of {func} must be a fervis.session.Session. "
                f"Got {type(session).__name__} instead."
            )
    if session.budget not in BUDGETS:
        raise ValueError(f"The session's budget must be one of {sorted(BUDGETS)}. Got {session.budget!r} instead.")
    real_faces = getattr(session.dataset, "regions", None) is None
    defaults = BUDGETS[session.budget]["plan_real" if real_faces else "plan"]
    recipe = recipes.get(recipe)
    settings = {}
    for param, value in (("epochs", epochs), ("n_train", n_train), ("n_val", n_val), ("batch_size", batch_size)):
        settings[param] = positive_int(value, param, func) if value is not None else defaults[param]
    recipe = recipe.replace(epochs=int(settings["epochs"] or recipe.epochs),
                            batch_size=int(settings["batch_size"] or recipe.batch_size), seed=seed)
    dataset = session.dataset
    splits = set(np.asarray(dataset.splits).tolist())
    if "Training" not in splits:
        raise ValueError(
            f"The session's dataset must have a 'Training' split to train on. Got splits {sorted(splits)} instead."
        )
    train = dataset.subset("Training")
    if settings["n_train"] and len(train) > settings["n_train"]:
        train = train.sample(int(settings["n_train"]), stratify=True, seed=seed)
    validation = session.evaluation
    if not validation.labeled:
        raise ValueError("The session's evaluation faces must be labelled to validate on. Got unlabelled faces.")
    if settings["n_val"] and len(validation) > settings["n_val"]:
        validation = validation.sample(int(settings["n_val"]), stratify=True, seed=seed)
    keras.utils.set_random_seed(seed)
    if defaults.get("architecture"):
        return TrainingPlan(models.build(defaults["architecture"], seed=seed), train, validation, recipe,
                            probe_set(validation, seed=seed), stands_in_for=session.model.name)
    try:
        model = keras.models.clone_model(session.model)  # same layers, new (seeded) weights
    except Exception as err:  # a subclassed model cannot be cloned from its config
        raise ValueError(
            f"The session's model {session.model.name!r} cannot be rebuilt untrained with "
            f"keras.models.clone_model ({err}); pass a functional or Sequential model."
        ) from None
    return TrainingPlan(model, train, validation, recipe, probe_set(validation, seed=seed))


def enable_determinism(seed=0):
    """Seed Python, NumPy and TensorFlow and make TensorFlow's ops deterministic, so a rerun of
    a notebook trains the same weights and prints the same numbers.

    Example
    -------
    >>> enable_determinism(0)  # doctest: +SKIP
    """
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
