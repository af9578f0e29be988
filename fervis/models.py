"""Named CNN architectures for 48x48 grayscale faces, safe loading, and adapters.

Every fervis model takes raw 0-255 pixels shaped ``(n, 48, 48, 1)``: the scaling is a
layer inside the model, so every explanation (saliency, LIME, activation maximisation)
lives in pixel space and works the same on every model.

The ``vgg`` design follows the VGG variants that do well on FER2013 (Khaireddin & Chen,
"Facial Emotion Recognition: State of the Art Performance on FER2013", 2021): stacked
3x3 conv -> batch-norm -> ReLU blocks, max pooling, dropout.
"""

from __future__ import annotations

import keras

from fervis.constants import IMAGE_SIZE, NUM_CLASSES

__all__ = ["ARCHITECTURES", "build"]

# (filters per block, convs per block, dense width, dropout)
_SPECS = {
    "tiny": ((8, 16), 1, 0, 0.0),
    "compact": ((32, 64, 128), 2, 0, 0.25),
    "vgg": ((64, 128, 256, 384), 2, 256, 0.4),
}
ARCHITECTURES = tuple(_SPECS)


def build(name="compact", num_classes=NUM_CLASSES, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 1), seed=None):
    """Build a named architecture.

    Parameters
    ----------
    name : {"tiny", "compact", "vgg"}, default "compact"
        ``tiny`` is for tests, ``compact`` the CPU default, ``vgg`` the FER2013 model.
    num_classes : int, default 7
    input_shape : tuple, default (48, 48, 1)
        Raw 0-255 pixels; a ``Rescaling`` layer named ``scale`` maps them to [0, 1].
    seed : int or None
        Seeds the weight initialisers, so two builds with one seed are identical.

    Returns
    -------
    keras.Model
        Functional model; layers are named ``block{b}_conv{i}``, ``block{b}_bn{i}``,
        ``block{b}_act{i}``, ``block{b}_pool``, ``gap``, ``predictions`` (softmax).

    Example
    -------
    >>> model = build("tiny", seed=0)
    >>> model.output_shape
    (None, 7)
    """
    if name not in _SPECS:
        raise ValueError(
            f"The 'name' parameter of fervis.models.build must be one of {list(ARCHITECTURES)}. "
            f"Got {name!r} instead."
        )
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"The 'num_classes' parameter must be an int >= 2. Got {num_classes!r} instead.")
    widths, convs, dense, dropout = _SPECS[name]
    seeds = iter(range(10_000)) if seed is None else iter(range(seed * 1000, seed * 1000 + 1000))

    def init():
        return keras.initializers.HeNormal(seed=None if seed is None else next(seeds))

    use_bn = name != "tiny"
    inputs = keras.Input(shape=input_shape, name="pixels")
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    for b, width in enumerate(widths, start=1):
        for i in range(1, convs + 1):
            suffix = f"{i}" if convs > 1 else ""
            x = keras.layers.Conv2D(
                width, 3, padding="same", use_bias=not use_bn, kernel_initializer=init(),
                name=f"block{b}_conv{suffix}",
            )(x)
            if use_bn:
                x = keras.layers.BatchNormalization(name=f"block{b}_bn{suffix}")(x)
            x = keras.layers.Activation("relu", name=f"block{b}_act{suffix}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
        if dropout:
            x = keras.layers.Dropout(dropout / 2, name=f"block{b}_drop")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    if dense:
        x = keras.layers.Dropout(dropout, name="gap_drop")(x)
        x = keras.layers.Dense(dense, kernel_initializer=init(), name="fc")(x)
        x = keras.layers.Activation("relu", name="fc_act")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_drop")(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax",
        kernel_initializer=keras.initializers.GlorotUniform(seed=None if seed is None else next(seeds)),
        name="predictions",
    )(x)
    return keras.Model(inputs, outputs, name=name)
