"""What do the filters of a layer want to see? (notebook 2)

Three views of one filter, each with numbers as well as a picture:

* :func:`maximize` -- activation maximisation: the image that drives the filter hardest,
  found by gradient ascent (Erhan et al., "Visualizing Higher-Layer Features of a Deep
  Network", 2009). Plain ascent in pixel space (the ``naive`` preset) gives the
  high-frequency "QR code" images of the seed notebook. The ``readable`` preset adds what
  makes them legible (Olah, Mordvintsev & Schubert, "Feature Visualization", Distill 2017):
  a decorrelated Fourier-space parameterization, robustness to jitter, rotation and scale,
  total-variation and norm penalties, and a multi-octave schedule (Mordvintsev et al.,
  "Inceptionism", 2015): optimise a small image, upsample, continue.
* :func:`feature_maps` -- what the layer outputs on a real face.
* :func:`top_activating` -- the faces of a dataset that drive each filter hardest and the
  receptive-field crop around the peak (Zeiler & Fergus, "Visualizing and Understanding
  Convolutional Networks", ECCV 2014; OpenAI Microscope), computed in one pass over the
  dataset for all filters of a layer. :func:`receptive_field` derives the crop size from the
  layer stack.

Each ascent image comes with the activation it reaches, that activation as a fraction of the
largest one any real face produces, and :func:`high_frequency_energy`, a noise score.

Every input gradient runs inside one ``tf.function`` (TF 2.21's oneDNN kernels corrupt the
heap on eager input gradients through some convolutions; see docs/architecture.md).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import math
import weakref

import keras
import numpy as np
import tensorflow as tf

from fervis import models
from fervis._checks import face_model, keras_model, max_steps, positive_int, real
from fervis._checks import faces_2d as _images
from fervis.constants import IMAGE_SIZE
from fervis.stats import wilson

__all__ = [
    "PRESETS", "Maximization", "Exemplars", "ReceptiveField", "maximize", "feature_maps",
    "top_activating", "receptive_field", "high_frequency_energy", "layer_names", "layer_width", "block_layers",
    "seed_agreement", "describe_presets", "preset_table", "describe_exemplars", "MIN_REFERENCE",
]

#: A filter's best real face must reach this share of the layer's strongest filter's best mean activation
#: for an ascent image's activation to be stated as a share of it (:attr:`Maximization.fraction`).
MIN_REFERENCE = 0.01

#: Settings of the activation-maximisation presets, tuned for 48x48 grayscale faces.
#: ``naive`` is plain normalised gradient ascent on pixels from grey noise (the seed's look);
#: ``readable`` is the default. A dict passed as ``preset`` overrides ``readable``'s values.
PRESETS = {
    "naive": {
        "parameterization": "pixel", "steps": 256, "learning_rate": 2.0, "init": 20.0,
        "octaves": (48,), "octave_steps": (1.0,), "jitter": 0, "rotate": 0.0, "scale": (1.0, 1.0),
        "tv": 0.0, "norm": 0.0, "decay": 1.0,
    },
    "readable": {
        "parameterization": "fourier", "steps": 256, "learning_rate": 0.15, "init": 0.3,
        "octaves": (12, 24, 48), "octave_steps": (0.15, 0.15, 0.7), "jitter": 3, "rotate": 8.0,
        "scale": (0.92, 1.08), "tv": 40.0, "norm": 4.0, "decay": 1.0,
    },
}



# --------------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True)
class Maximization:
    """Gradient-ascent images and their numbers, one row per (filter, seed).

    Attributes
    ----------
    images : ndarray, float32, (m, 48, 48)
        Pixel values 0-255 (floats), ``m = len(filters) * seeds``, filter-major.
    filter_idx, seed : ndarray, int, (m,)
        Which filter and which seed (0..seeds-1) each image belongs to.
    activation : ndarray, float32, (m,)
        The filter's mean activation over positions on the image (the logit for a softmax
        or sigmoid output), the objective that was maximised.
    fraction : ndarray, float32, (m,)
        ``activation`` divided by the largest mean activation of that filter on any face of the
        ``dataset`` passed; NaN (undefined, the reason in ``fraction_note``) without a dataset or
        when that largest activation is not clearly above zero (see :func:`maximize`).
    noise : ndarray, float32, (m,)
        :func:`high_frequency_energy` of each image (0 smooth .. 1 pixel noise).
    dataset_max : ndarray or None, (m,)
        The largest activation on a real face, per row.
    layer_name, preset : str
    steps : int
        The steps actually run (after the ``FERVIS_MAX_STEPS`` cap).
    fraction_note : tuple of str or None
        Per row, why ``fraction`` is undefined (NaN) there; ``""`` where it is defined.
    start : tuple of str or None
        Per row, where the ascent started: ``"noise"``; where the filter was silent on it (a
        post-ReLU filter at 0 everywhere has no gradient to climb), plain ascent starts from
        ``"full-range noise"`` that excites it or, failing that, ``"face <i>"`` (of the dataset,
        or of fervis's synthetic faces without one) plus the noise.
    """

    images: np.ndarray
    filter_idx: np.ndarray
    seed: np.ndarray
    activation: np.ndarray
    fraction: np.ndarray
    noise: np.ndarray
    dataset_max: np.ndarray | None
    layer_name: str
    preset: str
    steps: int
    fraction_note: tuple | None = None
    start: tuple | None = None

    def __len__(self):
        return len(self.images)

    @property
    def filters(self):
        """The distinct filters, in the order they were asked for."""
        return list(dict.fromkeys(self.filter_idx.tolist()))

    @property
    def seeds(self):
        return int(self.seed.max()) + 1 if len(self.seed) else 0

    def to_frame(self):
        """The numbers as a pandas DataFrame, one row per image; ``fraction note`` says why a
        ``fraction`` is undefined (NaN) and is empty where it is defined.

        Example
        -------
        >>> maximize(model, "block1_conv", [0, 1]).to_frame().columns.tolist()  # doctest: +SKIP
        ['filter_idx', 'seed', 'activation', 'fraction', 'noise', 'fraction note']
        """
        import pandas as pd

        notes = list(self.fraction_note) if self.fraction_note is not None else [
            "" if np.isfinite(f) else "undefined" for f in self.fraction]
        return pd.DataFrame({
            "filter_idx": self.filter_idx, "seed": self.seed, "activation": self.activation.astype(np.float64),
            "fraction": self.fraction.astype(np.float64), "noise": self.noise.astype(np.float64),
            "fraction note": notes,
        })


@dataclasses.dataclass(frozen=True)
class ReceptiveField:
    """Which input pixels a unit of a layer sees, per axis (rows, cols).

    Attributes
    ----------
    size : tuple of int
        Receptive-field height and width in input pixels (at most the image size).
    jump : tuple of float
        Input pixels between two neighbouring units of the layer (its total stride).
    start : tuple of float
        Centre of unit (0, 0)'s receptive field in input pixel coordinates.
    spatial : bool
        False for a layer without spatial output (dense): every unit sees the whole image.
    """

    size: tuple
    jump: tuple
    start: tuple
    spatial: bool = True

    def box(self, row, col, image_size=IMAGE_SIZE):
        """The window ``(y0, x0, y1, x1)`` around unit ``(row, col)``, shifted inside the image.

        Example
        -------
        >>> receptive_field(models.build("tiny"), "block2_conv").box(0, 0)
        (0, 0, 8, 8)
        """
        out = []
        for axis, pos in enumerate((row, col)):
            size = min(int(self.size[axis]), image_size)
            centre = self.start[axis] + pos * self.jump[axis]
            lo = int(math.floor(centre - (size - 1) / 2 + 1e-6))
            out.append(min(max(lo, 0), image_size - size))
        (y0, x0) = out
        return (y0, x0, y0 + min(int(self.size[0]), image_size), x0 + min(int(self.size[1]), image_size))


@dataclasses.dataclass(frozen=True)
class Exemplars:
    """The faces that drive each filter hardest, with the receptive-field crop around the peak.

    Attributes
    ----------
    filter_idx : ndarray, int, (f,)
    indices : ndarray, int, (f, k)
        Positions in the dataset, strongest first.
    values : ndarray, float32, (f, k)
        The filter's peak activation (maximum over positions) on each face.
    positions : ndarray, int, (f, k, 2)
        ``(row, col)`` of the peak in the layer's output (0, 0 for a dense layer).
    boxes : ndarray, int, (f, k, 4)
        ``(y0, x0, y1, x1)`` of the crop in face pixels.
    faces : ndarray, uint8, (f, k, 48, 48)
    crops : ndarray, uint8, (f, k, r, r)
        The receptive field around each peak, ``r = min(receptive field, 48)``.
    receptive_field : ReceptiveField
    layer_name : str
    """

    filter_idx: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    positions: np.ndarray
    boxes: np.ndarray
    faces: np.ndarray
    crops: np.ndarray
    receptive_field: ReceptiveField
    layer_name: str

    def to_frame(self, labels=None, class_names=None):
        """One row per filter: the strongest peak, the mean over the k faces and, given the
        dataset's ``labels``, the most common class among the faces that drive it, how many of
        them are of it (``count``), their number ``faces`` and the class's ``share`` of them.

        Only faces the filter responds to (peak > 0) and that carry a label (not -1) are counted:
        after a ReLU, the faces beyond the last one that excites the filter are at 0 and were
        picked by their order. A filter that no face excites has class ``"none (never fires)"``,
        one whose exciting faces are all unlabelled ``"unlabelled"``; their ``count`` is 0 and their
        ``share`` NaN.

        Example
        -------
        >>> top.to_frame(dataset.labels, dataset.class_names)  # doctest: +SKIP
        """
        import pandas as pd

        rows = []
        for row, f in enumerate(self.filter_idx.tolist()):
            entry = {"filter_idx": f, "peak": float(self.values[row, 0]), "mean peak": float(self.values[row].mean())}
            if labels is not None:
                found = np.asarray(labels)[self.indices[row]]
                found = found[(self.values[row] > 0) & (found >= 0)]
                if len(found):
                    classes, counts = np.unique(found, return_counts=True)
                    best = int(classes[np.argmax(counts)])  # a tie goes to the lower class index
                    entry["most common class"] = class_names[best] if class_names is not None else str(best)
                    entry["count"], entry["faces"] = int(counts.max()), int(len(found))
                    entry["share"] = float(counts.max() / len(found))
                else:
                    entry["most common class"] = "none (never fires)" if entry["peak"] <= 0 else "unlabelled"
                    entry["count"], entry["faces"], entry["share"] = 0, 0, float("nan")
            rows.append(entry)
        return pd.DataFrame(rows).set_index("filter_idx")


# --------------------------------------------------------------------------- checks


def layer_names(model, spatial=False, learned=False):
    """Layers whose filters can be visualised: a spatial ``(n, h, w, c)`` or a ``(n, c)`` output.

    Parameters
    ----------
    model : keras.Model
    spatial : bool, default False
        Only layers with a spatial output (for :func:`feature_maps`).
    learned : bool, default False
        Only the layers fed by a learned layer (one with weights) or learned themselves: the input's
        preprocessing (a ``Rescaling`` or ``Normalization``, fervis's ``adapt_*`` layers, in every
        member of an ensemble) has no filters of its own, its channels are the input's (what
        :func:`fervis.widgets.filter_explorer` offers).

    Returns
    -------
    list of str
        In graph order, nested (adapted) models included; input and nested-model layers left out.

    Example
    -------
    >>> layer_names(models.build("tiny"))[:3]
    ['scale', 'block1_conv', 'block1_act']
    """
    keras_model(model, "fervis.filters.layer_names")
    found, kept = [], _learned_layers(model) if learned else None
    for name, layer in models.named_layers(model):
        if isinstance(layer, (keras.layers.InputLayer, keras.Model)):
            continue
        if kept is not None and id(layer) not in kept:
            continue  # learned=True: the input's preprocessing
        try:
            rank = len(layer.output.shape)
        except (AttributeError, ValueError):
            continue  # a layer used more than once has no single output
        if rank == 4 or (rank == 2 and not spatial):
            found.append(name)
    return found


def _learned_layers(model):
    """The ids of the layers whose output depends on a learned layer: one with weights, other than
    a ``Normalization`` (its weights are input statistics), reached through the graph, nested
    models included (an ensemble member's own Rescaling stays the input's preprocessing).

    Walks Keras's layer graph by ``_keras_history`` as :func:`receptive_field` does: Keras 3 has no
    public API for a tensor's producing layer."""
    kept = set()

    def walk(graph, statuses):
        memo = {id(t): s for t, s in zip(graph.inputs, statuses)}

        def status(tensor):
            key = id(tensor)
            if key not in memo:
                layer, node_index, tensor_index = tensor._keras_history
                inputs = [status(t) for t in layer._inbound_nodes[node_index].input_tensors]
                if isinstance(layer, keras.Model):
                    memo[key] = walk(layer, inputs)[tensor_index]
                else:
                    own = bool(layer.weights) and not isinstance(layer, keras.layers.Normalization)
                    memo[key] = own or any(inputs)
                    if memo[key]:
                        kept.add(id(layer))
            return memo[key]

        return [status(t) for t in graph.outputs]

    walk(model, [False] * len(model.inputs))
    return kept


def _check_layer(model, layer_name, func, spatial=False):
    """``layer_name`` as fervis names it (a full path is accepted too); a clear error if no such layer."""
    allowed = layer_names(model, spatial=spatial)
    layer_name = models.canonical_layer_name(model, layer_name)
    if isinstance(layer_name, str) and layer_name in allowed:
        return layer_name
    if spatial and isinstance(layer_name, str) and layer_name in layer_names(model):
        shape = models.find_layer(model, layer_name).output.shape
        raise ValueError(
            f"The 'layer_name' parameter of {func} must be a layer with a spatial output (n, h, w, c). "
            f"Got {layer_name!r} instead, whose output shape {tuple(shape)} has no spatial map; "
            f"layers with one: {allowed}."
        )
    raise ValueError(
        f"The 'layer_name' parameter of {func} must be one of the layers of model {model.name!r}: "
        f"{allowed}. Got {layer_name!r} instead."
    )


def layer_width(model, layer_name):
    """The number of filters (channels or units) of a layer's output.

    Example
    -------
    >>> layer_width(models.build("tiny"), "block2_conv")
    16
    """
    layer_name = _check_layer(model, layer_name, "fervis.filters.layer_width")
    return int(models.find_layer(model, layer_name).output.shape[-1])


def block_layers(model, layer_name=None):
    """A convolution and the layers right after it that keep its shape (batch norm, activation).

    The seed notebook compared ``conv2d_24``, ``batch_normalization_24`` and ``activation_24``;
    this finds that trio in any model by following the graph, not by name.

    Parameters
    ----------
    model : keras.Model
    layer_name : str, optional
        A convolution; default the last one (:func:`fervis.models.last_conv_layer`).

    Returns
    -------
    list of str
        ``[conv, ...]``, e.g. ``['block3_conv2', 'block3_bn2', 'block3_act2']``.

    Example
    -------
    >>> block_layers(models.build("compact"))
    ['block3_conv2', 'block3_bn2', 'block3_act2']
    """
    func = "fervis.filters.block_layers"
    face_model(model, func, classifier=False)
    if layer_name is None:
        layer_name = models.last_conv_layer(model)
    layer_name = _check_layer(model, layer_name, func, spatial=True)
    names = [layer_name]
    layer = models.find_layer(model, layer_name)
    shape = tuple(layer.output.shape)
    elementwise = (keras.layers.BatchNormalization, keras.layers.LayerNormalization, keras.layers.Activation,
                   keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU, keras.layers.PReLU)
    while True:
        consumers = [node.operation for node in layer._outbound_nodes]
        if len(consumers) != 1 or not isinstance(consumers[0], elementwise):
            return names
        layer = consumers[0]
        if tuple(layer.output.shape) != shape:
            return names
        names.append(models.path_of(model, layer))


def _check_filters(filter_idx, width, layer_name, func, allow_none=False):
    """``filter_idx`` as a list of ints in ``[0, width)``; ``None`` means every filter."""
    if filter_idx is None and allow_none:
        return list(range(width))
    single = isinstance(filter_idx, (int, np.integer)) and not isinstance(filter_idx, bool)
    values = [filter_idx] if single else filter_idx
    ok = isinstance(values, (list, tuple, range, np.ndarray)) and len(values) > 0 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
    if not ok or not all(0 <= int(v) < width for v in values):
        raise ValueError(
            f"The 'filter_idx' parameter of {func} must be an int or a non-empty list of ints in "
            f"[0, {width - 1}]: layer {layer_name!r} has {width} filters. Got {filter_idx!r} instead."
        )
    return [int(v) for v in values]


def _settings(preset, func):
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(
                f"The 'preset' parameter of {func} must be one of {sorted(PRESETS)} or a dict of settings. "
                f"Got {preset!r} instead."
            )
        return preset, dict(PRESETS[preset])
    if isinstance(preset, dict):
        unknown = sorted(set(preset) - set(PRESETS["readable"]))
        if unknown:
            raise ValueError(
                f"The 'preset' parameter of {func} must use only the settings {sorted(PRESETS['readable'])}. "
                f"Got unknown settings {unknown} instead."
            )
        return "custom", {**PRESETS["readable"], **preset}
    raise ValueError(
        f"The 'preset' parameter of {func} must be one of {sorted(PRESETS)} or a dict of settings. "
        f"Got {preset!r} instead."
    )


# --------------------------------------------------------------------------- the layer as a model


def _part(model, layer_name):
    """``model`` truncated at ``layer_name``; a softmax (or sigmoid) output is read as logits."""
    layer = models.find_layer(model, layer_name)
    # The output softmax: probabilities saturate, so ascend the logit instead (another softmax
    # layer, inside the network, is ascended as it is).
    if layer is models.softmax_layer(model):
        model = models.to_logits(model)
    return models.truncate_at(model, layer_name)


def _reduce(part, x):
    """Per face and filter: mean activation, peak activation and the peak's flat position.

    A forward pass only, so it may run eagerly (the oneDNN trap is in input gradients)."""
    out = part(x, training=False)
    if len(out.shape) == 2:
        return out.numpy(), out.numpy(), np.zeros(out.shape, np.int64)
    flat = tf.reshape(out, (out.shape[0], -1, out.shape[-1]))
    return (tf.reduce_mean(flat, axis=1).numpy(), tf.reduce_max(flat, axis=1).numpy(),
            tf.argmax(flat, axis=1).numpy())


def _layer_stats(part, faces, batch_size=256):
    """:func:`_reduce` over ``faces`` (uint8 or float ``(n, 48, 48)``), batch by batch."""
    parts = [_reduce(part, tf.constant(np.asarray(faces[i:i + batch_size], np.float32)[..., None]))
             for i in range(0, len(faces), batch_size)]
    return tuple(np.concatenate(column) for column in zip(*parts))


# --------------------------------------------------------------------------- activation maximisation


def high_frequency_energy(images, cutoff=0.25):
    """Share of an image's spectral energy above ``cutoff`` cycles per pixel: a noise score.

    The mean is removed first; 0 means smooth (or flat: the energy is counted against at least
    one grey level of contrast), about 0.8 means white noise (the share of the spectrum's area
    above 0.25 cycles/pixel), 1 means a pure pixel checkerboard.

    Parameters
    ----------
    images : array (n, h, w) or (n, h, w, 1)
    cutoff : float, default 0.25
        In cycles per pixel, between 0 and 0.5 (the Nyquist frequency).

    Returns
    -------
    ndarray, float32, (n,)

    Example
    -------
    >>> high_frequency_energy(np.random.default_rng(0).uniform(0, 255, (1, 48, 48))).round(1)
    array([0.8], dtype=float32)
    """
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise ValueError(
            "The 'images' parameter of fervis.filters.high_frequency_energy must be shaped (n, h, w) or "
            f"(n, h, w, 1). Got shape {images.shape} instead."
        )
    cutoff = real(cutoff, "cutoff", "fervis.filters.high_frequency_energy", 0.0, 0.5, low_open=True, high_open=True)
    centred = images - images.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(centred)) ** 2
    fy = np.fft.fftfreq(images.shape[1])[:, None]
    fx = np.fft.fftfreq(images.shape[2])[None, :]
    high = np.sqrt(fy ** 2 + fx ** 2) > cutoff
    # Parseval: the power sums to pixels**2 x the mean square; a floor of one grey level keeps
    # an almost flat image (a dead filter's) from scoring its rounding noise as "noisy".
    pixels = images.shape[1] * images.shape[2]
    total = np.maximum(power.sum(axis=(1, 2)), float(pixels) ** 2)
    share = (power * high).sum(axis=(1, 2)) / total
    return share.astype(np.float32)


def seed_agreement(result):
    """How alike the seeds of each filter are, wherever their patterns sit.

    Ascent images of one filter from different random starts show the same pattern at
    different positions, so pixels are not compared: the amplitude spectra are (they do not
    change when a pattern moves). ``within`` is the mean correlation of log amplitude spectra
    between the seeds of a filter, ``across`` between that filter's images and the other
    filters'; ``within`` well above ``across`` means the seeds agree on a pattern of their own.

    Parameters
    ----------
    result : Maximization
        With ``seeds >= 2``.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``filter_idx``: ``activation`` (mean over seeds), ``spread`` (their standard
        deviation over the absolute mean), ``within``, ``across`` (NaN with a single filter).

    Example
    -------
    >>> seed_agreement(maximize(model, "block3_act2", [0, 1], seeds=3)).columns.tolist()  # doctest: +SKIP
    ['activation', 'spread', 'within', 'across']
    """
    import pandas as pd

    if not isinstance(result, Maximization) or result.seeds < 2:
        raise ValueError(
            "The 'result' parameter of fervis.filters.seed_agreement must be a Maximization with seeds >= 2. "
            f"Got {getattr(result, 'seeds', result)!r} seeds instead."
        )
    images = result.images - result.images.mean(axis=(1, 2), keepdims=True)
    spectra = np.log1p(np.abs(np.fft.rfft2(images))).reshape(len(images), -1)
    corr = np.corrcoef(spectra)
    rows = []
    for f in result.filters:
        mine = result.filter_idx == f
        inside = corr[np.ix_(mine, mine)][~np.eye(int(mine.sum()), dtype=bool)]
        outside = corr[np.ix_(mine, ~mine)]
        act = result.activation[mine]
        rows.append({"filter_idx": f, "activation": float(act.mean()),
                     "spread": float(act.std() / max(abs(act.mean()), 1e-12)),
                     "within": float(inside.mean()), "across": float(outside.mean()) if outside.size else np.nan})
    return pd.DataFrame(rows).set_index("filter_idx")


def _spectrum_scale(size, decay):
    """Lucid's 1/f amplitude scale: every frequency gets about equal energy after the scale."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    freqs = np.sqrt(fy ** 2 + fx ** 2)
    return (size / np.maximum(freqs, 1.0 / size) ** decay).astype(np.float32), np.abs(fy), np.abs(fx)


def _octave_masks(size, octaves):
    """For each octave side length s, the Fourier coefficients an s x s image can hold."""
    _, fy, fx = _spectrum_scale(size, 1.0)
    masks = []
    for side in octaves:
        band = 0.5 * side / size + 1e-6
        masks.append(((fy <= band) & (fx <= band)).astype(np.float32))
    return masks


def _schedule(steps, octaves, fractions):
    """Steps per octave, summing to ``steps``; the last octave takes the rest."""
    counts = [int(round(steps * f)) for f in fractions[:-1]]
    counts.append(max(0, steps - sum(counts)))
    return counts


def _affine(n, seed, jitter, rotate, scale, size):
    """Per-image random affine maps (jitter, rotation, scale) for ImageProjectiveTransformV3."""
    u = tf.random.stateless_uniform((n, 4), seed=seed, minval=-1.0, maxval=1.0)
    tx, ty = u[:, 0] * jitter, u[:, 1] * jitter
    theta = u[:, 2] * rotate * (math.pi / 180.0)
    lo, hi = scale
    s = lo + (u[:, 3] + 1.0) * 0.5 * (hi - lo)
    cos, sin = tf.cos(theta) / s, tf.sin(theta) / s
    c = (size - 1) / 2.0
    # output (x, y) -> input: inverse rotation/scale about the centre, after removing the shift
    a0, a1, b0, b1 = cos, sin, -sin, cos
    a2 = c - a0 * (c + tx) - a1 * (c + ty)
    b2 = c - b0 * (c + tx) - b1 * (c + ty)
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def _initial_params(settings, m, seed, size):
    rng = np.random.default_rng(seed)
    if settings["parameterization"] == "pixel":
        return (127.5 + rng.uniform(-1.0, 1.0, (m, size, size, 1)) * float(settings["init"])).astype(np.float32)
    return (rng.standard_normal((m, 2, size, size // 2 + 1)) * float(settings["init"])).astype(np.float32)


def _render(params, settings, scale, mask, size):
    """Pixel images 0-255, shape (m, size, size, 1), from the parameters."""
    if settings["parameterization"] == "pixel":
        return params
    spectrum = tf.complex(params[:, 0] * scale * mask, params[:, 1] * scale * mask)
    logits = tf.signal.irfft2d(spectrum, fft_length=[size, size]) / 4.0
    return 255.0 * tf.sigmoid(logits)[..., None]


def _probe_scale(part, filters):
    """Per-filter spread of the activation over a fixed set of synthetic faces: the unit in
    which the objective is measured, so that the penalties weigh the same against every filter
    whatever its scale (a deep ReLU filter's raw values may be a hundred times a logit's)."""
    from fervis import synthetic

    faces, _, _ = synthetic.generate(32, seed=0)
    means, _, _ = _reduce(part, tf.constant(faces.astype(np.float32)[..., None]))
    spread = means[:, filters].std(axis=0)
    fallback = float(spread.max()) if spread.max() > 1e-6 else 1.0
    return np.where(spread > 1e-6, spread, fallback).astype(np.float32)


def _make_step(part, settings, size):
    """One compiled ascent step for the whole batch: every requested filter (and seed) at once."""
    from tf_keras_vis.activation_maximization.regularizers import Norm, TotalVariation2D

    # tf-keras-vis's ActivationMaximization runs its GradientTape eagerly on the user's model,
    # which crashes TF 2.21's oneDNN kernels on some convolutions (see docs/architecture.md),
    # and its Rotate2D/Scale modifiers are scipy (NumPy) code that cannot run inside a graph.
    # So the loop is ours, in one tf.function, with graph-native transforms; its TV and norm
    # regularizers are plain TensorFlow and are reused as they are.
    tv = TotalVariation2D(weight=float(settings["tv"]))
    norm = Norm(weight=float(settings["norm"]), p=2)
    pixel = settings["parameterization"] == "pixel"
    scale = tf.constant(_spectrum_scale(size, float(settings["decay"]))[0])
    jitter, rotate = float(settings["jitter"]), float(settings["rotate"])
    low, high = (float(v) for v in settings["scale"])
    transform = jitter > 0 or rotate > 0 or (low, high) != (1.0, 1.0)
    lr = float(settings["learning_rate"])

    def render(params, mask):
        return _render(params, settings, scale, mask, size)

    def objective(images, targets):
        out = part(images, training=False)
        if len(out.shape) == 4:
            out = tf.reduce_mean(out, axis=(1, 2))
        return tf.gather(out, targets[:, None], axis=1, batch_dims=1)[:, 0]

    @tf.function
    def step(params, m, v, t, mask, seed, targets, ref):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(params)
            images = render(params, mask)
            seen = images
            if transform:
                seen = tf.raw_ops.ImageProjectiveTransformV3(
                    images=images, transforms=_affine(images.shape[0], seed, jitter, rotate, (low, high), size),
                    output_shape=[size, size], fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")
            activation = objective(seen, targets)
            loss = -activation / ref
            if settings["tv"]:
                loss += tv(images / 255.0)
            if settings["norm"]:
                loss += norm(images / 127.5 - 1.0)
            total = tf.reduce_sum(loss)
        grad = tape.gradient(total, params)
        if pixel:  # plain ascent: a normalised gradient step, then back into 0-255
            rms = tf.sqrt(tf.reduce_mean(tf.square(grad), axis=(1, 2, 3), keepdims=True)) + 1e-8
            params.assign(tf.clip_by_value(params - lr * grad / rms, 0.0, 255.0))
        else:  # Adam, written out so its state lives in our own variables
            m.assign(0.9 * m + 0.1 * grad)
            v.assign(0.999 * v + 0.001 * tf.square(grad))
            steps = tf.cast(t, tf.float32)
            m_hat = m / (1.0 - tf.pow(0.9, steps))
            v_hat = v / (1.0 - tf.pow(0.999, steps))
            params.assign_sub(lr * m_hat / (tf.sqrt(v_hat) + 1e-8))
        return activation

    @tf.function
    def final(params, mask, targets):
        images = render(params, mask)
        return images[..., 0], objective(images, targets)

    return step, final


@contextlib.contextmanager
def _quiet_retracing():
    """Silence TensorFlow's "frequent retracing" hint while ascending: each layer, preset and
    batch size compiles its own graph by design, and TensorFlow counts those traces per line
    of source across every model, so the hint fires on a notebook that looks at a few layers."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# Compiled steps by (model, layer, settings), so that a widget asking for one filter after
# another traces each preset once. Small, because every entry holds a model.
_COMPILED = collections.OrderedDict()
_COMPILED_SIZE = 6


def _compiled(model, layer_name, settings, size):
    key = (id(model), layer_name, repr(sorted(settings.items())))
    hit = _COMPILED.get(key)
    if hit is not None and hit[0]() is model:
        _COMPILED.move_to_end(key)
        return hit[1:]
    part = _part(model, layer_name)
    entry = (weakref.ref(model), part) + _make_step(part, settings, size)
    _COMPILED[key] = entry
    while len(_COMPILED) > _COMPILED_SIZE:
        _COMPILED.popitem(last=False)
    return entry[1:]


def maximize(model, layer_name, filter_idx, steps=None, preset="readable", seeds=1, dataset=None,
             seed=0, progress=False):
    """Images that maximise filters of a layer, by batched gradient ascent.

    Every requested filter and seed is optimised in one batch, one compiled step at a time.

    Parameters
    ----------
    model : keras.Model
        Takes raw faces ``(n, 48, 48, 1)`` (a fervis model or one from ``models.adapt``).
    layer_name : str
        A convolution, batch-norm, activation or dense layer (its own name, also inside an
        adapted model). For a softmax (or sigmoid) output such as ``"predictions"`` the logit is ascended:
        filter 3 of ``predictions`` gives what the model thinks a "happy" face is.
    filter_idx : int or list of int
        Channels (or units) of the layer, each in ``[0, width)``.
    steps : int, optional
        Ascent steps; default the preset's (256). Capped by the environment variable
        ``FERVIS_MAX_STEPS`` when it is set.
    preset : {"readable", "naive"} or dict, default "readable"
        See :data:`PRESETS`; a dict overrides some of ``readable``'s settings.
    seeds : int, default 1
        Random starts per filter, to see what is stable.
    dataset : Dataset or array (n, 48, 48), optional
        Real faces: gives ``fraction``, the activation reached relative to the largest any of
        these faces produces.
    seed : int, default 0
    progress : bool, default False
        Show a tqdm bar over the steps.

    Returns
    -------
    Maximization
        ``images`` float32 ``(len(filter_idx) * seeds, 48, 48)`` with values 0-255, and per
        image ``activation``, ``fraction`` and ``noise``.

    Example
    -------
    >>> result = maximize(models.build("tiny"), "predictions", 3, seeds=3)
    >>> result.images.shape
    (3, 48, 48)
    """
    func = "fervis.filters.maximize"
    face_model(model, func, classifier=False)
    layer_name = _check_layer(model, layer_name, func)
    width = int(models.find_layer(model, layer_name).output.shape[-1])
    filters = _check_filters(filter_idx, width, layer_name, func)
    preset_name, settings = _settings(preset, func)
    seeds = positive_int(seeds, "seeds", func)
    steps = max_steps(positive_int(settings["steps"] if steps is None else steps, "steps", func))
    faces = None if dataset is None else _images(dataset, func, "dataset")
    if settings["parameterization"] not in ("pixel", "fourier"):  # checked before any tracing
        raise ValueError(
            f"The 'parameterization' setting of {func} must be 'pixel' or 'fourier'. "
            f"Got {settings['parameterization']!r} instead."
        )

    size = IMAGE_SIZE
    octaves = tuple(settings["octaves"]) if settings["parameterization"] == "fourier" else (size,)
    fractions = tuple(settings["octave_steps"]) if len(octaves) > 1 else (1.0,)
    if len(fractions) != len(octaves) or not all(0 < o <= size for o in octaves):
        raise ValueError(
            f"The 'octaves' and 'octave_steps' settings of {func} must give image sides in (0, {size}] "
            f"and one step fraction per octave. Got {octaves!r} and {fractions!r} instead."
        )
    part, step, final = _compiled(model, layer_name, settings, size)
    targets = np.repeat(filters, seeds).astype(np.int32)
    seed_of = np.tile(np.arange(seeds), len(filters))
    m = len(targets)
    ref = tf.constant(np.repeat(_probe_scale(part, filters), seeds))
    start = _initial_params(settings, m, seed, size)
    pool = stats = None
    if faces is not None:
        pool, stats = faces, _layer_stats(part, faces)
    origin = ["noise"] * m
    if settings["parameterization"] == "pixel":
        start, origin, pool, stats = _alive_start(part, start, targets, seed_of, pool, stats, seed)
    params = tf.Variable(start)
    moments = (tf.Variable(tf.zeros_like(params)), tf.Variable(tf.zeros_like(params)))
    masks = _octave_masks(size, octaves)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"{layer_name} x{m}", unit="step")
    t = 0
    target_t = tf.constant(targets)
    with _quiet_retracing():
        for mask, count in zip(masks, _schedule(steps, octaves, fractions)):
            mask = tf.constant(mask)
            for _ in range(count):
                t += 1
                step(params, *moments, tf.constant(t, tf.int64), mask, tf.constant([seed, t], tf.int64),
                     target_t, ref)
                if bar is not None:
                    bar.update(1)
        images, activation = final(params, tf.constant(masks[-1]), target_t)
    if bar is not None:
        bar.close()
    images = np.asarray(images, dtype=np.float32)
    activation = np.asarray(activation, dtype=np.float32)
    fraction = np.full(m, np.nan, np.float32)
    notes = ["no real faces given"] * m
    dataset_max = None
    if faces is not None:
        means = stats[0]
        best = means[:, targets].max(axis=0)
        spread = means[:, targets].std(axis=0)
        strongest = float(means.max()) if means.size else 0.0
        dataset_max = best.astype(np.float32)
        # The ratio means something only against a clearly positive reference. A filter whose
        # output cannot be negative (after a ReLU) always has best > spread when any face
        # excites it (Popoviciu: spread <= best / 2); a signed one (a convolution, batch norm)
        # whose faces sit around zero has a best face within one spread of zero, and a ratio
        # to that is a division by almost nothing (the "share of best face 143" of issue 20).
        # A ReLU filter that real faces barely reach (best face at 0.4 % of the layer's strongest filter's
        # best) passes both tests, and an ascent image then "reaches 1076 % of the best face": true, and
        # a division by almost nothing that swamps the layer's mean share. Below MIN_REFERENCE of the
        # layer's strongest response a filter's ratio is undefined too.
        faint = best < MIN_REFERENCE * strongest
        ok = (best > 0) & (best > spread) & ~faint
        fraction = np.where(ok, activation / np.where(ok, best, 1.0), np.nan).astype(np.float32)
        notes = ["" if good else (
            f"no face excites filter {f} (best mean activation {b:.2g})" if b <= 0 else
            f"the best face's mean activation of filter {f} ({b:.2g}) is within one spread ({sd:.2g}) of zero"
            if b <= sd else
            f"real faces barely excite filter {f} (best mean activation {b:.2g}, under {MIN_REFERENCE:.0%} of the "
            f"layer's strongest, {strongest:.2g})")
            for good, f, b, sd in zip(ok, targets, best, spread)]
    return Maximization(
        images=images, filter_idx=targets.astype(np.int64), seed=seed_of.astype(np.int64),
        activation=activation, fraction=fraction, noise=high_frequency_energy(images),
        dataset_max=dataset_max, layer_name=layer_name, preset=preset_name, steps=steps,
        fraction_note=tuple(notes), start=tuple(origin),
    )


def _alive_start(part, start, targets, seed_of, pool, stats, seed=0, draws=16):
    """Plain ascent starts where each filter is alive. A row whose filter is 0 everywhere on its
    grey-noise start (no gradient to climb) starts instead from full-range noise that excites it
    (the best of ``draws`` draws, so the ascent still shows the seed's "QR codes"), or, where
    no draw does, from a face that excites it plus the row's own noise.

    The faces are ``pool`` (the dataset) or, without one, fervis's synthetic faces; the k-th
    seed of a filter takes its k-th best draw or face. Returns the start, per row its origin,
    and the pool with its layer statistics."""
    means, peaks, _ = _reduce(part, tf.constant(start))
    rows = np.arange(len(targets))
    dead = (means[rows, targets] == 0) & (peaks[rows, targets] <= 0)
    origin = ["noise"] * len(targets)
    if not dead.any():
        return start, origin, pool, stats
    rng = np.random.default_rng([seed, 1])
    noise = rng.uniform(0.0, 255.0, (draws,) + start.shape[1:]).astype(np.float32)
    noise_means, noise_peaks, _ = _reduce(part, tf.constant(noise))
    start = start.copy()
    for r in np.flatnonzero(dead):
        f = targets[r]
        alive = np.flatnonzero(noise_peaks[:, f] > 0)
        if len(alive):
            ranked = alive[np.argsort(-noise_means[alive, f], kind="stable")]
            start[r] = noise[ranked[seed_of[r] % len(ranked)]]
            origin[r] = "full-range noise"
            continue
        if pool is None:
            from fervis import synthetic

            pool = synthetic.generate(64, seed=0)[0]
            stats = _layer_stats(part, pool)
        alive = np.flatnonzero(stats[0][:, f] > 0)
        if not len(alive):
            continue  # silent on every face too: nothing to start from
        ranked = alive[np.argsort(-stats[0][alive, f], kind="stable")]
        i = int(ranked[seed_of[r] % len(ranked)])
        face = np.asarray(pool[i], np.float32)[..., None]
        start[r] = np.clip(face + (start[r] - 127.5), 0.0, 255.0)
        origin[r] = f"face {i}"
    again, peaks, _ = _reduce(part, tf.constant(start))
    for r in np.flatnonzero(dead & (again[rows, targets] == 0) & (peaks[rows, targets] <= 0)):
        if origin[r].startswith("face "):  # the noise silenced it again: the face alone
            start[r] = np.asarray(pool[int(origin[r].split()[1])], np.float32)[..., None]
    return start, origin, pool, stats


def _ratio(numerator, denominator, what):
    """``numerator / denominator`` and ``""``, or None and why the ratio is undefined."""
    if not np.isfinite(numerator) or not np.isfinite(denominator):
        return None, f"{what} is not a finite number"
    if denominator <= max(1e-6, 1e-3 * abs(numerator)):
        return None, (f"{what} is {denominator:.2f}" + (" (its filters are silent: 0 everywhere)"
                                                         if abs(denominator) <= 1e-6 else ""))
    return float(numerator / denominator), ""


def describe_exemplars(top, labels, class_names=None):
    """Which filter of a layer is most selective for one expression, as a sentence its table supports.

    Among the filters with faces that drive them (:meth:`Exemplars.to_frame`: faces the filter
    responds to, labelled), the one whose faces are most surely of one class: ranked by the lower
    end of the Wilson interval of that class's share, so 1 face of 1 does not outrank 4 of 5. The
    sentence gives the count, the faces counted, and the class's share of all the labelled faces
    searched (what a filter blind to expression would show on average) with a one-sided binomial
    test against it; filters as sure as the best are named as a tie; filters that never fire are
    counted, not ranked.

    Parameters
    ----------
    top : Exemplars
        From :func:`top_activating`.
    labels : array (n,)
        The labels of the faces ``top`` searched (the dataset passed to :func:`top_activating`);
        -1 for an unlabelled face.
    class_names : sequence of str, optional

    Returns
    -------
    str

    Example
    -------
    >>> print(describe_exemplars(top, faces.labels, faces.class_names))  # doctest: +SKIP
    Filter 2 of block3_act2 is the most selective of 6: 4 of the 5 faces that drive it hardest are happy (happy is 25% of the 600 labelled faces searched; binomial p = 0.016, above what a filter blind to expression would show).
    """
    func = "fervis.filters.describe_exemplars"
    if not isinstance(top, Exemplars):
        raise ValueError(f"The 'top' parameter of {func} must be Exemplars from fervis.filters.top_activating. "
                         f"Got {type(top).__name__} instead.")
    labels = np.asarray(labels)
    if (labels.ndim != 1 or len(labels) <= int(top.indices.max(initial=0))
            or not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"The 'labels' parameter of {func} must hold one integer label (-1: unlabelled) per face "
                         f"searched by 'top' (at least {int(top.indices.max(initial=0)) + 1}). Got shape "
                         f"{labels.shape}, dtype {labels.dtype} instead.")
    table = top.to_frame(labels, class_names)
    labelled = int((labels >= 0).sum())
    n_filters = len(table)
    silent = int((table["peak"] <= 0).sum())
    tail = f" {silent} of the {n_filters} filters never fire on these {len(labels)} faces." if silent else ""
    counted = table[table["faces"] > 0]
    if counted.empty:
        what = "fires on any of" if silent == n_filters else "fires on a labelled face among"
        return f"No filter of {top.layer_name} shown {what} these {len(labels)} faces."
    from scipy.stats import binomtest

    surety = [wilson(int(row["count"]), int(row["faces"]))[0] for _, row in counted.iterrows()]
    ranked = counted.assign(surety=surety).sort_values(["surety", "peak"], ascending=False, kind="stable")
    best = ranked.iloc[0]
    name, faces, count = best["most common class"], int(best["faces"]), int(best["count"])
    index = list(class_names).index(name) if class_names is not None else int(name)
    base = float((labels == index).sum() / labelled)
    tied = [int(i) for i in ranked.index[ranked["surety"] == best["surety"]]]
    if len(tied) > 1:  # as sure as one another: none of them is "the" most selective
        listed = ", ".join(str(i) for i in sorted(tied)[:-1]) + f" and {sorted(tied)[-1]}"
        lead = f"Filters {listed} of {top.layer_name} tie as the most selective of {n_filters}; filter {best.name}: "
    else:
        lead = f"Filter {best.name} of {top.layer_name} is the most selective of {n_filters}: "
    # Against a filter blind to expression, whose faces would be of this class at its base rate.
    p = float(binomtest(count, faces, base, alternative="greater").pvalue)
    above = "above" if p < 0.05 else "not clearly above"
    return (f"{lead}{count} of the {faces} faces that drive it hardest are {name} "
            f"({name} is {base:.0%} of the {labelled} labelled faces searched; binomial p = {p:.2g}, {above} what a "
            f"filter blind to expression would show).{tail}")


def describe_presets(naive, readable):
    """The readable preset against plain ascent on one layer, as a sentence with its n.

    The activation ratio is the readable preset's mean activation over naive ascent's; it is
    stated only where naive ascent's is clearly positive, and otherwise called undefined with
    the reason (never inf or NaN).

    Parameters
    ----------
    naive, readable : Maximization
        :func:`maximize` on the same layer and filters, with ``preset="naive"`` and
        ``"readable"``.

    Returns
    -------
    str

    Example
    -------
    >>> print(describe_presets(naive, readable))  # doctest: +SKIP
    On block3_act2 (6 filters): readable noise 0.21, naive noise 0.75 (white noise is about 0.8); the readable preset ends at 64% of naive's activation (4.62 against 7.25).
    """
    func = "fervis.filters.describe_presets"
    for name, result in (("naive", naive), ("readable", readable)):
        if not isinstance(result, Maximization) or len(result) == 0:
            raise ValueError(f"The {name!r} parameter of {func} must be a Maximization from fervis.filters.maximize. "
                             f"Got {type(result).__name__} instead.")
    if naive.layer_name != readable.layer_name:
        raise ValueError(f"The 'readable' parameter of {func} must be on the layer of 'naive', {naive.layer_name!r}. "
                         f"Got {readable.layer_name!r} instead.")
    a_naive, a_readable = float(naive.activation.mean()), float(readable.activation.mean())
    n = len(naive.filters)
    ratio, why = _ratio(a_readable, a_naive, "naive ascent's mean activation")
    reached = (f"at {ratio:.0%} of naive's activation ({a_readable:.2f} against {a_naive:.2f})" if ratio is not None
               else f"with mean activation {a_readable:.2f}; its ratio to naive's is undefined: {why}")
    origins = list(naive.start or ())
    counts = ((origins.count("full-range noise"), "full-range noise"),
              (sum(o.startswith("face ") for o in origins), "a real face"))
    parts = [f"{text} for {count}" for count, text in counts if count]
    note = (f" Where a filter was silent on grey noise, plain ascent started from {' and from '.join(parts)} "
            f"of its {len(naive)} images." if parts else "")
    return (f"On {naive.layer_name} ({n} filter{'s' if n != 1 else ''}): readable noise {readable.noise.mean():.2f}, "
            f"naive noise {naive.noise.mean():.2f} (white noise is about 0.8); the readable preset ends {reached}.{note}")


def preset_table(results):
    """Activation, share of the best face and noise of several ascents, one row per result.

    Parameters
    ----------
    results : dict
        ``(layer_name, preset) -> Maximization`` (or any key -> Maximization).

    Returns
    -------
    pandas.DataFrame
        Columns ``layer``, ``preset``, ``filters`` (n), ``activation`` (mean), ``share of best
        face`` (the mean of the defined :attr:`Maximization.fraction` values, or ``"undefined"``),
        ``noise`` (mean) and ``note`` (why a share is undefined, or how many of its
        ``fraction`` values are).

    Example
    -------
    >>> preset_table({("block3_act2", "naive"): naive}).columns.tolist()  # doctest: +SKIP
    ['layer', 'preset', 'filters', 'activation', 'share of best face', 'noise', 'note']
    """
    import pandas as pd

    if not isinstance(results, dict) or not all(isinstance(r, Maximization) for r in results.values()):
        raise ValueError("The 'results' parameter of fervis.filters.preset_table must be a dict of Maximization "
                         f"results. Got {type(results).__name__} instead.")
    rows = []
    for result in results.values():
        defined = np.isfinite(result.fraction)
        notes = [n for n in (result.fraction_note or ()) if n]
        if defined.all():
            share, note = round(float(result.fraction.mean()), 2), ""
        elif defined.any():
            share = round(float(result.fraction[defined].mean()), 2)
            note = f"share over {int(defined.sum())} of {len(result)} images; undefined for the rest: {notes[0]}"
        else:
            share, note = "undefined", notes[0] if notes else "no real faces given"
        rows.append({"layer": result.layer_name, "preset": result.preset, "filters": len(result.filters),
                     "activation": float(result.activation.mean()), "share of best face": share,
                     "noise": float(result.noise.mean()), "note": note})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- feature maps


def feature_maps(model, images, layer_name, batch_size=256):
    """What a layer outputs on faces: one map per filter.

    Parameters
    ----------
    model : keras.Model
    images : array (n, 48, 48) or (n, 48, 48, 1), 0-255, or a Dataset
    layer_name : str
        A layer with a spatial output.
    batch_size : int, default 256

    Returns
    -------
    ndarray, float32, (n, h, w, c)

    Example
    -------
    >>> feature_maps(models.build("tiny"), np.zeros((2, 48, 48)), "block2_conv").shape
    (2, 24, 24, 16)
    """
    func = "fervis.filters.feature_maps"
    face_model(model, func, classifier=False)
    layer_name = _check_layer(model, layer_name, func, spatial=True)
    batch_size = positive_int(batch_size, "batch_size", func)
    faces = _images(images, func)
    part = models.truncate_at(model, layer_name)
    out = [np.asarray(part(tf.constant(faces[i:i + batch_size, ..., None], tf.float32), training=False))
           for i in range(0, len(faces), batch_size)]
    return np.concatenate(out).astype(np.float32)


# --------------------------------------------------------------------------- receptive fields


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def _rf_conv(stats, kernel, strides, dilation, padding, in_size):
    j, lo, hi = stats
    out = []
    for axis in range(2):
        k = dilation[axis] * (kernel[axis] - 1) + 1
        s = strides[axis]
        if padding == "same":
            n_out = -(-in_size[axis] // s)
            pad = max((n_out - 1) * s + k - in_size[axis], 0) // 2
        else:
            pad = 0
        out.append((j[axis] * s, lo[axis] - pad * j[axis], hi[axis] + (k - 1 - pad) * j[axis]))
    return tuple(np.array(v, dtype=np.float64) for v in zip(*out))


def _rf_layer(layer, inputs, in_shapes, out_shape):
    """Receptive-field stats (jump, lo, hi per axis) of a layer's output, or None (non-spatial
    or not known: the whole image)."""
    L = keras.layers
    if len(out_shape) != 4 or any(s is None for s in inputs) or not inputs:
        return None
    stats, in_size = inputs[0], tuple(in_shapes[0][1:3])
    if isinstance(layer, (L.Conv2D, L.DepthwiseConv2D, L.SeparableConv2D)) and not isinstance(
            layer, L.Conv2DTranspose):
        return _rf_conv(stats, _pair(layer.kernel_size), _pair(layer.strides), _pair(layer.dilation_rate),
                        layer.padding, in_size)
    if isinstance(layer, (L.MaxPooling2D, L.AveragePooling2D)):
        return _rf_conv(stats, _pair(layer.pool_size), _pair(layer.strides), (1, 1), layer.padding, in_size)
    j, lo, hi = stats
    if isinstance(layer, L.ZeroPadding2D):
        before = np.array([layer.padding[0][0], layer.padding[1][0]], np.float64)
        return j, lo - before * j, hi - before * j
    if isinstance(layer, L.Cropping2D):
        before = np.array([layer.cropping[0][0], layer.cropping[1][0]], np.float64)
        return j, lo + before * j, hi + before * j
    out_size = tuple(out_shape[1:3])
    if isinstance(layer, (L.Resizing, L.UpSampling2D)) and None not in in_size + out_size:
        factor = np.array(out_size, np.float64) / np.array(in_size, np.float64)
        centre = 0.5 / factor - 0.5  # input coordinate of output unit 0 (half-pixel centres)
        # bilinear (or nearest) reads the input units within one unit of that coordinate
        return j / factor, lo + (centre - 1.0) * j, hi + (centre + 1.0) * j
    if out_size != in_size or any(tuple(s[1:3]) != out_size for s in in_shapes):
        return None  # an unknown layer that changes the grid: assume it sees everything
    # element-wise or channel-wise layers (batch norm, activations, add, concatenate, ...)
    return (j, np.minimum.reduce([s[1] for s in inputs]), np.maximum.reduce([s[2] for s in inputs]))


def _rf_tensor(tensor, memo):
    key = id(tensor)
    if key in memo:
        return memo[key]
    layer, node_index, tensor_index = tensor._keras_history
    node = layer._inbound_nodes[node_index]
    inputs = list(node.input_tensors)
    if not inputs:
        raise ValueError(f"Cannot trace the receptive field through layer {layer.name!r}: it has no input.")
    stats = [_rf_tensor(t, memo) for t in inputs]
    if isinstance(layer, keras.Model):  # a nested model: trace inside, from its own inputs
        inner = {id(t): s for t, s in zip(layer.inputs, stats)}
        result = _rf_tensor(layer.outputs[tensor_index], inner)
    else:
        result = _rf_layer(layer, stats, [tuple(t.shape) for t in inputs], tuple(tensor.shape))
    memo[key] = result
    return result


def receptive_field(model, layer_name):
    """The receptive field of a layer's units, derived from the layer stack.

    Convolutions and poolings (kernel, stride, dilation, padding), zero-padding, cropping and
    resizing move it; element-wise layers take the union of their inputs' fields. A layer
    without spatial output, or one after a layer fervis cannot trace, sees the whole image.

    Parameters
    ----------
    model : keras.Model
    layer_name : str

    Returns
    -------
    ReceptiveField

    Example
    -------
    >>> receptive_field(models.build("tiny"), "block2_conv").size
    (8, 8)
    """
    func = "fervis.filters.receptive_field"
    face_model(model, func, classifier=False)
    layer_name = _check_layer(model, layer_name, func)
    part = models.truncate_at(model, layer_name)
    memo = {id(part.inputs[0]): (np.ones(2), np.zeros(2), np.zeros(2))}
    stats = _rf_tensor(part.outputs[0], memo)
    full = (IMAGE_SIZE, IMAGE_SIZE)
    if stats is None:
        spatial = len(part.output_shape) == 4
        return ReceptiveField(size=full, jump=(0.0, 0.0), start=((IMAGE_SIZE - 1) / 2,) * 2, spatial=spatial)
    j, lo, hi = stats
    size = tuple(int(min(math.ceil(h - lo_ + 1 - 1e-9), IMAGE_SIZE)) for lo_, h in zip(lo, hi))
    start = tuple(float((a + b) / 2) for a, b in zip(lo, hi))
    return ReceptiveField(size=size, jump=tuple(float(v) for v in j), start=start)


# --------------------------------------------------------------------------- dataset exemplars


def top_activating(model, dataset, layer_name, filter_idx=None, k=9, batch_size=256):
    """The k faces that drive each filter hardest, and the receptive-field crop around the peak.

    One pass over the dataset serves every filter of the layer.

    Parameters
    ----------
    model : keras.Model
    dataset : Dataset or array (n, 48, 48)
    layer_name : str
    filter_idx : int, list of int or None, default None
        ``None`` means every filter of the layer.
    k : int, default 9
        Faces per filter (at most the dataset's size).
    batch_size : int, default 256

    Returns
    -------
    Exemplars
        ``faces`` ``(f, k, 48, 48)`` uint8, ``crops`` ``(f, k, r, r)`` uint8, the peak
        ``values``, ``positions`` and ``boxes``, and the dataset ``indices``.

    Example
    -------
    >>> from fervis.data import load
    >>> ex = top_activating(models.build("tiny"), load("synthetic"), "block2_conv", [0, 5], k=4)
    >>> ex.crops.shape
    (2, 4, 8, 8)
    """
    func = "fervis.filters.top_activating"
    face_model(model, func, classifier=False)
    layer_name = _check_layer(model, layer_name, func)
    width = int(models.find_layer(model, layer_name).output.shape[-1])
    filters = _check_filters(filter_idx, width, layer_name, func, allow_none=True)
    k = positive_int(k, "k", func)
    batch_size = positive_int(batch_size, "batch_size", func)
    faces = _images(dataset, func, "dataset")
    k = min(k, len(faces))
    part = models.truncate_at(model, layer_name)
    _, peaks, where = _layer_stats(part, faces, batch_size)
    field = receptive_field(model, layer_name)
    out_shape = part.output_shape
    map_width = out_shape[2] if len(out_shape) == 4 else 1
    indices = np.empty((len(filters), k), np.int64)
    for row, f in enumerate(filters):
        indices[row] = np.argsort(-peaks[:, f], kind="stable")[:k]
    cols = np.asarray(filters)[:, None]
    values = peaks[indices, cols].astype(np.float32)
    flat = where[indices, cols]
    positions = np.stack([flat // map_width, flat % map_width], axis=-1).astype(np.int64)
    boxes = np.empty((len(filters), k, 4), np.int64)
    for idx in np.ndindex(len(filters), k):
        boxes[idx] = field.box(*positions[idx]) if field.spatial else (0, 0, IMAGE_SIZE, IMAGE_SIZE)
    height, width_px = boxes[0, 0, 2] - boxes[0, 0, 0], boxes[0, 0, 3] - boxes[0, 0, 1]
    chosen = np.asarray(faces[indices.ravel()], dtype=np.uint8).reshape(len(filters), k, IMAGE_SIZE, IMAGE_SIZE)
    crops = np.empty((len(filters), k, height, width_px), np.uint8)
    for idx in np.ndindex(len(filters), k):
        y0, x0, y1, x1 = boxes[idx]
        crops[idx] = chosen[idx][y0:y1, x0:x1]
    return Exemplars(filter_idx=np.asarray(filters, np.int64), indices=indices, values=values,
                     positions=positions, boxes=boxes, faces=chosen, crops=crops,
                     receptive_field=field, layer_name=layer_name)
