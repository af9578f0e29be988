"""The checks of user input that several modules share: one behaviour each.

Every function takes ``func``, the full public name of the caller (``"fervis.saliency.explain"``),
so its ``ValueError`` names what was called, the parameter and what is allowed.
Question modules and ``widgets`` import these instead of each other's private helpers.
"""

from __future__ import annotations

import numpy as np

from fervis.constants import CLASS_NAMES, IMAGE_SIZE

__all__ = [
    "positive_int", "image_model", "images_for", "face_pixels", "faces_2d", "probabilities", "class_labels",
    "class_index", "class_indices", "default_names",
]


def positive_int(value, name, func):
    """``value`` as an int >= 1; ValueError naming ``name`` and ``func`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"The {name!r} parameter of {func} must be an int >= 1. Got {value!r} instead.")
    return int(value)


def image_model(model, func):
    """``(input_shape, num_classes)`` of any Keras image classifier (one 4-d input, one (n, classes) output)."""
    import keras

    if not isinstance(model, keras.Model):
        raise ValueError(f"The 'model' parameter of {func} must be a keras.Model. Got {model!r} instead.")
    shape = model.input_shape
    if isinstance(shape, list) or len(shape) != 4 or None in shape[1:]:
        raise ValueError(
            f"The 'model' parameter of {func} must take one image input shaped (n, height, width, channels). "
            f"Got model {model.name!r} with input shape {shape} instead."
        )
    out = model.output_shape
    if isinstance(out, list) or len(out) != 2:
        raise ValueError(
            f"The 'model' parameter of {func} must have one output shaped (n, classes). "
            f"Got model {model.name!r} with output shape {out} instead."
        )
    return tuple(shape[1:]), int(out[-1])


def images_for(images, input_shape, func, name="images"):
    """``images`` as float32 ``(n, h, w, c)``; raises a ValueError for anything else."""
    h, w, c = input_shape
    allowed = f"(n, {h}, {w}, {c})" + (f" or (n, {h}, {w})" if c == 1 else "")
    try:
        array = np.asarray(images)
    except Exception:
        array = None
    if array is None or array.dtype.kind not in "uif":
        kind = type(images).__name__ if array is None else f"dtype {array.dtype}"
        raise ValueError(
            f"The {name!r} parameter of {func} must be a numeric array (uint8, int or float pixels) "
            f"shaped {allowed}. Got {kind} instead."
        )
    given = array.shape
    if c == 1 and array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[1:] != (h, w, c):
        raise ValueError(
            f"The {name!r} parameter of {func} must be shaped {allowed} for this model. "
            f"Got shape {given} instead."
        )
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"The {name!r} parameter of {func} must hold finite pixel values. Got NaN or inf instead.")
    return array


def face_pixels(images, func, name="images"):
    """``images`` as float32 ``(n, 48, 48, 1)`` raw pixels; ValueError for anything else."""
    allowed = f"(n, {IMAGE_SIZE}, {IMAGE_SIZE}) or (n, {IMAGE_SIZE}, {IMAGE_SIZE}, 1)"
    array = np.asarray(getattr(images, "images", images))
    if array.dtype.kind not in "uif":
        raise ValueError(f"The {name!r} parameter of {func} must be numeric pixels shaped {allowed}. "
                         f"Got dtype {array.dtype} instead.")
    given = array.shape
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 1):
        raise ValueError(f"The {name!r} parameter of {func} must be shaped {allowed}. "
                         f"Got shape {given} instead.")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"The {name!r} parameter of {func} must hold finite pixel values. "
                         "Got NaN or inf instead.")
    return array


def faces_2d(images, func, name="images"):
    """Faces as ``(n, 48, 48)`` (dtype kept) from a Dataset or an array of 48x48 faces."""
    if hasattr(images, "images") and hasattr(images, "x"):
        images = images.images
    array = np.asarray(images)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or len(array) == 0:
        raise ValueError(
            f"The {name!r} parameter of {func} must be a fervis Dataset or faces shaped (n, 48, 48) or "
            f"(n, 48, 48, 1) with n >= 1. Got shape {array.shape} instead."
        )
    return array


def probabilities(probs, func, n=None):
    """Class probabilities as float64 ``(n, classes)``."""
    array = np.asarray(probs)
    if array.dtype.kind not in "uif" or array.ndim != 2 or array.shape[1] < 2 or (n is not None and len(array) != n):
        rows = "n" if n is None else n
        raise ValueError(f"The 'probs' parameter of {func} must be class probabilities shaped "
                         f"({rows}, classes). Got dtype {array.dtype} and shape {array.shape} instead.")
    return array.astype(np.float64)


def class_labels(y_true, n, num_classes, func, name="y_true"):
    """Class labels ``(n,)``; an unlabelled dataset (label -1) gets a message, not a traceback."""
    source = getattr(y_true, "source", None)
    array = np.asarray(getattr(y_true, "labels", y_true))
    if array.shape != (n,) or not (array.size == 0 or array.dtype.kind in "iu"):
        raise ValueError(f"The {name!r} parameter of {func} must be {n} integer class labels (one per "
                         f"row of probs) or a Dataset. Got dtype {array.dtype} and shape {array.shape} instead.")
    unlabelled = int((array < 0).sum()) if array.size else 0
    if unlabelled:
        where = f" of dataset {source!r}" if source else ""
        raise ValueError(
            f"{func} needs labelled faces, but {unlabelled} of {n} faces{where} are unlabelled "
            "(label -1, as in the course's test.csv). Predictions (fervis.saliency.predict) and "
            "fervis.labels.lime_explain work without labels; metrics do not."
        )
    if array.size and array.max() >= num_classes:
        raise ValueError(f"The {name!r} parameter of {func} must hold class indices in [0, {num_classes}). "
                         f"Got {int(array.max())} instead.")
    return array.astype(np.int64)


def class_index(class_idx, class_names=CLASS_NAMES):
    """The index of a class given by name (case-insensitive) or index.

    Parameters
    ----------
    class_idx : int or str
    class_names : sequence of str, default the 7 FER2013 classes

    Returns
    -------
    int

    Example
    -------
    >>> class_index("Disgust"), class_index(3)
    (1, 3)
    """
    names = [str(c).lower() for c in class_names]
    allowed = f"a class index in [0, {len(names)}) or a name in {tuple(class_names)}"
    if isinstance(class_idx, str) and class_idx.lower() in names:
        return names.index(class_idx.lower())
    if isinstance(class_idx, (int, np.integer)) and not isinstance(class_idx, (bool, np.bool_)) and (
            0 <= class_idx < len(names)):
        return int(class_idx)
    raise ValueError(f"The 'class_idx' parameter of fervis.labels.class_index must be {allowed}. "
                     f"Got {class_idx!r} instead.")


def class_indices(class_idx, n, func, class_names=CLASS_NAMES, name="class_idx"):
    """Per-image class indices ``(n,)`` from None (-1: the predicted class), one class or one per image."""
    k = len(class_names)
    allowed = (f"None (the predicted class), a class index in [0, {k}), a name in {tuple(class_names)}, "
               f"or a sequence of {n} of those (one per image)")
    if class_idx is None:
        return np.full(n, -1, np.int64)
    if isinstance(class_idx, (str, int, np.integer)) and not isinstance(class_idx, (bool, np.bool_)):
        try:
            return np.full(n, class_index(class_idx, class_names), np.int64)
        except ValueError:
            raise ValueError(f"The {name!r} parameter of {func} must be {allowed}. "
                             f"Got {class_idx!r} instead.") from None
    values = list(np.asarray(class_idx, dtype=object).ravel()) if np.ndim(class_idx) == 1 else None
    if values is None or len(values) != n:
        shape = np.shape(class_idx) if not isinstance(class_idx, (bool, np.bool_)) else class_idx
        raise ValueError(f"The {name!r} parameter of {func} must be {allowed}. Got {shape!r} instead.")
    out = np.empty(n, np.int64)
    for i, value in enumerate(values):
        try:
            out[i] = class_index(value.item() if isinstance(value, np.generic) else value, class_names)
        except ValueError:
            raise ValueError(f"The {name!r} parameter of {func} must be {allowed}. "
                             f"Got {value!r} at position {i} instead.") from None
    return out


def default_names(k):
    """The 7 FER2013 class names for a 7-class output, else the indices as strings."""
    return list(CLASS_NAMES) if k == len(CLASS_NAMES) else [str(c) for c in range(k)]
