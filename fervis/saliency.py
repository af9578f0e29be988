"""Where does the model look? Saliency maps, and numbers that say whether to trust them.

One signature for eight methods, :func:`explain` (``explain(model, images, method, class_idx,
options={...})``, each method's options in :data:`METHOD_OPTIONS`):

=====================  ===================================================================
``gradient``           vanilla gradients of the class score w.r.t. the pixels (Simonyan et
                       al., "Deep Inside Convolutional Networks", 2014)
``smoothgrad``         gradients averaged over noisy copies (Smilkov et al., "SmoothGrad:
                       removing noise by adding noise", 2017)
``integrated_gradients``  path integral from a black image (Sundararajan et al., "Axiomatic
                       Attribution for Deep Networks", 2017)
``gradcam``            channel-weighted activations of a conv layer (Selvaraju et al.,
                       "Grad-CAM", 2017)
``gradcam++``          higher-order channel weights (Chattopadhay et al., "Grad-CAM++", 2018)
``scorecam``           weights from the score of the input masked by each channel (Wang et
                       al., "Score-CAM", 2020), optionally on the top-N channels only
                       ("Faster Score-CAM")
``layercam``           positive gradients as per-position weights (Jiang et al.,
                       "LayerCAM", 2021)
``lime``               a local linear model of the class probability over SLIC superpixels
                       switched off at random (Ribeiro et al., "Why Should I Trust You?",
                       KDD 2016; Achanta et al., SLIC, TPAMI 2012); not in :data:`METHODS`,
                       so loops over the gradient and CAM methods do not run it unasked
                       (:data:`ALL_METHODS` has it)
=====================  ===================================================================

A LIME map is each superpixel's weight spread over its pixels, its positive part (the evidence
*for* the class; ``options={"sign": "signed"}`` keeps the weights against it, as
:func:`fervis.labels.lime_explain` does), so :func:`faithfulness`, :func:`region_shares`, the
saliency explorer and :func:`fervis.labels.cell_saliency` take it like any other map. LIME runs
``lime.lime_image`` with the perturbed copies built in one numpy step and scored by
:func:`fervis.models.predict` (forward passes only, in one traced graph).

The numbers: :func:`region_shares` (how the saliency mass splits over face regions, also
per unit of area), :func:`cue_check` (on synthetic faces, the mass on the regions that
carry each class's cue against their area), :func:`occlusion_check` (the drop in class
probability when a region is greyed out), :func:`deletion_insertion` and
:func:`faithfulness` (Petsiuk et al., "RISE: Randomized Input Sampling for Explanation of
Black-box Models", 2018, against a random-map baseline) and :func:`randomization_check`
(Adebayo et al., "Sanity Checks for Saliency Maps", 2018: cascading re-initialisation from
the top, Spearman rank correlation with the trained model's maps).

Why not tf-keras-vis' visualizers directly: they record the gradient tape eagerly, and TF
2.21's oneDNN kernels corrupt the heap on eager input gradients through some convolutions
(docs/architecture.md, "Known trap"); they also trace or clone per call. Here every method
is one ``tf.function`` per (model, method, layer), traced once with a batch dimension of
``None`` and reused for every batch and every later call, on the model's own weights (so
a model that keeps training is explained as it is now).

Scores are the class logits: for a softmax output, the softmax is bypassed while the graph
is traced (:func:`fervis.models.bypass_softmax`, what tf-keras-vis' ``ReplaceToLinear`` does,
without cloning the model, so the graph follows its live weights; :func:`fervis.models.to_logits`
is the copying twin, and both find the softmax with :func:`fervis.models.softmax_layer`).
Score-CAM scores masked inputs by their probability, as its paper does.
"""

from __future__ import annotations

import dataclasses
import types
import weakref

import numpy as np

from fervis._checks import (class_indices, class_labels, default_names, is_dataset, max_steps, positive_int, real,
                            region_ids, saliency_maps)
from fervis._checks import image_model as _check_model
from fervis._checks import images_for as _check_images
from fervis.constants import CLASS_NAMES

__all__ = [
    "METHODS", "GRADIENT_METHODS", "CAM_METHODS", "ALL_METHODS", "METHOD_NAMES", "METHOD_OPTIONS", "MIN_FACES",
    "method_label", "map_problems", "spearman", "lime_segments",
    "degenerate_note", "explain", "predict", "pick_examples", "per_class",
    "class_mean_maps", "region_shares", "cue_check", "occlusion_check", "deletion_insertion",
    "Faithfulness", "faithfulness", "Randomization", "randomization_check", "describe",
]

GRADIENT_METHODS = ("gradient", "smoothgrad", "integrated_gradients")
CAM_METHODS = ("gradcam", "gradcam++", "scorecam", "layercam")
METHODS = GRADIENT_METHODS + CAM_METHODS
#: Every method :func:`explain` takes: :data:`METHODS` and LIME (model-agnostic, slower: a
#: thousand forward passes per face by default).
ALL_METHODS = METHODS + ("lime",)

_CAM_OPTIONS = types.MappingProxyType({"layer_name": None})
#: Each method's options, with their defaults, for ``explain(..., options={...})`` (unknown names are
#: refused). ``samples`` and ``steps`` of the gradient methods are capped by ``$FERVIS_MAX_STEPS``.
METHOD_OPTIONS = types.MappingProxyType({
    "gradient": types.MappingProxyType({}),
    "smoothgrad": types.MappingProxyType({"samples": 20, "noise": 0.15, "seed": 0}),
    "integrated_gradients": types.MappingProxyType({"steps": 32}),
    "gradcam": _CAM_OPTIONS,
    "gradcam++": _CAM_OPTIONS,
    "scorecam": types.MappingProxyType({"layer_name": None, "top_n": None}),
    "layercam": _CAM_OPTIONS,
    "lime": types.MappingProxyType({"samples": 1000, "num_segments": 50, "segments": None, "seed": 0,
                                    "kernel_width": 0.25, "hide_color": None, "sign": "positive"}),
})

_FUNC = "fervis.saliency.explain"
# One dict of traced graphs per model; weak keys, so a model that goes away takes its graphs.
_GRAPHS = weakref.WeakKeyDictionary()


# --------------------------------------------------------------------------- checks


def _check_class_idx(class_idx, n, num_classes, func=_FUNC):
    """Per-image class indices, int32 ``(n,)`` (-1: the predicted class); class names allowed."""
    return class_indices(class_idx, n, func, default_names(num_classes)).astype(np.int32)


def _check_regions(regions, n, shape, region_names, func):
    """``(ids, region_names)``: one id map per image (a template is broadcast to all), ids checked
    against ``region_names``; a Dataset stands for its regions (:func:`fervis.regions.for_dataset`)
    and, when ``region_names`` is None, for their names (:func:`fervis.regions.names_for`)."""
    from fervis import regions as region_maps

    if is_dataset(regions):
        own = region_maps.names_for(regions)
        if region_names is None:
            region_names = own
        elif isinstance(region_names, str) or list(region_names) != list(own):
            raise ValueError(
                f"The 'region_names' parameter of {func} must be None or the names of the Dataset's regions, "
                f"{list(own)}. Got {region_names!r} instead."
            )
        regions = region_maps.for_dataset(regions)
    if region_names is None or isinstance(region_names, str) or len(region_names) == 0:
        raise ValueError(
            f"The 'region_names' parameter of {func} must be a sequence of names, one per region id "
            f"(None only when 'regions' is a Dataset). Got {region_names!r} instead."
        )
    array = region_ids(regions, len(region_names), func, n=n, shape=shape)
    return (np.broadcast_to(array, (n,) + tuple(shape)) if array.ndim == 2 else array), tuple(region_names)


# --------------------------------------------------------------------------- graphs


class _Patch:
    """Temporarily override attributes of layers while a graph is traced; always restored."""

    def __init__(self):
        self._saved = []

    def set(self, obj, name, value):
        had = name in obj.__dict__
        self._saved.append((obj, name, had, obj.__dict__.get(name)))
        object.__setattr__(obj, name, value)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for obj, name, had, old in reversed(self._saved):
            if had:
                object.__setattr__(obj, name, old)
            else:
                object.__delattr__(obj, name)
        self._saved.clear()
        return False


def _capture(patch, layer, tape, found):
    """Record (and watch) ``layer``'s output during the traced forward pass."""
    original = layer.call

    def hooked(*args, **kwargs):
        out = original(*args, **kwargs)
        tape.watch(out)
        found.append(out)
        return out

    patch.set(layer, "call", hooked)


def _graph(model, key, build):
    graphs = _GRAPHS.setdefault(model, {})
    if key not in graphs:
        graphs[key] = build(weakref.ref(model))
    return graphs[key]


def _forward_graph(model, logits=False):
    import tensorflow as tf

    from fervis import models

    if not logits:
        return models.forward_graph(model)  # the package's one forward path and its cache
    h, w, c = model.input_shape[1:]

    def build(ref):
        @tf.function(input_signature=[tf.TensorSpec([None, h, w, c], tf.float32)], reduce_retracing=True)
        def forward(x):
            with models.bypass_softmax(ref()):
                return ref()(x, training=False)

        return forward

    return _graph(model, ("forward", logits), build)


def _pick(scores, class_idx):
    """The score of each image's class; -1 means the predicted class."""
    import tensorflow as tf

    predicted = tf.cast(tf.argmax(scores, axis=-1), tf.int32)
    chosen = tf.where(class_idx < 0, predicted, class_idx)
    return tf.gather(scores, chosen, axis=1, batch_dims=1), chosen


def _gradient_graph(model):
    """Input gradients of the class logit, plus the class used, for a batch."""
    import tensorflow as tf

    from fervis import models

    h, w, c = model.input_shape[1:]

    def build(ref):
        @tf.function(input_signature=[tf.TensorSpec([None, h, w, c], tf.float32),
                                      tf.TensorSpec([None], tf.int32)], reduce_retracing=True)
        def gradient(x, class_idx):
            with models.bypass_softmax(ref()):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    score, chosen = _pick(ref()(x, training=False), class_idx)
                return tape.gradient(score, x), chosen

        return gradient

    return _graph(model, ("gradient",), build)


def _smoothgrad_graph(model):
    import tensorflow as tf

    h, w, c = model.input_shape[1:]
    gradient = _gradient_graph(model)
    forward = _forward_graph(model, logits=True)

    def build(ref):
        @tf.function(input_signature=[
            tf.TensorSpec([None, h, w, c], tf.float32), tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.float32), tf.TensorSpec([2], tf.int32),
        ], reduce_retracing=True)
        def smoothgrad(x, class_idx, samples, noise, seed):
            _, chosen = _pick(forward(x), class_idx)  # the class of the clean image
            # Noise scale per image: a fraction of its own value range (Smilkov et al. 2017).
            spread = tf.reduce_max(x, axis=[1, 2, 3], keepdims=True) - tf.reduce_min(x, axis=[1, 2, 3], keepdims=True)
            total = tf.zeros_like(x)
            for i in tf.range(samples):
                eps = tf.random.stateless_normal(tf.shape(x), seed=tf.random.experimental.stateless_fold_in(seed, i))
                g, _ = gradient(x + noise * spread * eps, chosen)
                total += g
            return total / tf.cast(samples, tf.float32), chosen

        return smoothgrad

    return _graph(model, ("smoothgrad",), build)


def _integrated_graph(model):
    import tensorflow as tf

    h, w, c = model.input_shape[1:]
    gradient = _gradient_graph(model)
    forward = _forward_graph(model, logits=True)

    def build(ref):
        @tf.function(input_signature=[tf.TensorSpec([None, h, w, c], tf.float32), tf.TensorSpec([None], tf.int32),
                                      tf.TensorSpec([], tf.int32)], reduce_retracing=True)
        def integrated(x, class_idx, steps):
            _, chosen = _pick(forward(x), class_idx)
            total = tf.zeros_like(x)
            n = tf.cast(steps, tf.float32)
            for k in tf.range(steps):  # midpoint rule from the black image (all zeros)
                alpha = (tf.cast(k, tf.float32) + 0.5) / n
                g, _ = gradient(alpha * x, chosen)
                total += g
            return x * total / n, chosen

        return integrated

    return _graph(model, ("integrated_gradients",), build)


def _upsample(cam, size):
    import tensorflow as tf

    return tf.image.resize(cam[..., None], size, method="bilinear")[..., 0]


def _cam_graph(model, layers, variant):
    """Grad-CAM, Grad-CAM++ or LayerCAM of ``layers`` for a batch, resized to the input.

    Several layers (an ensemble's members' CAM layers) give one map: the sum of each
    layer's map before the ReLU, each at the input's size. The class score is the members'
    mean logit, so each layer's gradient is its member's share of it.
    """
    import tensorflow as tf

    from fervis import models

    h, w, c = model.input_shape[1:]

    def build(ref):
        @tf.function(input_signature=[tf.TensorSpec([None, h, w, c], tf.float32),
                                      tf.TensorSpec([None], tf.int32)], reduce_retracing=True)
        def cam(x, class_idx):
            found = [[] for _ in layers]
            with models.bypass_softmax(ref()), _Patch() as patch:
                with tf.GradientTape() as tape:
                    for layer, into in zip(layers, found):
                        _capture(patch, layer, tape, into)
                    score, chosen = _pick(ref()(x, training=False), class_idx)
            acts = [into[-1] for into in found]
            outs = []
            for a, grads in zip(acts, tape.gradient(score, acts)):
                if variant == "gradcam":
                    weights = tf.reduce_mean(grads, axis=[1, 2], keepdims=True)
                    out = tf.reduce_sum(weights * a, axis=-1)
                elif variant == "gradcam++":
                    # Chattopadhay et al. 2018, eq. 19 with the exponential of the score, whose
                    # factors cancel in alpha and only scale the map.
                    g2, g3 = grads ** 2, grads ** 3
                    denom = 2.0 * g2 + tf.reduce_sum(a, axis=[1, 2], keepdims=True) * g3
                    alpha = g2 / tf.where(denom != 0.0, denom, tf.ones_like(denom))
                    norm = tf.reduce_sum(alpha, axis=[1, 2], keepdims=True)  # as the authors' code does
                    alpha = alpha / tf.where(norm != 0.0, norm, tf.ones_like(norm))
                    weights = tf.reduce_sum(alpha * tf.nn.relu(grads), axis=[1, 2], keepdims=True)
                    out = tf.reduce_sum(weights * a, axis=-1)
                else:  # layercam
                    out = tf.reduce_sum(tf.nn.relu(grads) * a, axis=-1)
                outs.append(out)
            if len(outs) == 1:
                return _upsample(tf.nn.relu(outs[0]), (h, w)), chosen
            return tf.nn.relu(tf.add_n([_upsample(out, (h, w)) for out in outs])), chosen

        return cam

    return _graph(model, ("cam", variant) + tuple((layer.name, id(layer)) for layer in layers), build)


def _scorecam_graph(model, layers):
    """Score-CAM of ``layers``; several layers pool their channels, each resized to the input."""
    import tensorflow as tf

    h, w, c = model.input_shape[1:]
    forward = _forward_graph(model)

    def build(ref):
        @tf.function(input_signature=[tf.TensorSpec([None, h, w, c], tf.float32), tf.TensorSpec([None], tf.int32),
                                      tf.TensorSpec([], tf.int32)], reduce_retracing=True)
        def scorecam(x, class_idx, top_n):
            found = [[] for _ in layers]
            with _Patch() as patch:
                with tf.GradientTape() as tape:  # only used to capture the activations
                    for layer, into in zip(layers, found):
                        _capture(patch, layer, tape, into)
                    probs = ref()(x, training=False)
            if len(found) == 1:
                acts = found[0][-1]
            else:
                acts = tf.concat([tf.image.resize(into[-1], (h, w), method="bilinear") for into in found], axis=-1)
            _, chosen = _pick(probs, class_idx)
            # Faster Score-CAM: keep the top_n channels of largest spatial spread, per image.
            spread = tf.math.reduce_std(acts, axis=[1, 2])
            top_n = tf.minimum(top_n, tf.shape(acts)[-1])
            _, keep = tf.math.top_k(spread, k=top_n)
            kept = tf.gather(acts, keep, axis=3, batch_dims=1)
            b, fh, fw = tf.shape(kept)[0], tf.shape(kept)[1], tf.shape(kept)[2]
            flat = tf.reshape(tf.transpose(kept, [0, 3, 1, 2]), [b * top_n, fh, fw])
            masks = tf.reshape(_upsample(flat, (h, w)), [b, top_n, h, w])
            low = tf.reduce_min(masks, axis=[2, 3], keepdims=True)
            high = tf.reduce_max(masks, axis=[2, 3], keepdims=True)
            masks = (masks - low) / tf.maximum(high - low, 1e-7)
            weights = tf.TensorArray(tf.float32, size=top_n)
            for k in tf.range(top_n):
                p = forward(x * masks[:, k, :, :, None])
                weights = weights.write(k, tf.gather(p, chosen, axis=1, batch_dims=1))
            weights = tf.transpose(weights.stack())  # (b, top_n)
            out = tf.nn.relu(tf.einsum("bk,bhwk->bhw", weights, kept))
            return _upsample(out, (h, w)), chosen

        return scorecam

    return _graph(model, ("scorecam",) + tuple((layer.name, id(layer)) for layer in layers), build)


def _cam_layers(model, layer_name, method):
    """The layers a CAM weighs: ``layer_name`` (a name or a list of names), by default the last
    spatial feature map after its nonlinearity, or each member's in an ensemble
    (:func:`fervis.models.cam_layers`)."""
    from fervis import models

    convs = models.conv_layers(model)
    if layer_name is None:
        if not convs:
            raise ValueError(
                f"The 'method' parameter of {_FUNC} is {method!r}, which needs a convolution layer, but model "
                f"{model.name!r} has none. Use one of {list(GRADIENT_METHODS)} for this model instead."
            )
        layer_name = models.cam_layers(model)
    names = [layer_name] if isinstance(layer_name, str) else layer_name
    valid = isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names)
    canonical = [models.canonical_layer_name(model, n) for n in names] if valid else []
    if not valid or len(set(canonical)) != len(names):
        raise ValueError(
            f"The 'layer_name' parameter of {_FUNC} must be None (the default CAM layer), a layer name such as one "
            f"of {convs}, or a list of distinct ones. Got {layer_name!r} instead."
        )
    layers = dict(models.named_layers(model))
    found = []
    for name, key in zip(names, canonical):
        layer = layers.get(key)
        rank = None
        if layer is not None:
            try:
                rank = len(layer.output.shape)
            except (AttributeError, ValueError):
                rank = None
        if layer is None or rank != 4:
            why = "no such layer" if layer is None else "its output is not a (n, h, w, channels) map"
            raise ValueError(
                f"The 'layer_name' parameter of {_FUNC} must be None (the default CAM layer) or layers with spatial "
                f"output, such as the conv layers {convs}. Got {name!r} instead ({why})."
            )
        found.append(layer)
    return found


# --------------------------------------------------------------------------- degenerate maps and intervals

#: Names for output: "Grad-CAM on block4_act2".
METHOD_NAMES = {"gradient": "Gradient", "smoothgrad": "SmoothGrad", "integrated_gradients": "Integrated gradients",
                "gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "Score-CAM", "layercam": "LayerCAM",
                "lime": "LIME"}
#: Fewest faces (per class, or per class and region) a generated sentence states a finding on.
MIN_FACES = 10


def method_label(model, method, layer_name=None, options=None):
    """A method's name for titles and sentences, with the layer a CAM weighs.

    Parameters
    ----------
    model : keras.Model
    method : str
        One of :data:`ALL_METHODS`.
    layer_name : str, list of str or None
        As for :func:`explain`; ``None`` names the default layer (:func:`fervis.models.cam_layers`).
    options : mapping, optional
        As for :func:`explain`: its ``layer_name`` is the layer named.

    Returns
    -------
    str
        ``"Grad-CAM on block4_act2"``, ``"SmoothGrad"``; an ensemble's layers joined by " + ".

    Example
    -------
    >>> method_label(model, "gradcam")  # doctest: +SKIP
    'Grad-CAM on block4_act2'
    """
    from fervis import models

    if not isinstance(method, str) or method not in ALL_METHODS:
        raise ValueError(f"The 'method' parameter of fervis.saliency.method_label must be one of "
                         f"{list(ALL_METHODS)}. Got {method!r} instead.")
    if method not in CAM_METHODS:
        return METHOD_NAMES[method]
    layer_name = _options(method, options, {"layer_name": layer_name}, 0, (1, 1, 1))["layer_name"]
    layers = _cam_layers(model, layer_name, method)
    return f"{METHOD_NAMES[method]} on " + " + ".join(models.path_of(model, layer) for layer in layers)


def map_problems(maps, rtol=1e-6):
    """Which maps are unusable: empty (all zero), constant, or holding NaN or inf.

    The one rule every aggregate of this module applies: such maps are left out and
    counted, and plots mark them. An empty CAM usually means a layer before its
    nonlinearity (signed channels whose weighted sum is negative everywhere) or a class the
    model sees no evidence for.

    Parameters
    ----------
    maps : array ``(n, h, w)``
    rtol : float, default 1e-6
        A map whose range is at most ``rtol`` times its largest magnitude is constant.

    Returns
    -------
    ndarray of str ``(n,)``
        ``""`` for a usable map, else ``"non-finite"``, ``"empty"`` or ``"constant"``.

    Example
    -------
    >>> map_problems(np.stack([np.zeros((4, 4)), np.eye(4), np.full((4, 4), 2.0)])).tolist()
    ['empty', '', 'constant']
    """
    array = np.asarray(maps)
    if array.ndim < 2 or array.dtype.kind not in "uifb":
        raise ValueError(f"The 'maps' parameter of fervis.saliency.map_problems must be a numeric array shaped "
                         f"(n, h, w). Got dtype {array.dtype} and shape {array.shape} instead.")
    flat = array.reshape(len(array), -1).astype(np.float64)
    out = np.full(len(flat), "", dtype=object)
    if not flat.size:
        return out
    finite = np.isfinite(flat).all(axis=1)
    safe = np.where(np.isfinite(flat), flat, 0.0)
    peak = np.abs(safe).max(axis=1)
    spread = safe.max(axis=1) - safe.min(axis=1)
    out[spread <= rtol * peak] = "constant"
    out[peak == 0] = "empty"
    out[~finite] = "non-finite"
    return out


def degenerate_note(maps, label="maps"):
    """One warning line with the number of unusable maps (:func:`map_problems`) and the likely
    cause, or ``""`` when there are none.

    Example
    -------
    >>> degenerate_note(np.zeros((3, 4, 4)), "Grad-CAM on block4_conv2")  # doctest: +ELLIPSIS
    'Warning: 3 of 3 Grad-CAM on block4_conv2 maps are degenerate (3 empty) and left out...'
    """
    problems = map_problems(maps)
    bad = problems[problems != ""]
    if not len(bad):
        return ""
    kinds = ", ".join(f"{int((bad == k).sum())} {k}" for k in ("empty", "constant", "non-finite") if (bad == k).any())
    return (f"Warning: {len(bad)} of {len(problems)} {label} maps are degenerate ({kinds}) and left out of every "
            "average; likely cause: a layer before its nonlinearity, or faces the model sees no evidence of the "
            "class in.")


def _class_region_frame(values, index, region_names, present):
    """Rows of per-region values as a classes x regions table, keeping the regions ``present``."""
    import pandas as pd

    table = pd.DataFrame(np.array(values).reshape(len(values), len(region_names)), index=index,
                         columns=list(region_names))
    table = table.loc[:, present]
    table.index.name = "class"
    table.columns.name = "region"
    return table


def _boot_means(values, n_boot, rng):
    """``(n_boot, r)`` means of resampled rows of ``values`` ``(m, r)``, NaN entries left out.

    Resampling with multinomial weights turns every resample into one matrix product, and
    NaN (a region a face does not have) is skipped per column; scipy.stats.bootstrap does
    neither.
    """
    m = len(values)
    finite = np.isfinite(values)
    filled, present = np.where(finite, values, 0.0), finite.astype(np.float64)
    # Resamples in chunks of at most ~2**22 weights (32 MB), so memory stays bounded however many
    # faces; the generator draws the rows in the same order either way.
    step = max(1, 2 ** 22 // max(m, 1))
    total, count = [], []
    for start in range(0, n_boot, step):
        weights = rng.multinomial(m, np.full(m, 1.0 / m), size=min(step, n_boot - start)).astype(np.float64)
        total.append(weights @ filled)
        count.append(weights @ present)
    total, count = np.concatenate(total), np.concatenate(count)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.where(count > 0, count, 1.0), np.nan)


def _family_level(regions, level=0.95):
    """The level of each of ``regions`` intervals that hold all at once with ``level`` (Bonferroni):
    a sentence that picks the regions above chance among a row's makes that many comparisons."""
    return 1 - (1 - level) / max(regions, 1)


def _percentiles(stats, level=0.95):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column gives NaN bounds
        low, high = np.nanpercentile(np.where(np.isfinite(stats), stats, np.nan),
                                     [50 * (1 - level), 100 - 50 * (1 - level)], axis=0)
    return low, high


# --------------------------------------------------------------------------- options


def _check_segments(segments, n, shape, func):
    array = np.asarray(segments)
    if array.shape != (n,) + tuple(shape) or array.dtype.kind not in "iu" or (array.size and array.min() < 0):
        raise ValueError(f"The 'segments' parameter of {func} must be non-negative integer superpixel ids shaped "
                         f"{(n,) + tuple(shape)}, one segmentation per image. Got dtype {array.dtype} and shape "
                         f"{array.shape} instead.")
    # ids 0 .. m-1 per image, as lime wants them
    return np.stack([np.unique(s, return_inverse=True)[1].reshape(s.shape) for s in array]) if n else array


def _check_option(method, name, value, n, input_shape, func=None):
    """One option's value, checked; the message names the option as a parameter of :func:`explain`,
    or of ``func`` (a public function that passes its own parameters on as these options)."""
    func = func or f"{_FUNC} (method {method!r})"
    if name == "samples":
        return positive_int(value, name, func, 2) if method == "lime" else max_steps(positive_int(value, name, func))
    if name == "steps":
        return max_steps(positive_int(value, name, func))
    if name == "noise":
        return real(value, name, func, 0.0, 10.0)
    if name == "seed":  # any int: each method folds it into the range its generator takes
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"The 'seed' parameter of {func} must be an int. Got {value!r} instead.")
        return int(value)
    if name == "top_n":
        return None if value is None else positive_int(value, name, func)
    if name == "num_segments":
        return positive_int(value, name, func, 2, int(input_shape[0] * input_shape[1]))
    if name == "segments":
        return None if value is None else _check_segments(value, n, input_shape[:2], func)
    if name == "kernel_width":
        return real(value, name, func, 0.0, low_open=True)
    if name == "hide_color":
        return None if value is None else real(value, name, func)
    if name == "sign":
        if not isinstance(value, str) or value not in ("positive", "signed"):
            raise ValueError(f"The 'sign' parameter of {func} must be one of ['positive', 'signed']. "
                             f"Got {value!r} instead.")
        return value
    return value  # layer_name: checked where the layers are looked up (_cam_layers)


def _options(method, options, given, n, input_shape, func=None):
    """``method``'s options: its defaults (:data:`METHOD_OPTIONS`), then the keyword spellings in
    ``given`` (``samples=...``: ``None`` is "not given"; names the method does not take are left
    alone, as they always were), then ``options``; each checked."""
    allowed = METHOD_OPTIONS[method]
    if options is None:
        options = {}
    if not hasattr(options, "keys") or isinstance(options, str):
        raise ValueError(f"The 'options' parameter of {_FUNC} must be a mapping of option names to values "
                         f"(for method {method!r}: {list(allowed)}). Got {options!r} instead.")
    unknown = [name for name in options if name not in allowed]
    if unknown:
        raise ValueError(f"The 'options' parameter of {_FUNC} holds {unknown[0]!r}, which method {method!r} does "
                         f"not take. Its options are {list(allowed)}.")
    out = dict(allowed)
    for name, value in given.items():
        if value is None or name not in allowed:
            continue
        if name in options and options[name] != value:
            raise ValueError(f"The {name!r} parameter of {_FUNC} is {value!r}, but options[{name!r}] is "
                             f"{options[name]!r}: give it once.")
        out[name] = value
    out.update(options)
    return {name: _check_option(method, name, value, n, input_shape, func) for name, value in out.items()}


# --------------------------------------------------------------------------- LIME


def lime_segments(images, num_segments=50, compactness=0.1, sigma=0.5):
    """SLIC superpixels sized for small faces: a few dozen regions that follow the features.

    The segmentation LIME switches superpixels on and off over (:func:`explain` with
    ``method="lime"``; :func:`fervis.labels.lime_segments` is this function).

    Parameters
    ----------
    images : array ``(n, h, w)`` or ``(n, h, w, c)``, or a Dataset
        Pixels as the model takes them; channels are averaged. An image with values above 1
        is read as 0-255 and divided by 255, one within [0, 1] (or [-1, 1]) is segmented as it is.
    num_segments : int, default 50
        SLIC's target; a 48x48 face gets about 30-40 connected superpixels.
    compactness : float, default 0.1
        Shape against intensity (on pixels scaled to [0, 1]): larger gives a squarer grid.
    sigma : float, default 0.5
        Gaussian smoothing before segmenting.

    Returns
    -------
    ndarray int32 ``(n, h, w)``
        Superpixel ids ``0 .. m-1`` per image, contiguous. SLIC is deterministic: the same
        image always gets the same segmentation.

    Example
    -------
    >>> lime_segments(np.zeros((1, 48, 48))).shape
    (1, 48, 48)
    """
    from skimage.segmentation import slic

    func = "fervis.saliency.lime_segments"
    array = np.asarray(getattr(images, "images", images))
    if array.dtype.kind not in "uif" or array.ndim not in (3, 4) or not np.isfinite(array).all():
        raise ValueError(f"The 'images' parameter of {func} must be finite numeric pixels shaped (n, h, w) or "
                         f"(n, h, w, channels), or a Dataset. Got dtype {array.dtype} and shape {array.shape} "
                         "instead.")
    x = array.astype(np.float32)
    x = x[..., 0] if x.ndim == 4 and x.shape[-1] == 1 else x.mean(axis=-1) if x.ndim == 4 else x
    num_segments = positive_int(num_segments, "num_segments", func, 2, int(x.shape[1] * x.shape[2]))
    compactness = real(compactness, "compactness", func, 0.0, low_open=True)
    sigma = real(sigma, "sigma", func, 0.0)
    out = np.empty(x.shape, np.int32)
    for i, face in enumerate(x):
        face = face / 255.0 if face.max() > 1.0 else face
        seg = slic(face, n_segments=num_segments, compactness=compactness, sigma=sigma, channel_axis=None,
                   start_label=0, enforce_connectivity=True)
        out[i] = np.unique(seg, return_inverse=True)[1].reshape(seg.shape)
    return out


def _lime_explainer_class():
    from lime import lime_image

    class Explainer(lime_image.LimeImageExplainer):
        """lime's explainer with the neighbourhood built in one numpy step.

        lime builds each perturbed image in a Python loop (a deep copy and one mask per
        switched-off superpixel) behind a tqdm bar; here the same random draws, in the same
        order, make all of them at once, so results equal lime's own for the same seed.
        """

        def data_labels(self, image, fudged_image, segments, classifier_fn, num_samples, batch_size=10):
            n_features = np.unique(segments).shape[0]
            data = self.random_state.randint(0, 2, num_samples * n_features).reshape((num_samples, n_features))
            data[0, :] = 1
            keep = data.astype(bool)[:, segments]
            if image.ndim == 3 and np.array_equal(image, image[..., :1].repeat(image.shape[-1], -1)):
                # A grey image in LIME's 3 channels: build one channel and show it three times
                # (a view), 30x faster than np.where over all three.
                grey = np.where(keep, image[None, ..., 0], fudged_image[None, ..., 0])
                batch = np.broadcast_to(grey[..., None], grey.shape + image.shape[-1:])
            else:
                batch = np.where(keep[..., None], image[None], fudged_image[None])
            return data, np.asarray(classifier_fn(batch))

    return Explainer


def _lime_maps(model, x, classes, opts, batch_size):
    """Signed LIME maps ``(n, h, w)``: each superpixel's weight for class ``classes[i]`` on its pixels."""
    from fervis import models

    n, h, w, c = x.shape
    segments = opts["segments"] if opts["segments"] is not None else lime_segments(x, opts["num_segments"])
    Explainer = _lime_explainer_class()
    seed = int(opts["seed"]) % 2 ** 32  # what numpy's RandomState takes

    def classifier_fn(batch):
        # LIME perturbs 3-channel copies; a grey model takes their first channel.
        return models.predict(model, batch[..., :c], batch_size=batch_size)

    maps = np.zeros((n, h, w), np.float32)
    for i in range(n):
        seg = segments[i]
        m = int(seg.max()) + 1
        # A fresh RandomState per face: a face's explanation does not depend on the others.
        explainer = Explainer(kernel_width=opts["kernel_width"], random_state=np.random.RandomState(seed))
        image = np.repeat(x[i], 3, axis=-1) if c == 1 else x[i]  # float32: half the memory of float64 copies
        k = int(classes[i])
        exp = explainer.explain_instance(
            image, classifier_fn, labels=(k,), top_labels=None, hide_color=opts["hide_color"], num_features=m,
            num_samples=opts["samples"], batch_size=opts["samples"], segmentation_fn=lambda _image, seg=seg: seg,
            random_seed=seed)
        weights = np.zeros(m)
        for feature, value in exp.local_exp[k]:
            weights[feature] = value
        maps[i] = weights[seg]
    return maps


# --------------------------------------------------------------------------- explain


def _batches(n, batch_size):
    return [(i, min(n, i + batch_size)) for i in range(0, n, batch_size)]


def predict(model, images, batch_size=256):
    """Class probabilities ``(n, num_classes)``: :func:`fervis.models.predict`, the one forward path (its
    parameters, checks and messages), here for the notebooks that import ``saliency``."""
    from fervis import models

    return models.predict(model, images, batch_size=batch_size)


def explain(model, images, method="gradient", class_idx=None, batch_size=64, layer_name=None,
            samples=None, noise=None, steps=None, top_n=None, normalize=True, seed=None, options=None, _func=None):
    """Saliency maps, one per image, with any of the eight methods: one door, one signature.

    Parameters
    ----------
    model : keras.Model
        Any Keras image classifier with one image input and one ``(n, classes)`` output;
        fervis models and :func:`fervis.models.adapt`-ed models take raw 0-255 faces.
    images : array ``(n, 48, 48)`` or ``(n, 48, 48, 1)``
        Pixels as the model takes them (uint8 or float).
    method : str, default "gradient"
        One of :data:`ALL_METHODS` (:data:`METHODS` and ``"lime"``).
    class_idx : None, int, str or array ``(n,)`` of those
        The class to explain: ``None`` the predicted class, an int or a class name (``"happy"``;
        for a model without 7 outputs the names are the indices as text) the same class for every
        image, an array one class per image (the true labels, say).
    batch_size : int, default 64
        Images per graph call (Score-CAM runs one forward pass per kept channel per batch;
        LIME scores its perturbed copies of a face in batches of this many).
    options : mapping, optional
        The method's options (:data:`METHOD_OPTIONS` lists each method's names and defaults);
        a name the method does not take is refused, naming the method and its options:

        * ``smoothgrad``: ``samples`` (20) noisy copies per image, capped by
          ``$FERVIS_MAX_STEPS``; ``noise`` (0.15), the noise standard deviation as a fraction
          of each image's value range (Smilkov et al. 2017); ``seed`` (0), the same seed gives
          the same maps.
        * ``integrated_gradients``: ``steps`` (32) path steps from a black image, capped by
          ``$FERVIS_MAX_STEPS``.
        * CAMs: ``layer_name`` (None): the layer whose activations are weighted; ``None`` is
          the last spatial feature map after its nonlinearity (``block4_act2``, not the
          convolution ``block4_conv2`` before its batch norm and ReLU, nor a classifier
          convolution with no more channels than classes), also inside nested models, or in
          an ensemble (:func:`fervis.models.ensemble`) each member's
          (:func:`fervis.models.cam_layers` states the rule; :func:`method_label` names the
          layer). Several layers give one map: the sum of their maps, each resized to the
          input, before the ReLU (Score-CAM pools their channels). ``scorecam`` also takes
          ``top_n`` (None): score only the ``top_n`` channels of largest spatial spread per
          image (Faster Score-CAM); ``None`` scores every channel.
        * ``lime``: ``samples`` (1000) perturbed copies per face (LIME's neighbourhood; not
          capped); ``num_segments`` (50), the SLIC target (:func:`lime_segments`);
          ``segments`` (None), precomputed superpixel ids ``(n, h, w)``; ``seed`` (0) seeds
          the sampling and the ridge fit; ``kernel_width`` (0.25), lime's exponential kernel
          on the cosine distance; ``hide_color`` (None): a switched-off superpixel takes its
          mean (``None``) or this value; ``sign`` ("positive"): the map is each superpixel's
          weight spread over its pixels, clipped at 0 (the evidence *for* the class), or
          ``"signed"`` to keep the weights against it too.
    layer_name, samples, noise, steps, top_n, seed : optional
        The options of those names, spelled as keywords (kept for existing calls:
        ``explain(model, x, "smoothgrad", samples=16)`` is
        ``explain(model, x, "smoothgrad", options={"samples": 16})``); ``None`` is the
        method's default, and a method without such an option ignores it.
    normalize : bool, default True
        Divide each map by its largest magnitude, so every face weighs the same in averages.

    Returns
    -------
    ndarray float32 ``(n, height, width)``
        Non-negative: the absolute gradient (or attribution) per pixel for the gradient
        methods, the ReLU of the class activation map, resized to the input, for CAMs, the
        positive superpixel weights for LIME (signed only with ``options={"sign": "signed"}``).

    Raises
    ------
    ValueError
        For an unknown method or option, a class index out of range, images of the wrong
        shape or dtype, or a CAM method on a model without convolution layers; the message
        names the parameter and what is allowed.

    Example
    -------
    >>> maps = explain(model, dataset.images[:8], method="gradcam")  # doctest: +SKIP
    >>> maps.shape  # doctest: +SKIP
    (8, 48, 48)
    >>> lime = explain(model, dataset.images[:8], "lime", options={"samples": 500})  # doctest: +SKIP
    """
    import tensorflow as tf

    from fervis import models

    if not isinstance(method, str) or method not in ALL_METHODS:
        raise ValueError(f"The 'method' parameter of {_FUNC} must be one of {list(ALL_METHODS)}. "
                         f"Got {method!r} instead.")
    input_shape, num_classes = _check_model(model, _FUNC)
    x = _check_images(images, input_shape, _FUNC)
    n = len(x)
    class_idx = _check_class_idx(class_idx, n, num_classes)
    # _func (private): the public function that hands its own parameters on (fervis.labels.lime_explain);
    # messages about batch_size and the options then name it.
    batch_size = positive_int(batch_size, "batch_size", _func or _FUNC)
    opts = _options(method, options, {"layer_name": layer_name, "samples": samples, "noise": noise, "steps": steps,
                                      "top_n": top_n, "seed": seed}, n, input_shape, _func)
    h, w = input_shape[:2]

    if method == "lime":
        if input_shape[2] not in (1, 3):
            raise ValueError(f"The 'method' parameter of {_FUNC} is 'lime', which perturbs grey or RGB images, but "
                             f"model {model.name!r} takes {input_shape[2]} channels. Use one of {list(METHODS)}.")
        if n and (class_idx < 0).any():
            class_idx = np.where(class_idx < 0, models.predict(model, x, batch_size=batch_size).argmax(axis=1),
                                 class_idx)
        maps = _lime_maps(model, x, class_idx, opts, batch_size)
        if opts["sign"] == "positive":
            maps = np.clip(maps, 0.0, None)
        return _normalized(maps) if normalize else maps
    if method == "gradient":
        call = _gradient_graph(model)
    elif method == "smoothgrad":
        graph = _smoothgrad_graph(model)
        # one seed per batch
        seeds = [tf.constant([int(opts["seed"]) % (2 ** 31), a], tf.int32) for a, _ in _batches(n, batch_size)]
        batches = iter(seeds)

        def call(xb, cb):
            return graph(xb, cb, tf.constant(opts["samples"]), tf.constant(float(opts["noise"])), next(batches))
    elif method == "integrated_gradients":
        graph = _integrated_graph(model)

        def call(xb, cb):
            return graph(xb, cb, tf.constant(opts["steps"]))
    else:
        layers = _cam_layers(model, opts["layer_name"], method)
        if method == "scorecam":
            channels = sum(int(layer.output.shape[-1]) for layer in layers)
            keep = channels if opts["top_n"] is None else opts["top_n"]
            graph = _scorecam_graph(model, layers)

            def call(xb, cb):
                return graph(xb, cb, tf.constant(min(keep, channels)))
        else:
            call = _cam_graph(model, layers, method)

    maps = np.zeros((n, h, w), np.float32)
    for a, b in _batches(n, batch_size):
        out, _ = call(tf.constant(x[a:b]), tf.constant(class_idx[a:b]))
        out = np.asarray(out)
        if out.ndim == 4:  # gradients: one value per pixel over channels
            out = np.abs(out).max(axis=-1) if method != "integrated_gradients" else np.abs(out.sum(axis=-1))
        maps[a:b] = out
    return _normalized(maps) if normalize else maps


def _normalized(maps):
    """Each map divided by its largest magnitude (an all-zero map stays zero)."""
    if not len(maps):
        return maps
    peak = np.abs(maps).reshape(len(maps), -1).max(axis=1)
    maps /= np.where(peak > 0, peak, 1.0)[:, None, None]
    return maps



# --------------------------------------------------------------------------- galleries


def pick_examples(labels, probs, num_classes=None):
    """One face per class for a gallery: the most confident correct prediction, else the
    most probable face of that class, else none.

    Parameters
    ----------
    labels : int array ``(n,)``
    probs : float array ``(n, k)``
        Model probabilities.
    num_classes : int, optional
        Defaults to ``probs.shape[1]``.

    Returns
    -------
    ndarray int ``(k,)``
        Index of the chosen face per class, -1 where the class has no face.

    Example
    -------
    >>> pick_examples(np.array([0, 1]), np.array([[.9, .1], [.6, .4]]))
    array([0, 1])
    """
    func = "fervis.saliency.pick_examples"
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"The 'probs' parameter of {func} must be shaped (n, classes). Got {probs.shape} instead.")
    k = probs.shape[1] if num_classes is None else int(num_classes)
    labels = class_labels(labels, len(probs), k, func, "labels")
    predicted = probs.argmax(axis=1)
    chosen = np.full(k, -1, dtype=np.int64)
    for c in range(k):
        mine = np.flatnonzero(labels == c)
        if not len(mine):
            continue
        right = mine[predicted[mine] == c]
        pool = right if len(right) else mine
        chosen[c] = pool[np.argmax(probs[pool, c])]
    return chosen


def per_class(labels, k, seed=0, num_classes=len(CLASS_NAMES), exclude=None):
    """Indices of up to ``k`` faces per class, drawn at random, sorted (for costly checks).

    Parameters
    ----------
    labels : int array ``(n,)``
    k : int
    seed : int, default 0
    num_classes : int, default 7
    exclude : bool array ``(n,)``, optional
        Faces never drawn, such as those whose map is degenerate
        (``map_problems(maps) != ""``).

    Returns
    -------
    ndarray int
        Every face of a class with fewer than ``k``.

    Example
    -------
    >>> per_class(np.array([0, 0, 0, 1]), 2, num_classes=2).size
    3
    """
    func = "fervis.saliency.per_class"
    labels = class_labels(labels, len(np.asarray(labels)), num_classes, func, "labels")
    k = positive_int(k, "k", func)
    keep = np.ones(len(labels), bool)
    if exclude is not None:
        exclude = np.asarray(exclude)
        if exclude.shape != labels.shape or exclude.dtype != bool:
            raise ValueError(f"The 'exclude' parameter of {func} must be a bool array shaped {labels.shape}. "
                             f"Got dtype {exclude.dtype} and shape {exclude.shape} instead.")
        keep = ~exclude
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero((labels == c) & keep))[:k] for c in range(num_classes)]
    return np.sort(np.concatenate(picks)).astype(np.int64)


def class_mean_maps(maps, labels, predicted, num_classes=len(CLASS_NAMES)):
    """Mean map per true class, over correct and over wrong predictions, degenerate maps left out.

    Parameters
    ----------
    maps : float array ``(n, h, w)``
    labels, predicted : int arrays ``(n,)``
    num_classes : int, default 7

    Returns
    -------
    means : ndarray ``(2, num_classes, h, w)``
        ``means[0]`` correct, ``means[1]`` wrong; NaN where a class has no usable face.
    counts : ndarray int ``(2, num_classes)``
        Maps averaged.
    excluded : ndarray int ``(2, num_classes)``
        Maps left out as empty, constant or non-finite (:func:`map_problems`).

    Example
    -------
    >>> means, counts, excluded = class_mean_maps(maps, labels, probs.argmax(1))  # doctest: +SKIP
    """
    func = "fervis.saliency.class_mean_maps"
    maps = saliency_maps(maps, func)
    labels = class_labels(labels, len(maps), num_classes, func, "labels")
    predicted = class_labels(predicted, len(maps), num_classes, func, "predicted")
    usable = map_problems(maps) == ""
    means = np.full((2, num_classes) + maps.shape[1:], np.nan)
    counts = np.zeros((2, num_classes), dtype=np.int64)
    excluded = np.zeros((2, num_classes), dtype=np.int64)
    for row, keep in enumerate((labels == predicted, labels != predicted)):
        for c in range(num_classes):
            sel = keep & (labels == c)
            excluded[row, c] = (sel & ~usable).sum()
            sel &= usable
            counts[row, c] = sel.sum()
            if counts[row, c]:
                means[row, c] = maps[sel].mean(axis=0)
    return means, counts, excluded


# --------------------------------------------------------------------------- region numbers


def _per_image_shares(maps, regions, r):
    """Per-image share of saliency mass and of area in each of ``r`` regions, ``(n, r)`` each."""
    from fervis import regions as region_maps

    mass = region_maps.shares(maps, regions, normalize=None, n_regions=r)
    area = np.broadcast_to(region_maps.area_shares(regions, n_regions=r), mass.shape)
    return mass, area


def region_shares(maps, regions, labels, region_names=None, class_names=CLASS_NAMES, normalize=None, n_boot=1000,
                  seed=0):
    """How each class's saliency mass splits over face regions, with bootstrap 95 % intervals.

    Degenerate maps (:func:`map_problems`: empty, constant, non-finite) are left out and
    counted; each class's figures are over its remaining faces, resampled with replacement
    ``n_boot`` times for a percentile interval.

    Parameters
    ----------
    maps : float array ``(n, h, w)``
        Non-negative maps (from :func:`explain`).
    regions : int array ``(n, h, w)``, or one ``(h, w)`` template for every face, or Dataset
        Region ids indexing ``region_names`` (synthetic ground truth, or
        :func:`fervis.regions.template` for registered FER2013 crops); a Dataset of the faces
        stands for :func:`fervis.regions.for_dataset` of it.
    labels : int array ``(n,)``
        The class each face is counted under (true label or the explained class).
    region_names : sequence of str
    class_names : sequence of str, default the 7 FER2013 classes
    normalize : {None, "area"}, default None
        ``None``: the mean share of each face's saliency mass per region (rows sum to 1).
        ``"area"``: that share divided by the region's mean share of the area, so 1 means
        "as much as its size", 3 means three times denser than uniform.
    n_boot : int, default 1000
        Bootstrap resamples of the faces for the intervals.
    seed : int, default 0

    Returns
    -------
    pandas.DataFrame
        Classes (with faces) x regions (present in some face), plus a row ``"all"``.
        ``table.attrs`` holds ``"low"`` and ``"high"`` (the 95 % interval, same shape),
        ``"n"`` (faces used per row, a Series), ``"excluded"`` (degenerate maps left out
        per row, a Series) and ``"level"`` (0.95); ``"family_low"``, ``"family_high"`` and
        ``"family_level"``: intervals that hold for all the regions of a row at once with 95 %
        confidence (Bonferroni: each at ``1 - 0.05 / regions``), what :func:`describe` states
        findings on, since it picks among a row's regions.

    Example
    -------
    >>> region_shares(maps, ds.regions, ds.labels, ds.region_names, normalize="area")  # doctest: +SKIP
    """
    import pandas as pd

    func = "fervis.saliency.region_shares"
    if normalize not in (None, "area"):
        raise ValueError(
            f"The 'normalize' parameter of {func} must be one of [None, 'area']. Got {normalize!r} instead.")
    maps = saliency_maps(maps, func)
    n = len(maps)
    if (np.where(np.isfinite(maps), maps, 0.0) < 0).any():  # non-finite maps are left out, not refused
        raise ValueError(
            f"The 'maps' parameter of {func} must be non-negative (saliency mass). Got negative values instead.")
    regions, region_names = _check_regions(regions, n, maps.shape[1:], region_names, func)
    labels = class_labels(labels, n, len(class_names), func, "labels")
    n_boot = positive_int(n_boot, "n_boot", func)
    r = len(region_names)
    usable = map_problems(maps) == ""
    mass, area = _per_image_shares(np.where(usable[:, None, None], maps, 0.0), regions, r)
    present = area.sum(axis=0) > 0  # area depends on the regions alone
    family = _family_level(int(present.sum()))
    rng = np.random.default_rng(seed)
    rows, lows, highs, family_lows, family_highs, index, used, left = [], [], [], [], [], [], [], []
    for c in list(range(len(class_names))) + ["all"]:
        sel = np.ones(n, bool) if c == "all" else labels == c
        if not sel.any():
            continue
        good = sel & usable
        m = int(good.sum())
        share, low, high = np.full(r, np.nan), np.full(r, np.nan), np.full(r, np.nan)
        family_low, family_high = low, high
        if m:
            size = area[good].mean(axis=0)
            share = mass[good].mean(axis=0)
            boot = _boot_means(np.concatenate([mass[good], area[good]], axis=1), n_boot, rng) if m > 1 else None
            if normalize == "area":
                share = np.divide(share, size, out=np.full(r, np.nan), where=size > 0)
                if boot is not None:
                    with np.errstate(invalid="ignore", divide="ignore"):
                        boot = boot[:, :r] / boot[:, r:]
            elif boot is not None:
                boot = boot[:, :r]
            if boot is not None:
                low, high = _percentiles(boot)
                family_low, family_high = _percentiles(boot, family)
        rows.append(share)
        lows.append(low)
        highs.append(high)
        family_lows.append(family_low)
        family_highs.append(family_high)
        used.append(m)
        left.append(int((sel & ~usable).sum()))
        index.append(c if c == "all" else class_names[c])

    def frame(values):
        return _class_region_frame(values, index, region_names, present)

    table = frame(rows)
    table.attrs = {"low": frame(lows), "high": frame(highs), "n": pd.Series(used, index=index, name="n"),
                   "excluded": pd.Series(left, index=index, name="excluded"), "level": 0.95,
                   "family_low": frame(family_lows), "family_high": frame(family_highs), "family_level": family}
    return table


def cue_check(maps, regions, labels, region_names, cue_regions, class_names=CLASS_NAMES):
    """Ground truth on synthetic faces: the saliency mass on each class's cue regions.

    Parameters
    ----------
    maps, regions, labels, region_names, class_names
        As for :func:`region_shares`.
    cue_regions : dict class name -> tuple of region names
        Where each class's evidence was drawn (:data:`fervis.synthetic.CUE_REGIONS`).

    Returns
    -------
    pandas.DataFrame
        Per class: ``cue_share`` (mean share of the mass on its cue regions), ``area_share``
        (their mean share of the area), ``ratio`` (cue_share / area_share; > 1 means the
        map concentrates on the cues), ``faces`` (maps used), ``excluded`` (degenerate maps
        left out, :func:`map_problems`).

    Example
    -------
    >>> cue_check(maps, ds.regions, ds.labels, ds.region_names, synthetic.CUE_REGIONS)  # doctest: +SKIP
    """
    import pandas as pd

    func = "fervis.saliency.cue_check"
    maps = saliency_maps(maps, func)
    n = len(maps)
    regions, region_names = _check_regions(regions, n, maps.shape[1:], region_names, func)
    labels = class_labels(labels, n, len(class_names), func, "labels")
    if not isinstance(cue_regions, dict):
        raise ValueError(f"The 'cue_regions' parameter of {func} must be a dict class name -> region names. "
                         f"Got {type(cue_regions).__name__} instead.")
    names = list(region_names)
    usable = map_problems(maps) == ""
    mass, area = _per_image_shares(np.where(usable[:, None, None], maps, 0.0), regions, len(names))
    rows = {}
    for c, name in enumerate(class_names):
        sel = labels == c
        if not sel.any() or name not in cue_regions:
            continue
        excluded = int((sel & ~usable).sum())
        sel = sel & usable
        unknown = [r for r in cue_regions[name] if r not in names]
        if unknown:
            raise ValueError(f"The 'cue_regions' parameter of {func} names regions {unknown} for {name!r}; "
                             f"allowed are {names}.")
        ids = [names.index(r) for r in cue_regions[name]]
        cue = mass[sel][:, ids].sum(axis=1).mean() if sel.any() else np.nan
        size = area[sel][:, ids].sum(axis=1).mean() if sel.any() else np.nan
        rows[name] = {"cue_share": cue, "area_share": size, "ratio": cue / size if size else np.nan,
                      "faces": int(sel.sum()), "excluded": excluded}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "class"
    return table


def occlusion_check(model, images, regions, labels, region_names=None, class_names=CLASS_NAMES, batch_size=256,
                    n_boot=1000, seed=0):
    """Grey out each face region and measure the drop in the probability of the class.

    Each region of each face is filled with that face's mean grey value, one region at a
    time; the drop is ``p(class | face) - p(class | face with the region greyed)``, averaged
    over the faces of each class that have that region. A region the model needs shows a
    large positive drop.

    Parameters
    ----------
    model : keras.Model
    images : array ``(n, 48, 48)`` or ``(n, 48, 48, 1)``
    regions : int array ``(n, 48, 48)`` or one ``(48, 48)`` template, or Dataset
        As for :func:`region_shares`.
    labels : int array ``(n,)``
        The class whose probability is tracked (the true label, usually).
    region_names : sequence of str
    class_names : sequence of str
    batch_size : int, default 256
    n_boot : int, default 1000
        Bootstrap resamples of each class's faces for the 95 % intervals.
    seed : int, default 0

    Returns
    -------
    pandas.DataFrame
        Classes x regions: mean probability drop; NaN where no face of the class has the region.
        ``table.attrs`` holds ``"low"`` and ``"high"`` (percentile bootstrap 95 % interval,
        same shape), ``"n"`` (faces of the class that have the region, same shape) and
        ``"level"`` (0.95).

    Example
    -------
    >>> occlusion_check(model, ds.images, ds.regions, ds.labels, ds.region_names)  # doctest: +SKIP
    """
    func = "fervis.saliency.occlusion_check"
    input_shape, k = _check_model(model, func)
    x = _check_images(images, input_shape, func)
    n = len(x)
    regions, region_names = _check_regions(regions, n, input_shape[:2], region_names, func)
    labels = class_labels(labels, n, min(k, len(class_names)), func, "labels")
    batch_size = positive_int(batch_size, "batch_size", func)
    n_boot = positive_int(n_boot, "n_boot", func)
    forward = _forward_graph(model)
    fill = x.mean(axis=(1, 2), keepdims=True)
    r = len(region_names)
    drops = np.full((n, r), np.nan)
    rows = np.arange(n)
    for a, b in _batches(n, batch_size):
        base = np.asarray(forward(x[a:b]))[rows[: b - a], labels[a:b]]
        for rid in range(r):
            inside = (regions[a:b] == rid)[..., None]
            has = inside.reshape(b - a, -1).any(axis=1)
            if not has.any():
                continue
            occluded = np.where(inside, fill[a:b], x[a:b])[has]
            p = np.asarray(forward(occluded))[np.arange(has.sum()), labels[a:b][has]]
            drops[a:b][has, rid] = base[has] - p
    rng = np.random.default_rng(seed)
    present = np.isfinite(drops).any(axis=0)
    family = _family_level(int(present.sum()))
    out, lows, highs, family_lows, family_highs, ns, index = [], [], [], [], [], [], []
    for c, name in enumerate(class_names):
        sel = labels == c
        if sel.any():
            col = drops[sel]
            counts = np.isfinite(col).sum(axis=0)
            out.append(np.where(counts > 0, np.nansum(col, axis=0) / np.maximum(counts, 1), np.nan))
            boot = _boot_means(col, n_boot, rng) if len(col) > 1 else None
            low, high = _percentiles(boot) if boot is not None else (np.full(r, np.nan),) * 2
            family_low, family_high = _percentiles(boot, family) if boot is not None else (low, high)
            few = counts < 2  # one face gives no interval
            lows.append(np.where(few, np.nan, low))
            highs.append(np.where(few, np.nan, high))
            family_lows.append(np.where(few, np.nan, family_low))
            family_highs.append(np.where(few, np.nan, family_high))
            ns.append(counts)
            index.append(name)

    def frame(values):
        return _class_region_frame(values, index, region_names, present)

    table = frame(out)
    table.attrs = {"low": frame(lows), "high": frame(highs), "n": frame(ns).astype(np.int64), "level": 0.95,
                   "family_low": frame(family_lows), "family_high": frame(family_highs), "family_level": family}
    return table


# --------------------------------------------------------------------------- faithfulness


def _blur(x, sigma=5.0):
    """RISE's insertion substrate: a Gaussian blur with an 11-pixel kernel (sigma 5)."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(x, sigma=(0, sigma, sigma, 0), truncate=1.0, mode="nearest").astype(np.float32)


def deletion_insertion(model, images, maps, class_idx=None, steps=16, batch_size=256, seed=0):
    """Deletion and insertion curves and their areas (Petsiuk et al. 2018), batched over faces.

    Deletion removes pixels, most salient first, by setting them to the face's mean grey,
    and tracks the probability of the class: a faithful map makes it fall fast (low AUC).
    (RISE deletes to 0 in mean-subtracted input space, i.e. to the mean; black pixels on a
    raw 0-255 face would be salt noise that any pixel order destroys the prediction with.)
    Insertion starts from a blurred face (Gaussian, sigma 5 px, as RISE) and puts pixels
    back, most salient first: a faithful map makes it rise fast (high AUC). Ties in a map
    are broken at random (``seed``).

    Parameters
    ----------
    model : keras.Model
    images : array ``(n, 48, 48)`` or ``(n, 48, 48, 1)``
    maps : float array ``(n, 48, 48)``
    class_idx : None, int, str or array ``(n,)`` of those
        ``None``: the class predicted on the intact face.
    steps : int, default 16
        Points on each curve after the first (capped by ``$FERVIS_MAX_STEPS``).
    batch_size : int, default 256
    seed : int, default 0

    Returns
    -------
    dict
        ``fractions`` ``(steps + 1,)``, ``deletion`` and ``insertion`` curves ``(n, steps + 1)``,
        ``deletion_auc`` and ``insertion_auc`` ``(n,)``, ``class_idx`` ``(n,)``.

    Example
    -------
    >>> out = deletion_insertion(model, faces, explain(model, faces, "gradcam"))  # doctest: +SKIP
    >>> out["deletion_auc"].mean() < out["insertion_auc"].mean()  # doctest: +SKIP
    True
    """
    func = "fervis.saliency.deletion_insertion"
    input_shape, k = _check_model(model, func)
    x = _check_images(images, input_shape, func)
    n = len(x)
    h, w = input_shape[:2]
    maps = saliency_maps(maps, func, n, (h, w))
    class_idx = _check_class_idx(class_idx, n, k, func)
    steps = max_steps(positive_int(steps, "steps", func))
    batch_size = positive_int(batch_size, "batch_size", func)
    forward = _forward_graph(model)
    if n == 0:
        empty = np.zeros((0, steps + 1))
        return {"fractions": np.linspace(0, 1, steps + 1), "deletion": empty, "insertion": empty,
                "deletion_auc": np.zeros(0), "insertion_auc": np.zeros(0), "class_idx": np.zeros(0, np.int64)}
    probs = predict(model, x, batch_size=batch_size)
    chosen = np.where(class_idx < 0, probs.argmax(axis=1), class_idx).astype(np.int64)
    # Rank pixels by saliency (ties at random): rank[i, p] = how early pixel p goes.
    jitter = np.random.default_rng(seed).random(maps.shape[0] * h * w).reshape(n, h * w)
    order = np.lexsort((jitter, -maps.reshape(n, -1)), axis=-1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(h * w)[None].repeat(n, 0), axis=1)
    rank = rank.reshape(n, h, w, 1)
    counts = np.round(np.linspace(0, h * w, steps + 1)).astype(np.int64)
    blurred = _blur(x)
    grey = np.broadcast_to(x.mean(axis=(1, 2, 3), keepdims=True), x.shape)
    curves = {"deletion": np.zeros((n, steps + 1)), "insertion": np.zeros((n, steps + 1))}
    per = max(1, batch_size // 2)  # deletion and insertion share each graph call
    for a, b in _batches(n, per):
        for s, count in enumerate(counts):
            top = rank[a:b] < count
            batch = np.concatenate([np.where(top, grey[a:b], x[a:b]), np.where(top, x[a:b], blurred[a:b])])
            p = np.asarray(forward(batch.astype(np.float32)))
            m = b - a
            curves["deletion"][a:b, s] = p[np.arange(m), chosen[a:b]]
            curves["insertion"][a:b, s] = p[m + np.arange(m), chosen[a:b]]

    def auc(curve):  # trapezoid rule on fractions 0..1
        return (curve.sum(axis=1) - (curve[:, 0] + curve[:, -1]) / 2) / steps

    return {"fractions": counts / (h * w), **curves, "deletion_auc": auc(curves["deletion"]),
            "insertion_auc": auc(curves["insertion"]), "class_idx": chosen}


@dataclasses.dataclass(frozen=True)
class Faithfulness:
    """Deletion/insertion results per method, from :func:`faithfulness`.

    Attributes
    ----------
    table : pandas.DataFrame
        Methods (and ``"random"``) x ``deletion_auc`` (lower is better), ``insertion_auc``
        (higher is better), ``score`` (insertion - deletion), ``n`` (faces compared),
        ``degenerate`` (faces whose map was degenerate, :func:`map_problems`, left out of the
        test), ``deletion_p`` and ``insertion_p`` (one-sided paired Wilcoxon signed-rank test
        of the method's per-face AUC against the random map's on the same face: lower
        deletion, higher insertion), ``beats_random`` (both p-values below ``alpha``).
    fractions : ndarray ``(steps + 1,)``
    curves : dict method -> {"deletion": ``(n, steps + 1)``, "insertion": ``(n, steps + 1)``}
    alpha : float
        The significance level of ``beats_random``.
    """

    table: object
    fractions: np.ndarray
    curves: dict
    alpha: float = 0.05


def _paired_p(a, b, alternative):
    """One-sided Wilcoxon signed-rank p-value of ``a`` against ``b`` (paired); NaN where undefined."""
    from scipy.stats import wilcoxon

    if len(a) < 2 or np.all(a == b):
        return np.nan
    return float(wilcoxon(a, b, alternative=alternative).pvalue)


def faithfulness(model, images, methods=METHODS, class_idx=None, steps=16, seed=0, batch_size=256,
                 explain_kwargs=None, alpha=0.05):
    """Deletion and insertion AUC of several methods against random maps.

    Parameters
    ----------
    model : keras.Model
    images : array ``(n, 48, 48)`` or ``(n, 48, 48, 1)``
    methods : sequence of str, default :data:`METHODS`
        Any of :data:`ALL_METHODS` (LIME too).
    class_idx : None, int, str or array ``(n,)`` of those
    steps : int, default 16
    seed : int, default 0
        Seeds the random baseline maps and tie breaking.
    batch_size : int, default 256
    explain_kwargs : dict, optional
        Method name -> extra :func:`explain` arguments (``{"scorecam": {"top_n": 16}}``,
        ``{"lime": {"options": {"samples": 500}}}``).
    alpha : float, default 0.05
        A method beats random maps where both paired tests give p < ``alpha``.

    Returns
    -------
    Faithfulness

    Example
    -------
    >>> faithfulness(model, faces, ["gradient", "gradcam"]).table  # doctest: +SKIP
    """
    import pandas as pd

    func = "fervis.saliency.faithfulness"
    if isinstance(methods, str) or any(m not in ALL_METHODS for m in methods) or not len(methods):
        raise ValueError(f"The 'methods' parameter of {func} must be a non-empty list of names from "
                         f"{list(ALL_METHODS)}. Got {methods!r} instead.")
    input_shape, _ = _check_model(model, func)
    x = _check_images(images, input_shape, func)
    alpha = real(alpha, "alpha", func, 0.0, 1.0, low_open=True, high_open=True)
    extra = dict(explain_kwargs or {})
    rows, curves, aucs, usable = {}, {}, {}, {}
    random_maps = np.random.default_rng(seed).random((len(x),) + input_shape[:2])
    for method in ["random"] + list(methods):
        maps = random_maps if method == "random" else explain(model, x, method, class_idx=class_idx,
                                                              seed=seed, **extra.get(method, {}))
        usable[method] = map_problems(maps) == ""
        out = deletion_insertion(model, x, maps, class_idx=class_idx, steps=steps, batch_size=batch_size, seed=seed)
        curves[method] = {"deletion": out["deletion"], "insertion": out["insertion"]}
        aucs[method] = out
        fractions = out["fractions"]
    base = aucs["random"]
    for method in list(methods) + ["random"]:
        out, keep = aucs[method], usable[method]
        row = {"deletion_auc": out["deletion_auc"][keep].mean() if keep.any() else np.nan,
               "insertion_auc": out["insertion_auc"][keep].mean() if keep.any() else np.nan,
               "n": int(keep.sum()), "degenerate": int((~keep).sum()), "deletion_p": np.nan, "insertion_p": np.nan}
        if method != "random":
            row["deletion_p"] = _paired_p(out["deletion_auc"][keep], base["deletion_auc"][keep], "less")
            row["insertion_p"] = _paired_p(out["insertion_auc"][keep], base["insertion_auc"][keep], "greater")
        rows[method] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table["score"] = table["insertion_auc"] - table["deletion_auc"]
    table["beats_random"] = (table["deletion_p"] < alpha) & (table["insertion_p"] < alpha)
    table = table[["deletion_auc", "insertion_auc", "score", "n", "degenerate", "deletion_p", "insertion_p",
                   "beats_random"]]
    table.index.name = "method"
    return Faithfulness(table=table, fractions=fractions, curves={m: curves[m] for m in table.index}, alpha=alpha)


# --------------------------------------------------------------------------- sanity check


def spearman(a, b):
    """Spearman rank correlation between each map of ``a`` and the map of ``b`` at its index.

    The package's one rank correlation of maps (:func:`fervis.monitoring.spearman` and
    :func:`randomization_check` use it). Ties get mean ranks.

    Parameters
    ----------
    a, b : array ``(n, h, w)`` (or any ``(n, ...)``, each item flattened)

    Returns
    -------
    ndarray float64 ``(n,)``
        In [-1, 1]; NaN where either map is constant (an empty map included) or not finite: the
        correlation is undefined there, as in scipy; scoring it 0 would let an empty map pass the
        randomisation check.

    Example
    -------
    >>> spearman(np.arange(8.0).reshape(1, 2, 4), np.arange(8.0).reshape(1, 2, 4) ** 2)
    array([1.])
    """
    from scipy.stats import rankdata

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(
            "The 'a' and 'b' parameters of fervis.saliency.spearman must be stacks of maps of one shape "
            f"(n, h, w). Got {a.shape} and {b.shape} instead."
        )
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    finite = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    ra, rb = rankdata(np.nan_to_num(a), axis=1), rankdata(np.nan_to_num(b), axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denom = np.sqrt((ra ** 2).sum(axis=1) * (rb ** 2).sum(axis=1))
    return np.divide((ra * rb).sum(axis=1), denom, out=np.full(len(a), np.nan), where=(denom > 0) & finite)


def _randomize(layer, rng):
    """Re-initialise ``layer``'s weights: its own initialisers, else a random permutation."""
    for var in layer.weights:
        short = var.path.split("/")[-1] if hasattr(var, "path") else var.name.split("/")[-1].split(":")[0]
        init = getattr(layer, f"{short}_initializer", None)
        value = None
        if init is not None:
            try:
                config = dict(init.get_config())
                if "seed" in config:
                    config["seed"] = int(rng.integers(2 ** 31))
                value = np.asarray(init.__class__.from_config(config)(tuple(var.shape), dtype="float32"))
            except (TypeError, ValueError, NotImplementedError):
                value = None
        if value is None:
            value = rng.permutation(np.asarray(var).ravel()).reshape(tuple(var.shape))
        var.assign(value.astype(np.asarray(var).dtype))


@dataclasses.dataclass(frozen=True)
class Randomization:
    """Result of :func:`randomization_check`.

    Attributes
    ----------
    stages : list of str
        ``"trained"``, then the name of each weight layer re-initialised, from the top.
    maps : dict method -> ndarray ``(len(stages), n, h, w)``
    correlation : pandas.DataFrame
        Stages x methods: mean Spearman rank correlation with the trained model's maps, over
        the faces where it is defined.
    undefined : pandas.DataFrame
        Stages x methods: faces left out of that mean because the trained or the
        re-initialised map is empty, constant or non-finite (:func:`map_problems`); their
        correlation is undefined, not 0.
    n : int
        Faces compared.
    """

    stages: list
    maps: dict
    correlation: object
    undefined: object = None
    n: int = 0


def randomization_check(model, images, methods=("gradient", "smoothgrad", "gradcam"), class_idx=None, seed=0,
                        explain_kwargs=None):
    """Model-randomisation sanity check (Adebayo et al. 2018), cascading from the top.

    The layers with a kernel (convolutions and dense layers) are re-initialised one by one
    from the output down, each time together with everything above it (normalisation
    layers included); after each step every method's maps are compared with the trained
    model's by Spearman rank correlation. Maps that stay similar while the weights become
    random do not explain the model. The model's weights are restored afterwards, also on
    error, and the traced graphs are reused throughout.

    Parameters
    ----------
    model : keras.Model
    images : array ``(n, 48, 48)`` or ``(n, 48, 48, 1)``
    methods : sequence of str
    class_idx : None, int, str or array ``(n,)`` of those
        ``None``: the trained model's predicted class, kept fixed at every stage.
    seed : int, default 0
    explain_kwargs : dict, optional
        Method name -> extra :func:`explain` arguments.

    Returns
    -------
    Randomization

    Example
    -------
    >>> check = randomization_check(model, faces[:16], ["gradcam"])  # doctest: +SKIP
    >>> check.correlation["gradcam"].iloc[-1] < 0.5  # doctest: +SKIP
    True
    """
    import keras
    import pandas as pd

    from fervis import models

    func = "fervis.saliency.randomization_check"
    if isinstance(methods, str) or not len(methods) or any(m not in ALL_METHODS for m in methods):
        raise ValueError(f"The 'methods' parameter of {func} must be a non-empty list of names from "
                         f"{list(ALL_METHODS)}. Got {methods!r} instead.")
    input_shape, k = _check_model(model, func)
    x = _check_images(images, input_shape, func)
    class_idx = _check_class_idx(class_idx, len(x), k, func)
    class_idx = np.where(class_idx < 0, predict(model, x).argmax(axis=1), class_idx) if len(x) else class_idx
    extra = dict(explain_kwargs or {})
    # trained_layers: an adapted model's class-order permutation is fervis's, not trained.
    layers = [layer for _, layer in models.trained_layers(model) if not isinstance(layer, keras.Model) and layer.weights]
    kernels = [i for i, layer in enumerate(layers) if any(v.path.endswith("kernel") for v in layer.weights)]
    if not kernels:
        raise ValueError(f"The 'model' parameter of {func} must have layers with weights to re-initialise. "
                         f"Model {model.name!r} has none.")

    def run():
        return {m: explain(model, x, m, class_idx=class_idx, seed=seed, **extra.get(m, {})) for m in methods}

    saved = [[np.asarray(v).copy() for v in layer.weights] for layer in layers]
    rng = np.random.default_rng(seed)
    stages, maps = ["trained"], {m: [v] for m, v in run().items()}
    try:
        done = len(layers)
        for start in reversed(kernels):
            for layer in layers[start:done]:
                _randomize(layer, rng)
            done = start
            stages.append(layers[start].name)
            for m, v in run().items():
                maps[m].append(v)
    finally:
        for layer, values in zip(layers, saved):
            for var, value in zip(layer.weights, values):
                var.assign(value)
    maps = {m: np.stack(v) for m, v in maps.items()}
    n = len(x)
    corr, undefined = {}, {}
    for m, v in maps.items():
        rho = [spearman(v[0].reshape(n, -1), v[s].reshape(n, -1)) for s in range(len(stages))]
        corr[m] = [float(r[np.isfinite(r)].mean()) if np.isfinite(r).any() else np.nan for r in rho]
        undefined[m] = [int((~np.isfinite(r)).sum()) for r in rho]
    table = pd.DataFrame(corr, index=stages)
    table.index.name = "randomized down to"
    undefined = pd.DataFrame(undefined, index=stages)
    undefined.index.name = "randomized down to"
    return Randomization(stages=stages, maps=maps, correlation=table, undefined=undefined, n=n)


# --------------------------------------------------------------------------- the answer


def _interval_of(table, name, column):
    """``(low, high, n)`` of one cell of a table from :func:`region_shares` or :func:`occlusion_check`:
    its interval simultaneous over the row's regions (the plain one for a table without it)."""
    attrs = getattr(table, "attrs", {}) or {}
    if "low" not in attrs or "n" not in attrs:
        return np.nan, np.nan, 0
    n = attrs["n"]
    count = n.loc[name, column] if hasattr(n, "columns") else n.loc[name]
    low, high = (attrs["family_low"], attrs["family_high"]) if "family_low" in attrs else (attrs["low"], attrs["high"])
    return float(low.loc[name, column]), float(high.loc[name, column]), int(count)


def _simultaneous(*tables):
    """The sentence that says the intervals of ``tables`` hold for all of a row's regions at once
    (None when no table has such intervals)."""
    counts = sorted({t.shape[1] for t in tables if t is not None and "family_low" in (t.attrs or {})})
    if not counts:
        return None
    return (f"Each 95 % interval below holds for all {' or '.join(map(str, counts))} regions of its class at once "
            "(Bonferroni), since the regions named were picked among them.")


def _faces(table, name):
    """Faces behind a row of a :func:`region_shares` table (0 when the table has no counts)."""
    n = (getattr(table, "attrs", {}) or {}).get("n")
    return 0 if n is None or hasattr(n, "columns") or name not in n.index else int(n.loc[name])


def describe(shares=None, concentration=None, cues=None, occlusion=None, faith=None, randomization=None,
             method="gradcam", top=2, min_share=0.05, min_faces=MIN_FACES):
    """The notebook's answer, written as sentences from the numbers, only where they hold one.

    A sentence states a finding only where its 95 % interval excludes "no effect" and at
    least ``min_faces`` faces stand behind it; otherwise it says so. A sentence that picks
    regions among a row's uses the row's simultaneous intervals (``attrs["family_low"]``,
    Bonferroni over the regions), so "above chance" holds for the row as a whole, not for
    each of a dozen comparisons separately. For the region tables,
    "no effect" is a concentration of 1 (no more mass than the region's share of the area);
    for occlusion, a drop of 0; for deletion/insertion, a p-value of ``faith.alpha`` or
    more in the paired test against random maps; the randomisation check names the faces
    whose correlation is undefined (empty or constant maps).

    Parameters
    ----------
    shares, concentration : pandas.DataFrame, optional
        :func:`region_shares` without and with ``normalize="area"``, for ``method`` (their
        ``attrs`` carry the intervals and counts).
    cues : pandas.DataFrame, optional
        :func:`cue_check`.
    occlusion : pandas.DataFrame, optional
        :func:`occlusion_check`.
    faith : Faithfulness, optional
    randomization : Randomization, optional
    method : str
        The method the region tables were computed with, as named in the text
        (:func:`method_label`: "Grad-CAM on block4_act2").
    top : int, default 2
        Regions named per class: the densest among those holding at least ``min_share`` of
        the mass whose concentration interval lies above 1.
    min_share : float, default 0.05
    min_faces : int, default :data:`MIN_FACES` (10)
        The fewest faces a finding is stated on.

    Returns
    -------
    list of str

    Example
    -------
    >>> print("\\n".join(describe(shares, concentration)))  # doctest: +SKIP
    """
    min_faces = positive_int(min_faces, "min_faces", "fervis.saliency.describe")
    lines = []
    classes = []
    for table in (shares, occlusion):
        if table is not None:
            classes += [c for c in table.index if c != "all" and c not in classes]
    if shares is not None:
        excluded = (shares.attrs or {}).get("excluded")
        if excluded is not None and "all" in excluded.index and excluded.loc["all"]:
            total = int(excluded.loc["all"]) + _faces(shares, "all")
            lines.append(f"{int(excluded.loc['all'])} of {total} {method} maps are empty, constant or non-finite "
                         "and left out of the region figures.")
    note = _simultaneous(concentration if shares is not None else None, occlusion)
    if note and classes:
        lines.append(note)
    for name in classes:
        parts = []
        if shares is not None and concentration is not None and name in shares.index:
            n = _faces(concentration, name)
            if n < min_faces:
                parts = [f": too few faces (n = {n}) to tell where {method} puts the mass"]
            else:
                row, dense = shares.loc[name], concentration.loc[name]
                above = [r for r in dense.index if row[r] >= min_share
                         and _interval_of(concentration, name, r)[0] > 1]
                held = dense[above].dropna().sort_values(ascending=False)
                parts = [f"{100 * row[r]:.0f} % of the mass on the {r} ({dense[r]:.1f}x its area, 95 % interval "
                         f"{_interval_of(concentration, name, r)[0]:.1f}-{_interval_of(concentration, name, r)[1]:.1f})"
                         for r in held.index[:top]]
                parts = ([f"{method} puts " + " and ".join(parts)] if parts else
                         [f"no region holds more of {method}'s mass than its share of the area beyond chance"])
                parts[0] = f" (n = {n}), " + parts[0]
        sentence = f"For {name}" + (parts[0] if parts else "")
        if occlusion is not None and name in occlusion.index and occlusion.loc[name].notna().any():
            row = occlusion.loc[name].dropna()
            cells = {r: _interval_of(occlusion, name, r) for r in row.index}
            most = max(cells.values(), key=lambda c: c[2])[2] if cells else 0
            found = [r for r in row.index if cells[r][2] >= min_faces and cells[r][0] > 0]
            joiner = "; " if parts else ", "
            if most < min_faces:
                sentence += joiner + f"too few faces (n = {most}) to tell what greying out a region does"
            elif not found:
                sentence += joiner + f"greying out no single region lowers p({name}) beyond chance"
            else:
                r = max(found, key=lambda k: row[k])
                low, high, n = cells[r]
                # The largest point estimate among the drops that are real; regions are not tested against each other.
                sentence += (joiner + f"the largest drop in p({name}) comes from greying out the {r}: "
                             f"{100 * row[r]:.1f} points (95 % interval {100 * low:.1f}-{100 * high:.1f}, n = {n})")
        if parts or occlusion is not None:
            lines.append(sentence + ".")
    if cues is not None and len(cues):
        above = cues.index[cues["ratio"] > 1].tolist()
        faces = int(cues["faces"].sum()) if "faces" in cues else 0
        lines.append(f"On synthetic faces ({faces} maps), {method} puts more mass on the regions that carry the cue "
                     f"than their area share for {len(above)} of {len(cues)} classes (median "
                     f"{cues['ratio'].median():.1f}x the area share).")
    if faith is not None:
        t = faith.table.drop(index="random")
        rand = faith.table.loc["random"]
        n = int(rand["n"]) if "n" in faith.table else 0
        if n < min_faces:
            lines.append(f"Deletion/insertion: too few faces (n = {n}) to tell whether the maps beat random ones.")
        else:
            beat = t.index[t["beats_random"].astype(bool)].tolist()
            line = (f"Deletion/insertion on {n} faces: {len(beat)} of {len(t)} methods beat random maps on both "
                    f"curves (paired Wilcoxon test, p < {faith.alpha:g} on each; random: deletion AUC "
                    f"{rand['deletion_auc']:.3f}, insertion AUC {rand['insertion_auc']:.3f})")
            if beat:
                best = t.loc[beat, "score"].idxmax()
                line += (f"; the highest score of those is {best}'s, not tested against the others "
                         f"(deletion {t.loc[best, 'deletion_auc']:.3f}, "
                         f"insertion {t.loc[best, 'insertion_auc']:.3f})")
            lines.append(line + ".")
    if randomization is not None:
        last = randomization.correlation.iloc[-1]
        undefined = randomization.undefined.iloc[-1] if randomization.undefined is not None else None
        n = randomization.n
        parts = []
        for m in last.index:
            bad = 0 if undefined is None else int(undefined[m])
            if not np.isfinite(last[m]):
                parts.append(f"{m} undefined (every map empty or constant)")
            else:
                parts.append(f"{m} {last[m]:.2f}" + (f" ({bad} of {n} faces undefined: empty or constant maps, "
                                                        f"left out)" if bad else ""))
        verdict = ("near 0 passes the sanity check" if n >= min_faces
                   else f"too few faces (n = {n}) to call the check passed or failed")
        lines.append(f"With every layer re-initialised, the rank correlation with the trained model's maps ({n} faces) "
                     "falls to " + ", ".join(parts) + f" ({verdict}).")
    return lines
