"""Training with checkpoints, resume and one continuous history; a cache of trained models.

:func:`fit` trains a model with a :class:`fervis.recipes.Recipe` (augmentation, label
smoothing, learning-rate schedule and optimizer all come from the recipe). With ``out_dir``
it writes, after every epoch, one checkpoint file holding the training model's full state
(weights, optimizer state and so the position in the learning-rate schedule, the epoch
number and the history so far) atomically (:func:`fervis.files.write_atomic`), then
``history.csv`` from it, so a run killed at any moment loses at most one epoch and
``resume=True`` continues it with one continuous history. A run holds a lock on ``out_dir``:
a second run into it is refused while the first is alive. A recipe with a ``teacher`` trains by
distillation: the teacher's probabilities on the training faces are computed once, before the
first epoch, and kept in ``teacher.npz`` so a resumed run reads them instead. A recipe with
``mixup`` trains on batches blended on the data side (:class:`_MixUpBatches`), each epoch's
drawn from the recipe's seed and the epoch number, so a resumed run sees the batches an
uninterrupted one would have.

:func:`load_or_train` is what the notebooks call: it returns the model cached for a
dataset's fingerprint and a recipe, or trains and caches it. :func:`model_for` picks the
model for a dataset ("auto": the packaged FER2013 model for FER2013, else the cached quick
model). :func:`evaluate` reports accuracy, per-class recall and the confusion matrix.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import pathlib
import shutil
import time
import warnings
import zipfile

import keras
import numpy as np
import pandas as pd

from fervis import files, models, recipes, stats
from fervis._checks import (built_model, face_model, image_model, is_dataset, keras_model, labelled_arrays, positive_int,
                            require_dataset)
from fervis.constants import CLASS_NAMES
from fervis.files import write_atomic

__all__ = ["fit", "recalibrate_batchnorm", "run_recipe", "teacher_seconds", "load_or_train", "model_for", "check_model_spec", "evaluate", "cache_path", "fervis_home"]

CHECKPOINT = "checkpoint.keras"
HISTORY = "history.csv"
FINAL = "model.keras"
TEACHER = "teacher.npz"  # the teacher's probabilities on the training faces (recipes with a teacher)
_STATE = "fervis_state.json"  # stored inside the checkpoint archive, so the epoch travels with it


# --------------------------------------------------------------------------- inputs


def _training_part(data):
    """A Dataset's Training split when it has one beside other splits, else all of it."""
    if is_dataset(data):
        splits = set(np.asarray(data.splits).tolist())
        if "Training" in splits and len(splits) > 1:
            return data.subset("Training")
    return data


def _class_weights(y, num_classes):
    """Inverse class frequency, normalised so that the weighted sample count stays ``len(y)``."""
    counts = np.bincount(y, minlength=num_classes)
    present = np.flatnonzero(counts)
    return {int(c): float(len(y) / (len(present) * counts[c])) for c in present}


def _recipe_hash(recipe):
    # The architecture's numbers belong to the key too: a narrower "compact" is another model.
    text = json.dumps({**recipe.to_dict(), "arch_spec": models.spec(recipe.arch)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- checkpoints


def _seed_variables(model):
    return [v for v in model.variables if "seed_generator_state" in v.path]


def _write_checkpoint(train_model, out_dir, state):
    """Save the training model and ``state`` (which holds the history) as one file, atomically."""
    def write(tmp):
        train_model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(_STATE, json.dumps(state))

    write_atomic(out_dir / CHECKPOINT, write, suffix=".keras", what="checkpoint")  # Keras wants .keras


def _read_state(path):
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read(_STATE))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as err:
        raise ValueError(
            f"Cannot resume from checkpoint {str(path)!r}: it is damaged or not a fervis checkpoint ({err})."
        ) from None


def _state_recipe(state, path):
    return recipes.Recipe.from_dict(state.get("recipe"), what=f"recipe saved in checkpoint {str(path)!r}")


def run_recipe(out_dir):
    """The recipe a training run in ``out_dir`` (``fit(..., out_dir=...)``) was trained with.

    Read from the run's checkpoint, which holds it; fields added to :class:`fervis.recipes.Recipe`
    since the run started take their defaults.

    Returns
    -------
    fervis.recipes.Recipe

    Raises
    ------
    ValueError
        If ``out_dir`` holds no checkpoint or a damaged one.
    """
    path = pathlib.Path(out_dir) / CHECKPOINT
    if not path.exists():
        raise ValueError(f"{str(out_dir)!r} is not a fervis training run: it has no {CHECKPOINT}.")
    return _state_recipe(_read_state(path), path)


def _save_atomic(model, path):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, model.save, suffix=".keras", what="model")


def _legacy_history(path, epochs):
    """The rows of epochs ``< epochs`` of a history.csv written by fervis before the history went
    into the checkpoint (a row written after the last checkpoint would repeat)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return []
    header, kept = rows[0], []
    for row in rows[1:]:
        try:
            if len(row) == len(header) and int(row[0]) < epochs:
                kept.append({k: (int(v) if k == "epoch" else float(v) if v not in ("", "NA") else None)
                             for k, v in zip(header, row)})
        except ValueError:
            continue  # a line cut short by the kill
    return kept


def _write_history(path, rows):
    """history.csv from the history rows (dicts with ``epoch``), or no file when there are none.

    Columns: ``epoch``, then the metrics in sorted order (as Keras' CSVLogger wrote them), only
    those some epoch has (no empty ``val_*`` columns without validation).
    """
    if not rows:
        path.unlink(missing_ok=True)
        return
    keys = sorted({k for row in rows for k in row} - {"epoch"})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for row in rows:
        writer.writerow([row["epoch"], *("" if row.get(k) is None else row[k] for k in keys)])
    write_atomic(path, buffer.getvalue())


def _lock_holder(folder):
    """Who holds the flock on ``folder``: "process PID (its command line)" from /proc/locks, where
    Linux lists every lock with its process and the inode it is on; else "another process"."""
    try:
        inode = os.stat(folder).st_ino
        with open("/proc/locks") as f:
            for line in f:
                fields = line.split()  # "1: FLOCK  ADVISORY  WRITE 1234 00:2f:5678 0 EOF"
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
                    pid = fields[4]
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as cmd:
                            command = cmd.read(300).replace(b"\0", b" ").decode(errors="replace").strip()
                    except OSError:
                        command = ""
                    return f"process {pid}" + (f", {command[:120]}" if command else "")
    except OSError:
        pass
    return "another process"


@contextlib.contextmanager
def _run_lock(out, func):
    """Hold ``out`` for this process: a second run into the same folder is refused, naming this one.

    An ``flock`` on the folder itself (no lock file to leave behind), released by the system when
    the process ends, however it ends, so a killed run never leaves the folder locked.
    """
    try:
        import fcntl
    except ImportError:  # not on Windows; the rest of fervis works there without the lock
        yield
        return
    fd = os.open(out, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"The 'out_dir' parameter of {func} names {str(out)!r}, where another training run is "
                f"writing ({_lock_holder(out)}); wait for it to end, or choose another out_dir."
            ) from None
        # Temporary files a killed or failed run left behind (none is being written: we hold the lock).
        for pattern in (f".{CHECKPOINT}.*", f".{FINAL}.*", f".{HISTORY}.*", f".{TEACHER}.*", ".model.*.tmp.keras"):
            for stale in out.glob(pattern):
                stale.unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)


def _tensorboard_available():
    """TensorBoard logs need the TensorFlow backend and the tensorboard package (TF >= 2.20 no
    longer installs it)."""
    import importlib.util

    return keras.backend.backend() == "tensorflow" and importlib.util.find_spec("tensorboard") is not None


def _log_value(value):
    value = float(np.asarray(value))
    return value if math.isfinite(value) else None


class _Divergence(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or inf and remembers the epoch.

    Keras' ``TerminateOnNaN`` stops too, but says nothing to the caller; :func:`fit` raises
    a ValueError naming the epoch instead of returning (and saving) a model of NaN weights.
    """

    def __init__(self):
        super().__init__()
        self.epoch, self.current = None, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(np.asarray(loss))):
            self.epoch = self.current
            self.model.stop_training = True


class _Checkpoint(keras.callbacks.Callback):
    """After every epoch: the checkpoint, holding the history so far, then history.csv from it.

    The history travels inside the checkpoint, so a kill between the two writes leaves a
    checkpoint whose history is whole; resuming rewrites history.csv from it.
    """

    def __init__(self, train_model, core, out_dir, recipe, steps, rows):
        super().__init__()
        self.train_model, self.out_dir, self.recipe, self.steps = train_model, out_dir, recipe, steps
        self.weight_shapes = _weight_shapes(core)
        self.rows = list(rows)

    def on_epoch_end(self, epoch, logs=None):
        if not math.isfinite(float(np.asarray((logs or {}).get("loss", 0.0)))):
            return  # a diverged epoch: the checkpoint keeps the last good one (fit raises)
        rows = self.rows + [{"epoch": int(epoch), **{k: _log_value(v) for k, v in (logs or {}).items()}}]
        state = {
            "epoch": epoch + 1,
            "epochs": self.recipe.epochs,
            "steps_per_epoch": self.steps,
            "recipe": self.recipe.to_dict(),
            "weight_shapes": self.weight_shapes,
            "seed_states": [np.asarray(v).tolist() for v in _seed_variables(self.train_model)],
            "history": rows,
        }
        _write_checkpoint(self.train_model, self.out_dir, state)
        self.rows = rows
        _write_history(self.out_dir / HISTORY, rows)


def _weight_shapes(model):
    return [list(v.shape) for v in model.weights]


def _restore(train_model, core, path, state, steps):
    """Load weights and optimizer state; refuse a checkpoint of another model.

    Keras only warns when saved variables do not match, so the shapes are checked first and
    the optimizer's step count after.
    """
    if state.get("weight_shapes") != _weight_shapes(core):
        raise ValueError(
            f"Cannot resume from {str(path)!r}: it does not fit model {core.name!r} (its weights have "
            "other shapes; was it saved from another architecture?)."
        )
    train_model.optimizer.build(train_model.trainable_variables)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train_model.load_weights(path)
    except Exception as err:
        raise ValueError(f"Cannot resume from {str(path)!r}: it does not fit model {core.name!r} ({err}).") from None
    done = int(np.asarray(train_model.optimizer.iterations))
    if done != state["epoch"] * steps:
        raise ValueError(
            f"Cannot resume from {str(path)!r}: its optimizer state is at step {done}, expected "
            f"{state['epoch'] * steps} after epoch {state['epoch']}."
        )
    seeds = state.get("seed_states", [])
    variables = _seed_variables(train_model)
    if len(seeds) == len(variables):
        for variable, value in zip(variables, seeds):
            variable.assign(np.asarray(value, dtype=variable.dtype))


class _LearningRate(keras.callbacks.Callback):
    """Adds the scheduled learning rate to the epoch logs, so the history shows the schedule."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))


class _Progress(keras.callbacks.Callback):
    """One tqdm bar per epoch, over its batches, closed with the epoch's metrics."""

    def __init__(self, epochs, steps):
        super().__init__()
        self.epochs, self.steps, self.bar = epochs, steps, None

    def on_epoch_begin(self, epoch, logs=None):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}/{self.epochs}", unit="batch", leave=True)

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is not None:
            self.bar.update(1)

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in (logs or {}).items() if k != "learning_rate"})
            self.bar.close()
            self.bar = None


# --------------------------------------------------------------------------- batch-norm statistics


class _Recorded(Exception):
    """Raised by the recording batch-norm layer once it has its input: the rest of the forward
    pass is not needed."""


def recalibrate_batchnorm(model, images, batch_size=512, progress=True):
    """Recompute every batch-normalization layer's statistics on ``images``, in inference mode.

    During training a batch-norm layer's moving mean and variance follow the augmented images
    and the activations as dropout leaves them; at inference the images are clean and dropout
    is off, so the statistics no longer match what the layer sees (the "variance shift" of
    Li et al. 2019, "Understanding the Disharmony between Dropout and Batch Normalization").
    This sets each layer's statistics to the exact mean and variance of its input over
    ``images`` with the model in inference mode, layer by layer in graph order, so each layer
    sees the earlier layers already recalibrated. Nothing is learned and no label is used; on
    the shipped FER2013 model it is what took PublicTest from 66.0 % to 68.8 % without TTA.

    Parameters
    ----------
    model : keras.Model
        Changed in place; batch-norm layers inside nested models (ensemble members) included.
        A model without batch normalization is returned unchanged.
    images : array ``(n,) + model.input_shape[1:]`` (a missing channel axis is added)
        Typically the clean training images, in the units the model takes.
    batch_size : int
    progress : bool
        A tqdm bar over the layers' passes.

    Returns
    -------
    keras.Model
        ``model``.
    """
    func = "fervis.training.recalibrate_batchnorm"
    keras_model(model, func)
    x = np.asarray(images, dtype=np.float32)
    expected = tuple(model.input_shape[1:])
    if x.ndim == len(expected) and expected[-1] == 1:
        x = x[..., None]
    if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected or len(x) == 0:
        raise ValueError(
            f"The 'images' parameter of {func} must be images shaped (n,) + {expected}, n >= 1, to fit model "
            f"{model.name!r}. Got shape {tuple(x.shape)} instead."
        )
    batch_size = positive_int(batch_size, "batch_size", func)
    norms = [layer for _, layer in models.named_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    from tqdm.auto import tqdm

    bar = tqdm(total=len(norms) * math.ceil(len(x) / batch_size), desc="batch-norm statistics", unit="batch",
               disable=not progress)
    before = [(np.array(norm.moving_mean), np.array(norm.moving_variance)) for norm in norms]
    try:
        for norm in norms:
            _recalibrate_one(model, norm, x, batch_size, bar)
    except BaseException:  # interrupted: the model keeps the statistics it had, not half of the new ones
        for norm, (mean, variance) in zip(norms, before):
            norm.moving_mean.assign(mean)
            norm.moving_variance.assign(variance)
        raise
    finally:
        bar.close()
    return model


def _recalibrate_one(model, norm, x, batch_size, bar):
    """Set one batch-norm layer's statistics to its input's over ``x`` (see recalibrate_batchnorm)."""
    axes = [norm.axis] if isinstance(norm.axis, int) else list(norm.axis)
    total = total_sq = 0.0
    count = 0

    # Keras 3 has no forward hooks, so the layer's own call is swapped for one that records
    # its input and stops the pass there (the layers after it do not change its statistics).
    # Each batch's mean and (centred) variance come from the backend; batches are pooled in
    # float64 as sums of n * mean and n * (variance + mean^2).
    def record(inputs, *args, **kwargs):
        nonlocal total, total_sq, count
        kept = {ax % len(inputs.shape) for ax in axes}
        reduce = [ax for ax in range(len(inputs.shape)) if ax not in kept]
        mean, variance = (np.asarray(v, dtype=np.float64) for v in keras.ops.moments(
            keras.ops.cast(inputs, "float32"), axes=reduce))
        n = int(np.prod([inputs.shape[ax] for ax in reduce]))
        total, total_sq, count = total + n * mean, total_sq + n * (variance + mean * mean), count + n
        raise _Recorded

    norm.call = record
    try:
        for start in range(0, len(x), batch_size):
            try:
                model(x[start:start + batch_size], training=False)
            except _Recorded:
                pass
            bar.update(1)
    finally:
        del norm.call  # the class's own call again
    mean = total / count
    variance = np.maximum(total_sq / count - mean * mean, 0.0)
    norm.moving_mean.assign(mean.reshape(norm.moving_mean.shape).astype(norm.moving_mean.dtype))
    norm.moving_variance.assign(variance.reshape(norm.moving_variance.shape).astype(norm.moving_variance.dtype))


# --------------------------------------------------------------------------- distillation


def _faces_fingerprint(x):
    """A digest of the training faces (shape and pixels): the teacher's probabilities belong to them."""
    digest = hashlib.sha256(repr(x.shape).encode())
    digest.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


def _load_teacher(recipe, model):
    """The recipe's teacher, refused unless it takes ``model``'s input and outputs as many classes."""
    where = f"Recipe field 'teacher' of recipe {recipe.name!r} names {recipe.teacher!r}"
    try:
        teacher = models.resolve(recipe.teacher)
    except ValueError as err:
        raise ValueError(f"{where}, which fervis cannot load: {err}") from None
    expected_in, expected_out = tuple(model.input_shape[1:]), model.output_shape[-1]
    must_in = f"take the student {model.name!r}'s input (n,) + {expected_in}"
    must_out = f"output the student {model.name!r}'s {expected_out} class probabilities, shape (n, {expected_out})"
    try:  # the checking layer's image classifier: one 4-d image input, one (n, classes) output
        shape_in, classes = image_model(teacher, "fervis.training.fit")
    except ValueError:
        raise ValueError(
            f"{where}, a model with input shape {teacher.input_shape} and output shape {teacher.output_shape}; it "
            f"must {must_in} and {must_out}."
        ) from None
    if shape_in != expected_in:
        raise ValueError(f"{where}, a model with input shape {teacher.input_shape}; it must {must_in}.")
    if classes != expected_out:
        raise ValueError(f"{where}, a model with output shape {teacher.output_shape}; it must {must_out}.")
    return teacher


def _teacher_probabilities(teacher, x, tta, verbose, chunk=1024):
    """``teacher``'s probabilities ``(n, k)`` for ``x`` under test-time augmentation ``tta``, a chunk of
    faces at a time (ten-crop holds ten views of a chunk in memory, not of every face)."""
    from tqdm.auto import tqdm

    parts = []
    with tqdm(total=len(x), desc=f"teacher probabilities ({tta})", unit="face", disable=not verbose) as bar:
        for start in range(0, len(x), chunk):
            parts.append(recipes.predict(teacher, x[start:start + chunk], tta=tta))
            bar.update(len(parts[-1]))
    return np.concatenate(parts)


def _read_teacher(path):
    """The contents of a ``teacher.npz``, or None when it is damaged (it is then computed again).

    ``seconds`` (the time the teacher's pass took) is None in a file written before fervis recorded it.
    """
    try:
        with np.load(path, allow_pickle=False) as saved:
            content = {k: saved[k] if k == "probs" else str(saved[k]) for k in ("probs", "teacher", "tta", "faces")}
            content["seconds"] = float(saved["seconds"]) if "seconds" in saved.files else None
            return content
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def teacher_seconds(out_dir):
    """How long the teacher's pass of a distilled run took (once, before its first epoch).

    A distilled run's cost is its epochs plus this; ``scripts/ship_fer2013.py`` adds it to the card's
    wall time.

    Parameters
    ----------
    out_dir : str or Path
        The run's folder (``fit(..., out_dir=...)``).

    Returns
    -------
    float or None
        Seconds; None when the run has no ``teacher.npz`` (no teacher) or one written before fervis
        recorded the time.
    """
    path = pathlib.Path(out_dir) / TEACHER
    content = _read_teacher(path) if path.exists() else None
    return None if content is None else content["seconds"]


def _teacher_targets(model, x, recipe, out, resuming, verbose):
    """The teacher's probabilities ``(n, k)`` float32 on the training faces ``x``.

    Read from ``out/teacher.npz`` when it holds them for this teacher, TTA and faces; else computed
    with :func:`fervis.recipes.predict` under the recipe's ``tta`` and saved there. When resuming a
    run, a ``teacher.npz`` for another teacher, TTA or faces is refused: the run began with it.
    """
    key = {"teacher": recipe.teacher, "tta": recipe.tta, "faces": _faces_fingerprint(x)}
    path = None if out is None else out / TEACHER
    cached = _read_teacher(path) if path is not None and path.exists() else None
    if cached is not None:
        differ = [k for k in key if cached[k] != key[k]]
        if cached["probs"].shape != (len(x), model.output_shape[-1]):
            differ.append(f"the probabilities' shape {cached['probs'].shape}")
        if not differ:
            return cached["probs"].astype(np.float32)
        if resuming:
            raise ValueError(
                f"Cannot resume from {str(out / CHECKPOINT)!r}: the run's {str(path)!r} holds the probabilities of "
                f"teacher {cached['teacher']!r} under tta {cached['tta']!r} on faces {cached['faces']}, but the "
                f"recipe asks for teacher {recipe.teacher!r} under tta {recipe.tta!r} on faces {key['faces']} "
                f"(they differ in {', '.join(differ)})."
            )
    start = time.perf_counter()
    teacher = _load_teacher(recipe, model)
    probs = _teacher_probabilities(teacher, x, recipe.tta, verbose)
    seconds = time.perf_counter() - start
    if not (np.isfinite(probs).all() and (probs >= 0).all() and np.allclose(probs.sum(axis=1), 1.0, atol=1e-3)):
        raise ValueError(
            f"Recipe field 'teacher' of recipe {recipe.name!r} names {recipe.teacher!r}, whose outputs are not "
            "probabilities (rows of non-negative numbers summing to 1); the teacher must end in a softmax."
        )
    if path is not None:
        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, probs=probs, seconds=seconds, **key)

        write_atomic(path, write, suffix=".npz", what="teacher probabilities")
    return probs


def _targets(model, x, y, recipe, out=None, resuming=False, verbose=False):
    """The training targets ``(n, k)``: one-hot labels, mixed with the teacher's probabilities as
    ``(1 - distill) * one_hot + distill * teacher`` (float32) when the recipe has a teacher."""
    targets = keras.utils.to_categorical(y, model.output_shape[-1])  # as fit has always had them without one
    if recipe.teacher:
        soft = _teacher_targets(model, x, recipe, out, resuming, verbose)
        targets = ((1.0 - recipe.distill) * targets + recipe.distill * soft).astype(np.float32)
    return targets


# --------------------------------------------------------------------------- mixup


class _MixUpBatches(keras.utils.PyDataset):
    """The training batches of a recipe with ``mixup``: shuffled faces, each blended with a face of
    its batch drawn at random (now and then itself) with ``lam ~ Beta(alpha, alpha)`` per face, and
    their targets alike.

    Everything random is drawn from ``(seed, epoch, 0)`` (the order) and ``(seed, epoch, 1, batch)``
    (the blend), so a batch depends on nothing but its epoch and index: a resumed run sees what an
    uninterrupted one would have. :meth:`epoch_setter` tells it the epoch Keras is in.
    Not ``keras.layers.MixUp``: it mixes an ``{"images", "labels"}`` dict inside a graph, while the
    training model maps pixels to probabilities and ``fit`` feeds the targets beside them; blending
    NumPy batches here keeps the compiled model as it is, for any backend. ``weights`` (each face's
    class weight, or None) are blended with the same ``lam``: a blend of a rare and a common face
    weighs what its parts do, not what its larger part's class does (Keras's ``class_weight`` on soft
    targets).
    """

    def __init__(self, x, targets, batch_size, alpha, seed, weights=None):
        super().__init__(workers=1, use_multiprocessing=False)  # batches in order, one at a time
        self.x, self.targets = x, np.asarray(targets, dtype=np.float32)
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float32)
        self.batch_size, self.alpha, self.seed = batch_size, alpha, seed
        self.set_epoch(0)

    def set_epoch(self, epoch):
        self.epoch = int(epoch)
        self.order = np.random.default_rng([self.seed, self.epoch, 0]).permutation(len(self.x))

    def epoch_setter(self):
        """A callback that tells these batches each epoch Keras begins."""
        return keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: self.set_epoch(epoch))

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index):
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, self.epoch, 1, index])  # not the order's stream
        lam = rng.beta(self.alpha, self.alpha, size=len(rows)).astype(np.float32)
        partner = rng.permutation(len(rows))
        images, targets = np.asarray(self.x[rows], dtype=np.float32), self.targets[rows]
        weight = lam.reshape((-1,) + (1,) * (images.ndim - 1))
        images = weight * images + (1.0 - weight) * images[partner]
        targets = lam[:, None] * targets + (1.0 - lam[:, None]) * targets[partner]
        if self.weights is None:
            return images, targets
        weights = self.weights[rows]
        return images, targets, lam * weights + (1.0 - lam) * weights[partner]


# --------------------------------------------------------------------------- fit


def fit(model, dataset_or_arrays, recipe, out_dir=None, resume=False, validation=None, strategy=None,
        callbacks=(), verbose=True):
    """Train ``model`` with a recipe, optionally with per-epoch checkpoints and resume.

    Parameters
    ----------
    model : keras.Model
        Takes raw pixels and outputs softmax probabilities; trained in place.
    dataset_or_arrays : Dataset or tuple (images, labels)
        A Dataset trains on its ``Training`` split when it has other splits too.
        ``images`` ``(n, 48, 48)`` or ``(n, 48, 48, 1)`` 0-255, ``labels`` int ``(n,)``.
    recipe : Recipe or str
        A :class:`fervis.recipes.Recipe` or a name in ``fervis.recipes.RECIPES``. With a
        ``teacher``, the targets mix the labels with the teacher's probabilities on the clean
        training faces under the recipe's ``tta`` (see ``Recipe.distill``), computed before the
        first epoch (a tqdm bar when ``verbose``); validation keeps the labels alone.
    out_dir : str or os.PathLike, optional
        Where ``checkpoint.keras`` (every epoch), ``history.csv``, ``tb/`` (TensorBoard logs,
        with the TensorFlow backend when the tensorboard package is installed),
        ``teacher.npz`` (the teacher's probabilities, for a recipe with a teacher) and, at the
        end, ``model.keras`` go.
    resume : bool, default False
        Continue from ``out_dir``'s checkpoint (from scratch when there is none). The recipe
        must agree with the run's on every field that decides the epochs
        (:meth:`fervis.recipes.Recipe.training_fields`); its ``name``, ``recalibrate_bn`` and
        (without a teacher) ``tta`` may differ. The teacher's probabilities are read from
        ``teacher.npz``, not computed again. Resuming a finished run only repeats the steps
        after the last epoch.
    validation : Dataset, tuple (images, labels) or str, optional
        A str names a split of ``dataset_or_arrays``.
    strategy : tf.distribute.Strategy, optional
        Build and compile under ``strategy.scope()``; the trained weights are copied back
        into ``model``.
    callbacks : sequence of keras.callbacks.Callback
        Run after fervis's own (checkpoint, history, progress).
    verbose : bool, default True
        Show a tqdm bar per epoch.

    Returns
    -------
    model : keras.Model
        The trained, augmentation-free ``model``; with ``recipe.recalibrate_bn``, its batch-norm
        statistics recomputed on the clean training images (:func:`recalibrate_batchnorm`).
    history : pandas.DataFrame
        One row per epoch (``epoch``, ``loss``, ``accuracy``, ``learning_rate``, and
        ``val_*`` with validation); with ``out_dir``, the whole run across resumes.

    Example
    -------
    >>> model, history = fit(models.build("tiny"), dataset, "tiny", out_dir="runs/tiny")  # doctest: +SKIP
    >>> model, history = fit(models.build("tiny"), dataset, "tiny", out_dir="runs/tiny", resume=True)  # doctest: +SKIP
    """
    func = "fervis.training.fit"
    keras_model(model, func)
    recipe = recipes.get(recipe)
    x, y = labelled_arrays(_training_part(dataset_or_arrays), func, "dataset_or_arrays", model)
    if isinstance(validation, str):
        if not is_dataset(dataset_or_arrays):
            raise ValueError(
                f"The 'validation' parameter of {func} may name a split only when training on a Dataset. "
                f"Got {validation!r} with arrays instead."
            )
        validation = dataset_or_arrays.subset(validation)
    val = None if validation is None else labelled_arrays(validation, func, "validation", model)
    steps = max(1, math.ceil(len(x) / recipe.batch_size))

    out = None
    if out_dir is not None:
        if not isinstance(out_dir, (str, os.PathLike)) or os.fspath(out_dir) == "":
            raise ValueError(
                f"The 'out_dir' parameter of {func} must be a folder path (str or os.PathLike). Got "
                f"{out_dir!r} instead" + (" (an empty path; write '.' for the current folder)." if out_dir == "" else ".")
            )
        out = pathlib.Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
    elif resume:
        raise ValueError(f"The 'resume' parameter of {func} needs an out_dir to resume from. Got out_dir=None.")
    with _run_lock(out, func) if out is not None else contextlib.nullcontext():
        return _fit_run(model, x, y, val, recipe, out, resume, strategy, callbacks, verbose, steps, func)


def _fit_run(model, x, y, val, recipe, out, resume, strategy, callbacks, verbose, steps, func):
    """The body of :func:`fit` once its arguments are checked (and ``out`` is locked)."""
    num_classes = model.output_shape[-1]
    state = None
    if out is not None:
        if (out / CHECKPOINT).exists():
            if not resume:
                done = _read_state(out / CHECKPOINT).get("epoch", "?")
                raise ValueError(
                    f"The 'out_dir' parameter of {func} names {str(out)!r}, which already holds a checkpoint "
                    f"(epoch {done} of a run); pass resume=True to continue it, or choose another out_dir."
                )
            state = _read_state(out / CHECKPOINT)
            saved = _state_recipe(state, out / CHECKPOINT)
            changed = recipe.trains_unlike(saved)
            if changed:
                raise ValueError(
                    f"Cannot resume from {str(out / CHECKPOINT)!r}: it was trained with another recipe "
                    f"(fields {changed} differ: saved {[getattr(saved, k) for k in changed]}, "
                    f"now {[getattr(recipe, k) for k in changed]})."
                )
            if state.get("steps_per_epoch") != steps:
                raise ValueError(
                    f"Cannot resume from {str(out / CHECKPOINT)!r}: it was trained with "
                    f"{state.get('steps_per_epoch')} steps per epoch, this data gives {steps} "
                    "(the training data differ)."
                )
    initial_epoch = int(state["epoch"]) if state else 0
    # Before seeding, so that loading a teacher draws nothing from the generators training uses.
    targets = _targets(model, x, y, recipe, out, state is not None, verbose) if initial_epoch < recipe.epochs else None
    # Re-seeding with the epoch makes a resumed run repeatable as well.
    keras.utils.set_random_seed(recipe.seed + initial_epoch)

    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        if strategy is None:
            core = model
        else:  # variables must be created under the strategy's scope
            core = keras.models.clone_model(model)
            core.set_weights(model.get_weights())
        train_model = recipes.compile_for_training(core, recipe, steps)
        if state:
            _restore(train_model, core, out / CHECKPOINT, state, steps)
            seeds = state.get("seed_states", [])
            variables = _seed_variables(train_model)
            if len(seeds) == len(variables):
                for variable, value in zip(variables, seeds):
                    variable.assign(np.asarray(value, dtype=variable.dtype))

    divergence = _Divergence()
    cbs = [divergence, _LearningRate()]
    if out is not None:
        rows = state.get("history") if state else []
        if rows is None:  # a checkpoint of a fervis that kept the history in history.csv only
            rows = _legacy_history(out / HISTORY, initial_epoch)
        rows = [row for row in rows if row["epoch"] < initial_epoch]
        _write_history(out / HISTORY, rows)  # history.csv as the checkpoint has it
        cbs.append(_Checkpoint(train_model, core, out, recipe, steps, rows))
        if _tensorboard_available():
            cbs.append(keras.callbacks.TensorBoard(log_dir=str(out / "tb"), write_graph=False))
    if verbose:
        cbs.append(_Progress(recipe.epochs, steps))
    cbs.extend(callbacks)

    keras_history = None
    if initial_epoch < recipe.epochs:
        inputs, outputs, batch_size = x, targets, recipe.batch_size
        # Each face weighs its true label's class weight (not, as Keras's class_weight would, the
        # largest class of a target a teacher or mixup made soft).
        weights = None
        if recipe.class_weights:
            by_class = _class_weights(y, num_classes)
            weights = np.array([by_class[label] for label in y], dtype=np.float32)
        if recipe.mixup:
            inputs = _MixUpBatches(x, targets, recipe.batch_size, recipe.mixup, recipe.seed, weights)
            outputs, batch_size, weights = None, None, None  # the batches carry the blended weights
            cbs.insert(0, inputs.epoch_setter())
        keras_history = train_model.fit(
            inputs, outputs, batch_size=batch_size, epochs=recipe.epochs, initial_epoch=initial_epoch,
            validation_batch_size=recipe.batch_size,
            validation_data=None if val is None else (val[0], keras.utils.to_categorical(val[1], num_classes)),
            sample_weight=weights, callbacks=cbs, verbose=0, shuffle=not recipe.mixup,  # _MixUpBatches shuffles by itself
        )
    if divergence.epoch is not None:
        kept = (f" {str(out / CHECKPOINT)!r} still holds the {divergence.epoch} good epochs before it."
                if out is not None and divergence.epoch > 0 else "")
        raise ValueError(
            f"{func}: training diverged in epoch {divergence.epoch + 1} of {recipe.epochs}: the loss became NaN or "
            f"inf, so the weights are no longer numbers and nothing was saved.{kept} Train again with a lower "
            f"learning_rate (the recipe's is {recipe.learning_rate}), or check the faces for extreme pixel values."
        )
    if core is not model:
        model.set_weights(core.get_weights())
    if recipe.recalibrate_bn:  # also when resuming a finished run: it gives the same statistics again
        recalibrate_batchnorm(model, x, progress=verbose)
    if out is not None:
        _save_atomic(model, out / FINAL)
        history = pd.read_csv(out / HISTORY) if (out / HISTORY).exists() else pd.DataFrame({"epoch": []})
    else:
        history = pd.DataFrame(keras_history.history if keras_history else {})
        history.insert(0, "epoch", keras_history.epoch if keras_history else [])
    return model, history


# --------------------------------------------------------------------------- cache


def fervis_home():
    """The fervis cache directory, absolute: ``$FERVIS_HOME``, else the user's cache dir for fervis
    (see :func:`fervis.files.fervis_home`)."""
    return files.fervis_home()


def cache_path(dataset, recipe="quick"):
    """Where :func:`load_or_train` caches the model for ``dataset`` and ``recipe``.

    Returns
    -------
    pathlib.Path
        ``$FERVIS_HOME/models/<fingerprint[:16]>-<recipe hash>.keras``
    """
    recipe = recipes.get(recipe)
    return fervis_home() / "models" / f"{str(dataset.fingerprint)[:16]}-{_recipe_hash(recipe)}.keras"


def load_or_train(dataset, recipe="quick", progress=True):
    """The model trained on ``dataset`` with ``recipe``: from the cache, or trained and cached.

    Training uses the ``Training`` split and validates on ``PublicTest`` when it is there
    and labelled. An interrupted training run resumes from its last epoch on the next call.

    Parameters
    ----------
    dataset : Dataset
    recipe : Recipe or str, default "quick"
    progress : bool, default True
        Show a tqdm bar per epoch while training.

    Returns
    -------
    keras.Model

    Example
    -------
    >>> model = load_or_train(data.load("synthetic"))  # doctest: +SKIP
    """
    func = "fervis.training.load_or_train"
    require_dataset(dataset, func)
    recipe = recipes.get(recipe)
    num_classes = len(dataset.class_names)
    path = cache_path(dataset, recipe)
    if path.exists():
        try:
            return models.load(path, num_classes=num_classes)
        except ValueError:
            pass  # a damaged cache entry is rebuilt below
    splits = set(np.asarray(dataset.splits).tolist())
    if "Training" not in splits:
        raise ValueError(
            f"The 'dataset' parameter of {func} must have a 'Training' split to train on. "
            f"Got splits {sorted(splits)} instead."
        )
    validation = None
    if "PublicTest" in splits:
        public = dataset.subset("PublicTest")
        if (np.asarray(public.labels) >= 0).all():
            validation = public
    run_dir = fervis_home() / "runs" / path.stem
    model = models.build(recipe.arch, num_classes=num_classes, seed=recipe.seed)
    try:
        model, _ = fit(model, dataset.subset("Training"), recipe, out_dir=run_dir, resume=True,
                       validation=validation, verbose=progress)
    except ValueError as err:
        if "Cannot resume" not in str(err):
            raise
        shutil.rmtree(run_dir, ignore_errors=True)  # a stale run of older code: start again
        model = models.build(recipe.arch, num_classes=num_classes, seed=recipe.seed)
        model, _ = fit(model, dataset.subset("Training"), recipe, out_dir=run_dir, resume=True,
                       validation=validation, verbose=progress)
    _save_atomic(model, path)
    if (run_dir / HISTORY).exists():
        shutil.copyfile(run_dir / HISTORY, path.with_suffix(".csv"))
    shutil.rmtree(run_dir, ignore_errors=True)
    return model


def _is_fer2013(dataset):
    source = str(getattr(dataset, "source", ""))
    synthetic = source.startswith("synthetic") or getattr(dataset, "regions", None) is not None
    return not synthetic and tuple(dataset.class_names) == tuple(CLASS_NAMES)


def _is_packaged_synthetic(dataset):
    meta = models.pretrained_path("synthetic").with_suffix(".json")
    if not meta.exists() or not models.pretrained_path("synthetic").exists():
        return False
    return json.loads(meta.read_text()).get("fingerprint") == dataset.fingerprint


def model_for(dataset, model="auto"):
    """The model to explain for ``dataset``; the first cell of every notebook calls this.

    Parameters
    ----------
    dataset : Dataset
    model : "auto", "train", "train:<recipe>", keras.Model, path or "pretrained:<name>", default "auto"
        ``"auto"`` is the packaged FER2013 model when ``dataset`` is FER2013 and the model
        is installed, otherwise ``load_or_train(dataset, "quick")``. ``"train"`` retrains
        even then: ``load_or_train(dataset, "quick")`` (or the named recipe), cached.

    Returns
    -------
    keras.Model
        A fervis model (raw ``(n, 48, 48, 1)`` pixels, probabilities), or the user's model as it
        was saved, with ``len(dataset.class_names)`` outputs: :func:`fervis.contract.inspect`
        finds how it wants its faces and :func:`fervis.contract.apply` adapts it
        (:func:`fervis.session.prepare` does both).

    Example
    -------
    >>> model = model_for(data.load("synthetic"))  # doctest: +SKIP
    """
    func = "fervis.training.model_for"
    require_dataset(dataset, func)
    num_classes = len(dataset.class_names)
    if isinstance(model, str) and model == "auto":
        if _is_fer2013(dataset) and models.pretrained_path("fer2013").exists():
            return models.load_pretrained("fer2013", num_classes=num_classes)
        if _is_packaged_synthetic(dataset):
            # Same recipe, same faces: the packaged copy keeps notebook outputs repeatable.
            return models.load_pretrained("synthetic", num_classes=num_classes)
        return load_or_train(dataset, "quick")
    check_model_spec(model, func)
    if isinstance(model, str) and (model == "train" or model.startswith("train:")):
        return load_or_train(dataset, model.partition(":")[2] or "quick")
    # As given: fervis.contract.inspect finds how it wants its faces, fervis.contract.apply adapts it.
    return models.resolve(model, num_classes=num_classes)


def check_model_spec(model, func="fervis.training.check_model_spec", allow_model=True):
    """Check a notebook ``MODEL`` setting without loading or training anything.

    The one place the spec grammar lives: :func:`model_for` and :func:`fervis.report.run`
    (which must reject a bad spec before it starts four notebooks) both call it.

    Parameters
    ----------
    model : keras.Model, str or os.PathLike
        ``"auto"``, ``"train"``, ``"train:<recipe>"``, ``"pretrained:<name>"``, a keras.Model or
        an existing model file.
    func : str
        The public function named in the error message.
    allow_model : bool, default True
        Whether a ``keras.Model`` object is a valid spec (not for :func:`fervis.report.run`,
        whose notebooks take ``MODEL`` as text).

    Raises
    ------
    ValueError
        Anything else: an unknown recipe or pretrained name, a missing file, another type.

    Example
    -------
    >>> check_model_spec("train:fer2013")  # doctest: +SKIP
    """
    if allow_model and isinstance(model, keras.Model):
        built_model(model, func)  # one with inputs: an unbuilt Sequential model is refused here, plainly
        return
    spec = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
    kind, colon, name = (spec or "").partition(":")
    if spec in ("auto", "train"):
        return
    if colon and kind == "train":
        if name in recipes.RECIPES:
            return
        raise ValueError(
            f"The 'model' parameter of {func} names recipe {name!r} in {spec!r}; "
            f"recipes are {sorted(recipes.RECIPES)}."
        )
    if colon and kind == "pretrained":
        if name in models.PRETRAINED:
            return
        raise ValueError(
            f"The 'model' parameter of {func} names pretrained model {name!r} in {spec!r}; "
            f"pretrained models are {sorted(models.PRETRAINED)}."
        )
    if spec is not None and os.path.exists(os.path.expanduser(spec)):
        return
    raise ValueError(
        f"The 'model' parameter of {func} must be 'auto', 'train', 'train:<recipe>', 'pretrained:<name>', "
        f"{'a keras.Model ' if allow_model else ''}or an existing .keras/.h5 file. Got {model!r} instead"
        + (", a file that does not exist." if spec is not None else ".")
    )


# --------------------------------------------------------------------------- evaluation


def evaluate(model, dataset, split="PublicTest", tta="none", batch_size=256):
    """Accuracy, per-class recall and the confusion matrix of ``model`` on one split.

    Parameters
    ----------
    model : keras.Model
    dataset : Dataset
    split : str or None, default "PublicTest"
        ``None`` evaluates on every image.
    tta : {"none", "flip", "tencrop", "flip-rotate"}, default "none"
        Test-time augmentation (see :func:`fervis.recipes.predict`).
    batch_size : int, default 256

    Returns
    -------
    dict
        ``accuracy`` with its 95 % Wilson ``accuracy_interval``, ``balanced_accuracy`` (mean recall
        over classes present), ``recall`` (class name -> recall, NaN for a class without images),
        ``support`` (class name -> its faces, the n behind the recall), ``recall_interval``
        (class name -> 95 % Wilson interval; NaN, NaN without faces), ``confusion_matrix``
        (``(k, k)`` int array, rows true class, columns predicted), ``n``, ``split``,
        ``tta``, ``class_names``.

    Example
    -------
    >>> evaluate(model, dataset)["accuracy"]  # doctest: +SKIP
    0.71
    """
    func = "fervis.training.evaluate"
    face_model(model, func)
    require_dataset(dataset, func)
    if tta not in recipes.TTA:
        raise ValueError(f"The 'tta' parameter of {func} must be one of {list(recipes.TTA)}. Got {tta!r} instead.")
    class_names = list(dataset.class_names)
    k = len(class_names)
    if model.output_shape[-1] != k:
        raise ValueError(
            f"The 'model' parameter of {func} outputs {model.output_shape[-1]} classes, "
            f"but the data has {k} classes."
        )
    present = sorted(set(np.asarray(dataset.splits).tolist()))
    if split is not None and split not in present:
        raise ValueError(f"The 'split' parameter of {func} must be one of {present} or None. Got {split!r} instead.")
    subset = dataset if split is None else dataset.subset(split)
    y_true = np.asarray(subset.labels)
    if len(y_true) == 0:
        raise ValueError(
            f"Split {split!r} of dataset {getattr(dataset, 'source', '?')!r} holds no images to evaluate on."
        )
    if (y_true < 0).any():
        raise ValueError(
            f"Split {split!r} of dataset {getattr(dataset, 'source', '?')!r} is unlabelled "
            f"({int((y_true < 0).sum())} of {len(y_true)} images have label -1); evaluate needs labels."
        )
    probs = recipes.predict(model, subset.images, tta=tta, batch_size=batch_size)
    y_pred = probs.argmax(axis=1)
    cm = models.confusion_matrix(y_true, y_pred, k)
    recall = models.class_recall(cm)
    support = cm.sum(axis=1)
    hits = int((y_pred == y_true).sum())
    return {
        "split": split,
        "tta": tta,
        "n": int(len(y_true)),
        "accuracy": float((y_pred == y_true).mean()),
        "accuracy_interval": list(stats.wilson(hits, len(y_true))),
        "balanced_accuracy": float(np.nanmean(recall)),
        "recall": {name: float(r) for name, r in zip(class_names, recall)},
        "support": {name: int(n) for name, n in zip(class_names, support)},
        "recall_interval": {name: list(stats.wilson(int(cm[i, i]), int(support[i]))) for i, name in enumerate(class_names)},
        "confusion_matrix": cm,
        "class_names": class_names,
    }
