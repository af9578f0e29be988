"""How a model wants its faces: found from the model and real faces, shown, and applied.

A model trained on ``pixels / 255`` still answers when it is fed raw 0-255 pixels, only worse;
a model trained from the per-image folders with ``keras.utils.image_dataset_from_directory``
numbers its classes alphabetically (… happy, neutral, sad, surprise), so its "sad" output
would be read as FER2013's "neutral". Neither fails loudly. :func:`inspect` finds a model's
contract — input size and channels (from the model), pixel convention, class order, output
kind — with the evidence, and :func:`apply` builds the adapted model (built-in layers only,
via :func:`fervis.models.adapt`) that every other module takes: raw 0-255 ``(n, 48, 48, 1)``
faces in, FER2013-order probabilities out.

How it decides. The model's own layers count first: a ``Rescaling`` (or ``Normalization``) at
its input that maps 0-255 pixels down says it takes raw pixels. With labelled faces (at most
1,000 of the data being analysed), every input convention that the model's channels allow is
tried, one forward pass each (each on 250 faces first; only those not clearly worse than the
best go on to all of them), and each class order is scored from the same predictions. The best
candidate is used when a paired test on the same faces (McNemar's exact test) says it beats the
runner-up at the 1 % level; otherwise the model's own evidence, or the one tied convention whose
mean confidence matches its accuracy (a paired bootstrap, :func:`_calibration_tiebreak`), or the first of the tied
conventions in the order of :data:`fervis.constants.INPUT_CONVENTIONS` (0-255 first; FER2013's class
order), is kept and a warning names the setting to declare. A model whose best accuracy is not
above always answering the most common class is said not to classify these faces. Declared
settings (``model_input=``, ``class_order=``, ``output=``; ``MODEL_INPUT``/``CLASS_ORDER`` in a
notebook's parameters cell; ``--model-input``/``--class-order`` on the command line) are used
as given and checked only against the model's own layers.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from fervis import models
from fervis._checks import built_model, declared_input, parse_class_order, positive_int
from fervis.constants import CLASS_NAMES, CLASS_ORDERS, IMAGE_SIZE, INPUT_CONVENTIONS, MODEL_INPUTS
from fervis.stats import wilson

__all__ = ["Contract", "MODEL_INPUTS", "CLASS_ORDERS", "OUTPUTS", "MAX_FACES", "inspect", "apply", "parse_class_order"]

OUTPUTS = ("auto", "probabilities", "logits", "sigmoid")
#: Labelled faces used to detect a contract, at most.
MAX_FACES = 1000
_SCREEN = 250  # every convention is tried on this many faces first
_ALPHA = 0.01  # level of the paired tests that decide
_CHUNK = 256  # faces preprocessed at once: a 224x224x3 model's input stays ~150 MB
_LABELS = {"0-255": "0–255", "0-1": "0–1", "-1-1": "−1…1", "standardized": "per-image standardised (x − mean) / std",
           "imagenet": "ImageNet mean/std per channel", "caffe": "Caffe BGR mean subtraction"}
_HOW_SETTING = "MODEL_INPUT / --model-input / model_input="
_ORDER_SETTING = "CLASS_ORDER / --class-order / class_order="


@dataclasses.dataclass(frozen=True)
class Contract:
    """What a model expects and produces, and how fervis knows.

    Attributes
    ----------
    model_name : str
    input_shape : tuple (height, width, channels)
        From the model (48 where it leaves a size open).
    model_input : str
        One of :data:`fervis.INPUT_CONVENTIONS`.
    class_order : tuple of str
        The class names in the order of the model's outputs.
    output : {"probabilities", "logits", "sigmoid"}
        ``"sigmoid"``: a score in 0-1 per class from a final sigmoid (trained one-vs-rest), not
        a distribution; :func:`apply` explains the logits before it and reads their softmax.
    decided : dict
        For ``model_input``, ``class_order`` and ``output``: ``"declared"``, ``"detected"`` (from
        faces), ``"model"`` (from its layers) or ``"default"``.
    accuracy : float or None
        Accuracy under this contract on the ``n`` faces; ``interval`` its Wilson 95 % interval.
    n : int
        Labelled faces used (0 when none were).
    faces : str
        Which faces, e.g. ``"PublicTest faces"``.
    scores : dict
        Input convention -> ``(accuracy, n, interval)`` in its best class order (the chosen
        convention's in the order the contract uses: ``accuracy`` and ``interval``), the interval a
        Wilson 95 % one; a convention screened out on the first faces was scored on those only.
    majority : float or None
        The share of the most common class among the faces: what always answering it scores.
    classifies : bool or None
        Whether the model beats ``majority`` (None without faces).
    suggestion : tuple of str or None
        A class order read off the confusion matrix, when it fits clearly better than both
        FER2013's and the alphabetical order.
    evidence, warnings : tuple of str
    """

    model_name: str
    input_shape: tuple
    model_input: str
    class_order: tuple
    output: str
    decided: dict
    accuracy: float | None = None
    interval: tuple | None = None
    n: int = 0
    faces: str = "faces"
    scores: dict = dataclasses.field(default_factory=dict)
    majority: float | None = None
    classifies: bool | None = None
    suggestion: tuple | None = None
    evidence: tuple = ()
    warnings: tuple = ()

    @property
    def native(self):
        """True when the model already takes raw 48x48x1 0-255 faces and gives FER2013-order probabilities."""
        return (self.input_shape == (IMAGE_SIZE, IMAGE_SIZE, 1) and self.model_input == "0-255"
                and tuple(self.class_order) == tuple(CLASS_NAMES) and self.output == "probabilities")

    @property
    def verdict(self):
        """One line: what the model expects, how that was decided, and the figures behind it."""
        h, w, c = self.input_shape
        order = _order_name(self.class_order)
        line = (f"{self.model_name}: {h}×{w}×{c} input, pixels in {_LABELS[self.model_input]} "
                f"({self.decided['model_input']}); classes in {order} order ({self.decided['class_order']}); "
                f"outputs {_OUTPUT_LABELS[self.output]} ({self.decided['output']})")
        if self.n:
            low, high = self.interval
            line += (f"; accuracy {100 * self.accuracy:.1f} % (95 % CI {100 * low:.1f}–{100 * high:.1f}) "
                     f"on {self.n:,} {self.faces}")
            # every figure with its interval and n: a convention screened out was scored on fewer faces
            others = [f"{_LABELS[name].split(' (')[0]}: {100 * acc:.1f} % (95 % CI {100 * lo:.1f}–{100 * hi:.1f}, "
                      f"n = {n:,})" for name, (acc, n, (lo, hi)) in self.scores.items() if name != self.model_input]
            if others:
                line += "; " + ", ".join(others)
        return line

    def __str__(self):
        lines = [f"model contract: {self.verdict}"]
        lines += [f"  evidence: {line}" for line in self.evidence]
        lines += [f"  warning: {line}" for line in self.warnings]
        return "\n".join(lines)

    def to_dict(self):
        """A JSON-ready dict of every field, with ``verdict`` and ``native``."""
        out = dataclasses.asdict(self)
        out.update(input_shape=list(self.input_shape), class_order=list(self.class_order),
                   interval=None if self.interval is None else list(self.interval),
                   scores={k: {"accuracy": a, "n": n, "interval": list(ci)} for k, (a, n, ci) in self.scores.items()},
                   suggestion=None if self.suggestion is None else list(self.suggestion),
                   evidence=list(self.evidence), warnings=list(self.warnings),
                   verdict=self.verdict, native=self.native)
        return out


def _order_name(order):
    if tuple(order) == tuple(CLASS_NAMES):
        return "FER2013"
    if tuple(order) == tuple(sorted(CLASS_NAMES)):
        return "alphabetical"
    return "declared (" + ", ".join(order) + ")"


def _input_shape(model, func):
    built_model(model, func)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"Model {model.name!r} has {len(model.inputs)} input(s) and {len(model.outputs)} output(s); "
            "fervis explains image classifiers with one image input and one class output."
        )
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) == 2 and None not in shape:  # grey images without a channel axis: Keras reads (h, w, 1) as them
        raise ValueError(
            f"Model {model.name!r} takes inputs shaped {tuple(model.inputs[0].shape)}: grey images without a channel "
            f"axis, which fervis does not adapt by itself. Pass {_adapt_call(model, shape + (1,))} instead, with the "
            "pixel range the model expects (e.g. '0-1' or '0-255'): it feeds the model faces it reads as its "
            "(height, width) images."
        )
    side = {c: int(round((shape[0] / c) ** 0.5)) for c in (1, 3)} if len(shape) == 1 and shape[0] else {}
    square = [(s, s, c) for c, s in side.items() if s * s * c == shape[0] and s >= 8]
    if shape == (None,):  # flat, of any length: FER2013's own size is the one to suggest
        square = [(IMAGE_SIZE, IMAGE_SIZE, 1)]
    if square:  # flattened images, as FER2013's pixel strings: which size they are is the user's to say
        raise ValueError(
            f"Model {model.name!r} takes inputs shaped {tuple(model.inputs[0].shape)}: flattened images ("
            f"{' or '.join(f'{h}×{w}×{c}' for h, w, c in square)}, row by row), which fervis does not adapt by itself. "
            f"Pass {_adapt_call(model, square[0])} instead, with the pixel range the model expects (e.g. '0-1' or "
            "'0-255'): it flattens the faces the same way."
        )
    if len(shape) != 3 or shape[-1] not in (1, 3):
        raise ValueError(
            f"Model {model.name!r} takes inputs shaped {tuple(model.inputs[0].shape)}, which cannot be made from grey "
            "faces: fervis feeds images (n, height, width, channels) with 1 (grey) or 3 (the grey repeated) channels."
        )
    out = tuple(model.outputs[0].shape)
    if len(out) != 2 or out[-1] != len(CLASS_NAMES):
        raise ValueError(
            f"Model {model.name!r} outputs shape {out}; fervis needs (n, {len(CLASS_NAMES)}): one score per FER2013 "
            f"class {list(CLASS_NAMES)}."
        )
    return tuple(IMAGE_SIZE if d is None else int(d) for d in shape)


def _adapt_call(model, shape):
    """The ``fervis.models.adapt`` call an error suggests, with the output the model's last layer has."""
    output = {"sigmoid": ", output='sigmoid'", None: ", output='logits'"}.get(models.output_activation(model), "")
    return f"fervis.models.adapt(model, input_shape={shape}, scale=...{output})"


def _own_scaling(model):
    """``(convention or None, sentence)`` from a Rescaling/Normalization among the model's first layers."""
    for _, layer in models.named_layers(model):
        if isinstance(layer, (keras.layers.InputLayer, keras.Model)):
            continue
        if isinstance(layer, keras.layers.Rescaling):
            factor = float(np.max(np.abs(np.asarray(layer.scale, dtype=np.float64))))
            if factor < 0.1:
                return "0-255", (f"its own Rescaling layer {layer.name!r} (× {factor:.4g}) scales 0–255 pixels down, "
                                 "so it takes raw pixels")
            return None, f"its own Rescaling layer {layer.name!r} (× {factor:.4g}) expects pixels scaled already"
        if isinstance(layer, keras.layers.Normalization) and getattr(layer, "mean", None) is not None:
            mean = float(np.max(np.asarray(layer.mean)))
            if mean > 2:
                return "0-255", (f"its own Normalization layer {layer.name!r} (mean {mean:.1f}) takes raw 0–255 "
                                 "pixels")
            return None, f"its own Normalization layer {layer.name!r} (mean {mean:.3g}) expects scaled pixels"
        if isinstance(layer, (keras.layers.Resizing, keras.layers.Reshape, keras.layers.Concatenate,
                              keras.layers.Activation) + _AUGMENTATION):
            continue
        return None, None
    return None, None


# Random augmentation layers, the identity at inference: Keras's tutorials put them before the Rescaling.
_AUGMENTATION = tuple(getattr(keras.layers, name) for name in (
    "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomCrop", "RandomContrast",
    "RandomBrightness", "RandomErasing", "RandomGaussianBlur", "RandomSharpness", "RandomShear",
    "RandomGrayscale", "RandomColorJitter", "RandomPerspective", "GaussianNoise", "GaussianDropout")
    if hasattr(keras.layers, name))


def _softmax_output(model):
    """How ``model``'s output is squashed (:func:`fervis.models.output_activation`: "softmax", "sigmoid" or
    None), and its output layer's name."""
    return models.output_activation(model), models.output_layer(model).name


def _last_layer_text(last, squash):
    return f"its last layer {last!r} is " + {"softmax": "a softmax", "sigmoid": "a sigmoid"}.get(squash, "not a softmax")


# How the verdict names each output kind.
_OUTPUT_LABELS = {"probabilities": "probabilities", "logits": "logits", "sigmoid": "a sigmoid score per class"}


def _outputs(model, faces, input_shape, convention):
    """The model's outputs for raw faces fed under ``convention``, preprocessed a chunk at a time."""
    from fervis import recipes  # the package's one forward path (a traced graph per model)

    parts = []
    for start in range(0, len(faces), _CHUNK):
        x = np.asarray(models.preprocess(faces[start:start + _CHUNK], input_shape, convention), dtype=np.float32)
        parts.append(recipes.predict(model, x, batch_size=_CHUNK))
    return np.concatenate(parts)


def _mcnemar(a, b):
    """Two-sided exact McNemar p-value for paired 0/1 outcomes ``a`` and ``b``."""
    from scipy.stats import binomtest

    better, worse = int(np.sum(a & ~b)), int(np.sum(~a & b))
    return 1.0 if better + worse == 0 else float(binomtest(better, better + worse, 0.5).pvalue)


def _is_distribution(out):
    """Whether every row of a model's outputs is a probability distribution (non-negative, sums to 1)."""
    return bool((np.asarray(out) >= -1e-6).all() and np.allclose(np.sum(out, axis=1), 1.0, atol=1e-3))


def _probabilities(out, squash):
    """A model's outputs as a distribution over classes, whatever its last layer gives."""
    out = np.asarray(out, dtype=np.float64)
    if squash == "sigmoid":
        clipped = np.clip(out, 1e-7, 1 - 1e-7)
        out = np.log(clipped / (1 - clipped))  # the logits before the sigmoid
    elif _is_distribution(out):
        return out
    shifted = np.exp(out - out.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _calibration_tiebreak(raws, hits, squash, where, seed, n_boot=1000):
    """``(convention, sentence)`` when, among conventions that classify alike, one alone gives
    confidences that match its accuracy; else None.

    Scaling a network's input scales its logits: fed 0-255 pixels, a model trained on 0-1 keeps
    much of its ranking (so accuracy cannot tell the two apart) but answers with near-certainty
    while right a third of the time; fed 0-1, a 0-255 model answers near-uniformly. The gap
    between mean top probability and accuracy (the one-bin calibration error) is smallest under
    the convention the model was trained with. Decided by a paired bootstrap over the faces: the
    smallest gap must be the smallest in ``1 - _ALPHA`` of the resamples against each other one.
    """
    conf = {c: _probabilities(r, squash).max(axis=1) for c, r in raws.items()}
    right = {c: np.asarray(h, dtype=np.float64) for c, h in hits.items()}
    gap = {c: abs(conf[c].mean() - right[c].mean()) for c in raws}
    best = min(gap, key=gap.get)
    n = len(right[best])
    rows = np.random.default_rng(seed).integers(0, n, (n_boot, n))

    def resampled(c):
        return np.abs(conf[c][rows].mean(axis=1) - right[c][rows].mean(axis=1))

    ref = resampled(best)
    p = max(float(np.mean(ref >= resampled(c))) for c in raws if c != best)
    if p >= _ALPHA:
        return None
    figures = "; ".join(f"{100 * conf[c].mean():.1f} % and {100 * right[c].mean():.1f} % under {_LABELS[c]}"
                        for c in [best] + [c for c in raws if c != best])
    return best, (f"{' and '.join(_LABELS[c] for c in raws)} classify these faces alike, but only under "
                  f"{_LABELS[best]} do its confidences match its accuracy: mean top probability and accuracy "
                  f"{figures}, on {n:,} {where} (paired bootstrap, {n_boot:,} resamples, "
                  f"{'p < 0.001' if p < 0.001 else f'p = {p:.3f}'})")


def _p_value(p):
    """A McNemar p-value as the evidence prints it: "McNemar p = 0.003", "McNemar p < 0.001"."""
    return "McNemar p < 0.001" if p < 0.001 else f"McNemar p = {p:.3f}"


def _permutation(order):
    """``perm[i]``: FER2013 index of model output ``i``."""
    return np.array([CLASS_NAMES.index(name) for name in order])


def _faces(dataset, max_faces, seed):
    if dataset is None:
        return None, None, "faces"
    labels = np.asarray(dataset.labels)
    if not (labels >= 0).any():
        return None, None, "faces"
    labelled = dataset.take(labels >= 0)
    held_out = np.asarray(labelled.splits) != "Training"
    if held_out.any() and not held_out.all():
        labelled = labelled.take(held_out)  # the faces a model may have been trained on would flatter it
    if len(labelled) > max_faces:
        labelled = labelled.sample(max_faces, stratify=True, seed=seed)
    splits = sorted(set(np.asarray(labelled.splits).tolist()))
    where = " and ".join(splits) + " faces"
    # Shuffled: a dataset read from the per-image folders is grouped by class, and the screen runs
    # on the first faces, which must be a fair sample of every class.
    order = np.random.default_rng(seed).permutation(len(labelled))
    return labelled.x()[order], np.asarray(labelled.labels)[order], where


def inspect(model, dataset=None, model_input="auto", class_order="auto", output="auto", max_faces=MAX_FACES,
            seed=0):
    """Find what ``model`` expects and produces, with the evidence.

    Parameters
    ----------
    model : keras.Model
        Any classifier of FER2013's 7 classes with one image input ``(n, h, w, 1 or 3)``.
    dataset : fervis.data.Dataset, optional
        Faces of the data being analysed; up to ``max_faces`` labelled ones (a stratified
        sample) decide what the model's layers leave open. Without labels, the defaults hold.
        A dataset with ``Training`` and other splits is read on the others only (a model trained
        on ``Training`` would score its own faces too well); ``contract.faces`` names them.
    model_input : str, default "auto"
        One of :data:`MODEL_INPUTS`; anything but ``"auto"`` is used as declared.
    class_order : str or sequence of str, default "auto"
        ``"auto"``, ``"fer2013"``, ``"alphabetical"`` or the class names in output order.
    output : {"auto", "probabilities", "logits", "sigmoid"}, default "auto"
        ``"auto"``: a final sigmoid is read from the model's last layer, probabilities and
        logits from its outputs on the faces (or from its last layer without faces).
    max_faces : int, default 1000
    seed : int, default 0

    Returns
    -------
    Contract
        ``contract.verdict`` is one line for the user; :func:`apply` builds the adapted model.

    Raises
    ------
    ValueError
        For a model whose input cannot be made from grey faces, an output that is not 7 class
        scores, an unknown setting, or a declared convention that contradicts the model's own
        ``Rescaling``.

    Example
    -------
    >>> found = inspect(model, dataset.subset("PublicTest"))  # doctest: +SKIP
    >>> print(found.verdict)  # doctest: +SKIP
    hw: 48×48×1 input, pixels in 0–1 (detected); classes in FER2013 order (detected); ...
    """
    func = "fervis.contract.inspect"
    input_shape = _input_shape(model, func)
    declared_input(model_input, func)
    if model_input in ("imagenet", "caffe") and input_shape[-1] != 3:
        raise ValueError(f"The 'model_input' parameter of {func} is {model_input!r}, a per-channel RGB convention, "
                         f"but model {model.name!r} takes {input_shape[-1]} channel(s).")
    order = parse_class_order(class_order, func)
    if output not in OUTPUTS:
        raise ValueError(f"The 'output' parameter of {func} must be one of {list(OUTPUTS)}. Got {output!r} instead.")
    max_faces = positive_int(max_faces, "max_faces", func)

    evidence, warnings = [], []
    own, own_text = _own_scaling(model)
    if own_text:
        evidence.append(own_text)
    if model_input != "auto" and own == "0-255" and model_input != "0-255":
        raise ValueError(
            f"The 'model_input' setting ({model_input!r}) contradicts model {model.name!r}: {own_text}. "
            "Declare '0-255' (or 'auto'), or check that this is the model you meant."
        )
    squash, last = _softmax_output(model)
    if output != "auto" and (output == "sigmoid") != (squash == "sigmoid"):
        raise ValueError(
            f"The 'output' setting ({output!r}) contradicts model {model.name!r}: {_last_layer_text(last, squash)}, "
            f"so its outputs are {'sigmoid scores' if squash == 'sigmoid' else 'not sigmoid scores'}. Declare "
            f"{'sigmoid' if squash == 'sigmoid' else 'probabilities or logits'} (or 'auto'), or check that this is "
            "the model you meant."
        )
    decided = {}
    x, y, where = _faces(dataset, max_faces, seed)

    candidates = [model_input] if model_input != "auto" else [
        c for c in INPUT_CONVENTIONS if input_shape[-1] == 3 or c not in ("imagenet", "caffe")]
    orders = [order] if order != "auto" else [tuple(CLASS_NAMES), tuple(sorted(CLASS_NAMES))]
    if x is None:
        chosen = model_input if model_input != "auto" else own or "0-255"
        decided["model_input"] = "declared" if model_input != "auto" else "model" if own else "default"
        chosen_order = orders[0]
        decided["class_order"] = "declared" if order != "auto" else "default"
        kind = output if output != "auto" else {"softmax": "probabilities", "sigmoid": "sigmoid"}.get(squash, "logits")
        decided["output"] = "declared" if output != "auto" else "model"
        evidence.append(_last_layer_text(last, squash))
        unsure = [s for s, how in ((_HOW_SETTING, decided["model_input"]), (_ORDER_SETTING, decided["class_order"]))
                  if how == "default"]
        if unsure:
            warnings.append("no labelled faces to check the model against: assumed "
                            + " and ".join(f"the default ({s.split(' /')[0]})" for s in unsure)
                            + "; declare " + " and ".join(unsure) + " if the model was trained otherwise.")
        return Contract(model.name, input_shape, chosen, tuple(chosen_order), kind, decided,
                        evidence=tuple(evidence), warnings=tuple(warnings))

    perms = [_permutation(o) for o in orders]
    screen = min(_SCREEN, len(y))
    raw = {c: _outputs(model, x[:screen], input_shape, c) for c in candidates}

    def correct(scores, n):
        return [perm[scores.argmax(axis=1)] == y[:n] for perm in perms]

    def best_order(hits):
        return max(range(len(hits)), key=lambda i: hits[i].sum())

    hits = {c: correct(raw[c], screen) for c in candidates}
    top = max(candidates, key=lambda c: hits[c][best_order(hits[c])].sum())
    top_hits = hits[top][best_order(hits[top])]
    survivors = [c for c in candidates
                 if c == top or _mcnemar(top_hits, hits[c][best_order(hits[c])]) >= _ALPHA]
    for c in survivors:
        if screen < len(y):
            raw[c] = np.concatenate([raw[c], _outputs(model, x[screen:], input_shape, c)])
            hits[c] = correct(raw[c], len(y))
    right_by = {c: hits[c][best_order(hits[c])] for c in candidates}
    scores = {c: (float(r.mean()), len(r), wilson(int(r.sum()), len(r))) for c, r in right_by.items()}
    ranked = sorted(survivors, key=lambda c: -scores[c][0])
    best = ranked[0]
    tied = [c for c in ranked if c == best or _mcnemar(hits[best][best_order(hits[best])],
                                                          hits[c][best_order(hits[c])]) >= _ALPHA]
    if model_input != "auto":
        chosen, decided["model_input"] = model_input, "declared"
    elif len(tied) == 1:
        chosen, decided["model_input"] = best, "detected"
    else:
        # The model's own layers decide a tie; else the first tied convention in the order of
        # INPUT_CONVENTIONS, plain ranges before per-image standardisation (on evenly lit faces
        # the two are close to the same map).
        calibrated = None if own in tied else _calibration_tiebreak(
            {c: raw[c] for c in tied}, {c: right_by[c] for c in tied}, squash, where, seed)
        if calibrated:
            chosen, sentence = calibrated
            decided["model_input"] = "detected"
            evidence.append(sentence)
        else:
            chosen = own if own in tied else next(c for c in INPUT_CONVENTIONS if c in tied)
            decided["model_input"] = "model" if chosen == own else "default"
            listed = ", ".join(f"{_LABELS[c]} {100 * scores[c][0]:.1f} % (95 % CI {100 * scores[c][2][0]:.1f}–"
                               f"{100 * scores[c][2][1]:.1f})" for c in tied)
            warnings.append(f"the faces do not tell the input convention apart ({listed} on {len(y):,} {where}); "
                            f"using {_LABELS[chosen]}: declare {_HOW_SETTING} if the model was trained otherwise.")

    out = raw[chosen]
    if output != "auto":
        kind, decided["output"] = output, "declared"
    elif squash == "sigmoid":
        # Its sigmoid outputs can sum to about 1 on some faces and not on others: the layer decides.
        sums = out.sum(axis=1)
        kind, decided["output"] = "sigmoid", "model"
        evidence.append(f"its last layer {last!r} ends in a sigmoid: each class scored on its own, not a distribution "
                        f"(row sums {sums.min():.3g} to {sums.max():.3g} on {len(y):,} faces); fervis explains the "
                        "logits before it and reads their softmax as probabilities")
    else:
        sums = out.sum(axis=1)
        is_prob = _is_distribution(out)
        kind, decided["output"] = ("probabilities" if is_prob else "logits"), "detected"
        evidence.append(f"{_last_layer_text(last, squash)}; its outputs on "
                        f"{len(y):,} faces " + ("are probabilities (non-negative, each row sums to 1)" if is_prob else
                                                f"are not probabilities (row sums {sums.min():.3g} to {sums.max():.3g})"))

    chosen_hits = hits[chosen]
    which = best_order(chosen_hits)
    if order != "auto":
        decided["class_order"] = "declared"
    else:
        other = 1 - which
        p_order = _mcnemar(chosen_hits[which], chosen_hits[other])
        if p_order < _ALPHA:
            decided["class_order"] = "detected"
            evidence.append(f"classes in {_order_name(orders[which])} order: {100 * chosen_hits[which].mean():.1f} % "
                            f"against {100 * chosen_hits[other].mean():.1f} % in {_order_name(orders[other])} order "
                            f"on the same {len(y):,} faces ({_p_value(p_order)})")
        else:
            which, decided["class_order"] = 0, "default"
            warnings.append(f"the faces do not tell FER2013's class order from the alphabetical one; using FER2013's: "
                            f"declare {_ORDER_SETTING} if the model was trained otherwise.")
    chosen_order = orders[which]
    right = chosen_hits[which]

    from scipy.optimize import linear_sum_assignment
    from scipy.stats import binomtest

    predicted = out.argmax(axis=1)
    k = len(CLASS_NAMES)
    cm = models.confusion_matrix(y, predicted, k).T  # rows: model output, columns: true class
    rows, cols = linear_sum_assignment(-cm)
    read_off = tuple(CLASS_NAMES[cols[i]] for i in np.argsort(rows))
    suggestion, suggested_text = None, None
    if read_off not in orders:
        suggested = _permutation(read_off)[predicted] == y
        p_suggested = _mcnemar(suggested, right) if suggested.mean() > right.mean() else 1.0
        if p_suggested < _ALPHA:
            suggestion = read_off
            suggested_text = (f"the classes fit neither FER2013's nor the alphabetical order; the order read off the "
                              f"confusion matrix, {list(read_off)}, scores {100 * suggested.mean():.1f} % against "
                              f"{100 * right.mean():.1f} % on the same {len(y):,} faces "
                              f"({_p_value(p_suggested)}): declare it with {_ORDER_SETTING} if that is how the model "
                              "was trained.")

    interval = wilson(int(right.sum()), len(y))
    scores[chosen] = (float(right.mean()), len(right), interval)  # in the class order the contract uses
    best = suggested if suggestion is not None else right  # does it classify at all: in the order that fits best
    hits_n = int(best.sum())
    counts = np.bincount(y, minlength=k)
    majority = float(counts.max() / len(y))
    classifies = bool(binomtest(hits_n, len(y), majority, alternative="greater").pvalue < _ALPHA)
    if suggested_text and classifies:
        warnings.append(suggested_text)
    if not classifies:
        # Nothing about its pixels or class order can be read from a model that does not classify: the ties and
        # the order read off its confusion matrix (one class for every face fits any order) would only mislead.
        suggestion = None
        warnings[:] = [w for w in warnings if not w.startswith(("the faces do not tell", "the classes fit neither"))]
        tried = "at best" if model_input == "auto" else f"at best with the declared {_LABELS[chosen]} pixels"
        warnings.append(f"model {model.name!r} does not seem to classify these faces: {100 * best.mean():.1f} % "
                        f"{tried} on {len(y):,} {where}, where always answering {CLASS_NAMES[int(counts.argmax())]!r} "
                        f"scores {100 * majority:.1f} %, so its pixel range and class order cannot be read from them "
                        "either. Its explanations would describe noise: check that this is the model you meant and how "
                        "it was trained.")
    return Contract(model.name, input_shape, chosen, tuple(chosen_order), kind, decided,
                    accuracy=float(right.mean()), interval=interval, n=len(y), faces=where, scores=scores,
                    majority=majority, classifies=classifies, suggestion=suggestion, evidence=tuple(evidence),
                    warnings=tuple(warnings))


def apply(model, contract):
    """The model as every fervis module takes it: raw 0-255 ``(n, 48, 48, 1)`` faces in,
    FER2013-order probabilities out.

    Parameters
    ----------
    model : keras.Model
        The model ``contract`` describes.
    contract : Contract

    Returns
    -------
    keras.Model
        ``model`` itself when it already takes raw faces (``contract.native``), else
        :func:`fervis.models.adapt` of it (built-in layers only: it saves and loads under
        ``safe_mode``).

    Example
    -------
    >>> explained = apply(model, inspect(model, dataset))  # doctest: +SKIP
    """
    if not isinstance(contract, Contract):
        raise ValueError(f"The 'contract' parameter of fervis.contract.apply must be a Contract. Got {contract!r} "
                         "instead.")
    if contract.native:
        return model
    order = None if tuple(contract.class_order) == tuple(CLASS_NAMES) else contract.class_order
    return models.adapt(model, input_shape=contract.input_shape, scale=contract.model_input, output=contract.output,
                        class_order=order)
