"""The checks of user input that several modules share: one behaviour each.

Every function takes ``func``, the full public name of the caller (``"fervis.saliency.explain"``),
so its ``ValueError`` names what was called, the parameter and what is allowed.
Question modules and ``widgets`` import these instead of each other's private helpers.
"""

from __future__ import annotations

import numbers
import os

import numpy as np

from fervis.constants import CLASS_NAMES, CLASS_ORDERS, IMAGE_SIZE, MODEL_INPUTS

__all__ = [
    "positive_int", "real", "max_steps", "MAX_STEPS_ENV", "keras_model", "built_model", "image_model", "face_model", "is_dataset",
    "require_dataset", "images_for", "face_pixels", "faces_2d", "labelled_arrays", "saliency_maps", "probabilities",
    "class_labels", "class_index", "class_indices", "default_names", "region_ids", "declared_input",
    "parse_class_order",
]

#: The environment variable that caps every iterative method's steps (tests and nbval set it).
MAX_STEPS_ENV = "FERVIS_MAX_STEPS"


def positive_int(value, name, func, low=1, high=None):
    """``value`` as an int in ``[low, high]`` (default: >= 1); ValueError naming ``name`` and ``func`` otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low or (
            high is not None and value > high):
        allowed = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"
        raise ValueError(f"The {name!r} parameter of {func} must be {allowed}. Got {value!r} instead.")
    return int(value)


def real(value, name, func, low=None, high=None, low_open=False, high_open=False):
    """``value`` as a finite float ``>= low`` (``> low`` when ``low_open``) and ``<= high`` (``< high``);
    ``low=None``: any finite number up to ``high``."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and bool(np.isfinite(value))
    ok = ok and (low is None or (value > low if low_open else value >= low)) and (
        high is None or (value < high if high_open else value <= high))
    if not ok:
        bounds = ([] if low is None else [f"{'>' if low_open else '>='} {low}"]) + (
            [] if high is None else [f"{'<' if high_open else '<='} {high}"])
        allowed = "a finite number" + (" " + " and ".join(bounds) if bounds else "")
        if low is not None:
            allowed = allowed.replace("a finite number", "a number")
        raise ValueError(f"The {name!r} parameter of {func} must be {allowed}. Got {value!r} instead.")
    return float(value)


def max_steps(value):
    """``value`` (an int >= 1, already checked) capped by ``$FERVIS_MAX_STEPS`` when that is set.

    Tests and nbval set the variable to keep iterative methods short (tf-keras-vis reads
    ``TF_KERAS_VIS_MAX_STEPS`` for the same reason); a value that is not an int >= 1 is an error,
    never ignored.
    """
    cap = os.environ.get(MAX_STEPS_ENV)
    if not cap:
        return int(value)
    try:
        limit = int(cap)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ValueError(f"The environment variable {MAX_STEPS_ENV} must be an int >= 1 (the most steps any "
                         f"iterative method runs). Got {cap!r} instead.")
    return min(int(value), limit)


def keras_model(model, func):
    """``model`` if it is a ``keras.Model``; a ValueError naming ``func`` otherwise."""
    import keras

    if not isinstance(model, keras.Model):
        raise ValueError(f"The 'model' parameter of {func} must be a keras.Model. Got {model!r} instead.")
    return model


def built_model(model, func):
    """``model`` if it is a ``keras.Model`` with defined inputs (what reading its input shape needs); a
    ValueError naming ``func`` and what to do otherwise, not Keras's AttributeError from deep inside."""
    keras_model(model, func)
    try:
        defined = bool(model.inputs)
    except (AttributeError, ValueError):  # Keras's own error for an unbuilt Sequential model
        defined = False
    if not defined:
        raise ValueError(
            f"The 'model' parameter of {func} must be a model with defined inputs. Got model {model.name!r}, which "
            "has none: a Sequential model built without keras.Input (start it with keras.Input(shape=...) or call "
            "it once on a batch of faces), or a subclassed model, whose layers fervis cannot follow (build the same "
            "layers as a functional or Sequential model with keras.Input, and load its weights)."
        )
    return model


def image_model(model, func):
    """``(input_shape, num_classes)`` of any Keras image classifier (one 4-d input, one (n, classes) output)."""
    built_model(model, func)
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


def face_model(model, func, classifier=True):
    """The number of classes of a model that takes raw faces ``(n, 48, 48, 1)`` (fervis' model contract).

    For the methods that only work on 48x48 grey faces (LIME's superpixels, activation
    maximisation, training); any other classifier is wrapped with ``fervis.models.adapt`` first.
    ``classifier=False`` accepts any output (a feature extractor) and returns None.
    """
    built_model(model, func)
    shape = model.input_shape
    if isinstance(shape, list) or tuple(shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE, 1):
        raise ValueError(
            f"The 'model' parameter of {func} must take raw faces shaped (n, 48, 48, 1). Got model "
            f"{model.name!r} with input shape {shape} instead; wrap it with fervis.models.adapt."
        )
    return image_model(model, func)[1] if classifier else None


def is_dataset(obj):
    """Whether ``obj`` is a fervis ``Dataset`` (or quacks like one)."""
    return all(hasattr(obj, a) for a in ("images", "labels", "splits", "subset", "x"))


def require_dataset(dataset, func, name="dataset"):
    """``dataset`` if it is a fervis Dataset; a ValueError naming ``name`` and ``func`` otherwise."""
    if not is_dataset(dataset):
        raise ValueError(
            f"The {name!r} parameter of {func} must be a fervis Dataset. Got {type(dataset).__name__} instead."
        )
    return dataset


def images_for(images, input_shape, func, name="images"):
    """``images`` (an array or a Dataset's faces) as float32 ``(n, h, w, c)``; a ValueError for anything else."""
    if is_dataset(images):
        images = images.images
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
    if is_dataset(images):
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


def labelled_arrays(data, func, param, model=None):
    """``(x, y)``: float32 ``(n, h, w, c)`` pixels and int64 labels from a Dataset or a tuple ``(images, labels)``.

    With ``model``, the images must fit its input and the labels its classes; messages name the
    dataset (or "the arrays") and the model.
    """
    if is_dataset(data):
        x, y = data.x(), np.asarray(data.labels)
        where = f"dataset {getattr(data, 'source', '?')!r}"
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = np.asarray(data[0], dtype=np.float32), np.asarray(data[1])
        if x.ndim == 3:
            x = x[..., None]
        where = "the arrays"
    else:
        raise ValueError(
            f"The {param!r} parameter of {func} must be a fervis Dataset or a tuple (images, labels). "
            f"Got {type(data).__name__} instead."
        )
    if model is not None:
        expected = tuple(model.input_shape[1:])
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"The {param!r} parameter of {func} must hold images shaped (n,) + {expected} to fit model "
                f"{model.name!r}. Got images of shape {tuple(x.shape)} instead."
            )
    elif x.ndim != 4:
        raise ValueError(
            f"The {param!r} parameter of {func} must hold images shaped (n, h, w) or (n, h, w, c). "
            f"Got images of shape {tuple(x.shape)} instead."
        )
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(
            f"The {param!r} parameter of {func} must have one label per image. "
            f"Got {len(x)} images and labels of shape {tuple(y.shape)} instead."
        )
    if len(x) == 0:
        raise ValueError(f"The {param!r} parameter of {func} must hold at least one image. Got none in {where}.")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"The {param!r} parameter of {func} must have integer labels. Got dtype {y.dtype} instead.")
    if (y < 0).any():
        raise ValueError(
            f"The {param!r} parameter of {func} must be labelled, but {int((y < 0).sum())} of its {len(y)} "
            f"images in {where} have no label (-1)."
        )
    if model is not None and y.max() >= model.output_shape[-1]:
        raise ValueError(
            f"The {param!r} parameter of {func} has labels up to {int(y.max())}, but model {model.name!r} "
            f"outputs {model.output_shape[-1]} classes."
        )
    return x, y.astype(np.int64)


def saliency_maps(maps, func, n=None, shape=None, name="maps"):
    """Maps as float64 ``(n, h, w)``, one per image; ``n`` and ``shape`` ``(h, w)`` fixed when given."""
    array = np.asarray(maps)
    want = "(n, h, w)" if n is None and shape is None else str((n if n is not None else "n",) + tuple(
        shape if shape is not None else ("h", "w"))).replace("'", "")
    if array.dtype.kind not in "uif" or array.ndim != 3 or (n is not None and len(array) != n) or (
            shape is not None and array.shape[1:] != tuple(shape)):
        raise ValueError(
            f"The {name!r} parameter of {func} must be a numeric array shaped {want}, one map per "
            f"image. Got dtype {array.dtype} and shape {array.shape} instead."
        )
    return array.astype(np.float64)


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
                         f"face) or a Dataset. Got dtype {array.dtype} and shape {array.shape} instead.")
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
    array = np.asarray(class_idx) if np.ndim(class_idx) == 1 else None
    if array is not None and array.dtype.kind in "iu" and len(array) == n and (
            not n or (array.min() >= 0 and array.max() < k)):
        return array.astype(np.int64)  # the common case, without a loop over the images
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


def region_ids(regions, n_regions, func, n=None, shape=(IMAGE_SIZE, IMAGE_SIZE)):
    """Integer region ids in ``[0, n_regions)``: one template ``shape`` or ``(n, *shape)`` maps, returned as given."""
    array = np.asarray(regions)
    shape = tuple(shape)
    count = "n" if n is None else n
    stacked = array.ndim == len(shape) + 1 and array.shape[1:] == shape and (n is None or len(array) == n)
    if not (array.shape == shape or stacked) or array.dtype.kind not in "iu":
        raise ValueError(
            f"The 'regions' parameter of {func} must be integer region ids: one template shaped {shape} or "
            f"{(count,) + shape} maps. Got dtype {array.dtype} and shape {array.shape} instead."
        )
    if array.size and (array.min() < 0 or array.max() >= n_regions):
        raise ValueError(
            f"The 'regions' parameter of {func} must hold ids in [0, {n_regions}). "
            f"Got ids from {array.min()} to {array.max()} instead."
        )
    return array


def declared_input(value, func):
    """``value`` if it is one of :data:`fervis.constants.MODEL_INPUTS` ("auto" or a pixel convention)."""
    if not isinstance(value, str) or value not in MODEL_INPUTS:
        raise ValueError(f"The 'model_input' parameter of {func} must be one of {list(MODEL_INPUTS)}. "
                         f"Got {value!r} instead.")
    return value


def parse_class_order(class_order, func="fervis.contract.parse_class_order", text_only=False):
    """``"auto"`` or a tuple of class names in the model's output order, from what a user wrote.

    Parameters
    ----------
    class_order : str or sequence of str
        ``"auto"``, ``"fer2013"``, ``"alphabetical"``, a comma-separated list of the 7 class names
        (as on the command line) or a list of them.
    func : str
        The caller's public name (or command-line option), for the message.
    text_only : bool, default False
        Refuse a list (the notebooks take ``CLASS_ORDER`` as text).

    Example
    -------
    >>> parse_class_order("alphabetical")[4]
    'neutral'
    """
    given = class_order
    if isinstance(class_order, str) and "," in class_order:
        class_order = [name.strip() for name in class_order.split(",")]
    if isinstance(class_order, str):
        if class_order == "auto":
            return "auto"
        if class_order == "fer2013":
            return tuple(CLASS_NAMES)
        if class_order == "alphabetical":
            return tuple(sorted(CLASS_NAMES))
    elif isinstance(class_order, (list, tuple)) and sorted(map(str, class_order)) == sorted(CLASS_NAMES) and (
            isinstance(given, str) or not text_only):
        return tuple(map(str, class_order))
    written = (", separated by commas (the notebooks take CLASS_ORDER as text)" if text_only
               else " (a list, or one string separated by commas)")
    names = ", ".join(repr(o) for o in CLASS_ORDERS)
    raise ValueError(
        f"The 'class_order' parameter of {func} must be {names} or the {len(CLASS_NAMES)} "
        f"class names {list(CLASS_NAMES)} once each, in the order of the model's outputs{written}. "
        f"Got {given!r} instead."
    )
