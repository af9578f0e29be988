"""How fast does each architecture train on this CPU, against what its FLOPs allow?

For each architecture (tiny and compact with the quick recipe; vgg and vgg-wide with the fer2013
recipe, vgg also without augmentation and in bfloat16 mixed precision) this prints:

* forward GFLOP per image, counted from the layer shapes (conv and dense multiply-adds x 2;
  pooling, normalisation and activations are left out, they are memory-bound and small);
  a training step is taken as 3x the forward pass (forward, gradient w.r.t. activations,
  gradient w.r.t. weights);
* measured training images/s: ``fit`` steps of the recipe's training model (augmentation
  included), after a warm-up epoch that absorbs tracing and compilation;
* achieved GFLOP/s = images/s x 3 x forward FLOPs;
* the bound: the CPU's achievable FLOP/s, measured with a large float32 matmul through
  TensorFlow (the same oneDNN/Eigen kernels and thread pool that train the model; NumPy's
  BLAS is shown beside it), divided by the FLOPs per training image;
* fraction = measured / bound.

Then what mixup costs: vgg with the fer2013 recipe through ``fervis.training.fit``, the way a recipe
trains, on arrays and with ``--mixup`` (batches blended on the data side in NumPy, fed to Keras as a
``PyDataset``), the two taking turns, each timed on the second epoch of a fit (the first traces).

The machine may be shared: each timing is the best of ``--repeat`` runs.

Usage: ``python benchmarks/bench_training.py [--archs tiny compact vgg] [--steps 12] [--repeat 3] [--mixup 0.2]``
(fewer steps are noisy on a shared 2-core CPU: 4 steps once read 99 images/s for a 203 images/s row).
"""

import os
import platform
import sys
import time

from _common import best_of, parser as _parser

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from fervis import models, recipes, training  # noqa: E402


def _layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def forward_flops(model):
    """Forward FLOPs per image: 2 x the multiply-adds of the conv and dense layers."""
    macs = 0
    for layer in _layers(model):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)):
            out_h, out_w, out_c = layer.output.shape[1:]
            in_c = layer.input.shape[-1]
            kh, kw = layer.kernel_size
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                macs += out_h * out_w * out_c * kh * kw
            elif isinstance(layer, keras.layers.SeparableConv2D):
                mid = in_c * layer.depth_multiplier
                macs += out_h * out_w * mid * kh * kw + out_h * out_w * mid * out_c
            else:
                macs += out_h * out_w * out_c * kh * kw * in_c // layer.groups
        elif isinstance(layer, keras.layers.Dense):
            macs += layer.input.shape[-1] * layer.units
    return 2 * macs


def matmul_flops(n=2048, repeat=5):
    """Achievable float32 FLOP/s of this CPU: the best of ``repeat`` n x n matmuls (TF, NumPy)."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    ta, tb = tf.constant(a), tf.constant(b)
    matmul = tf.function(lambda x, y: tf.linalg.matmul(x, y))
    matmul(ta, tb).numpy()  # warm-up
    best_tf = best_of(repeat, lambda: matmul(ta, tb).numpy())
    best_np = best_of(repeat, lambda: a @ b)
    flops = 2.0 * n ** 3
    return flops / best_tf, flops / best_np


def train_images_per_s(arch, recipe, batch, steps, repeat, policy="float32", augment=True):
    recipe = recipes.get(recipe).replace(arch=arch, batch_size=batch, epochs=1 + repeat)
    if not augment:
        recipe = recipe.replace(flip=False, shift=0.0, rotation=0.0, zoom=0.0, erasing=0.0)
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = models.build(arch, seed=0)
        n = batch * steps
        x = np.random.default_rng(0).integers(0, 256, (n, 48, 48, 1)).astype(np.float32)
        y = keras.utils.to_categorical(np.arange(n) % 7, 7)
        trainer = recipes.compile_for_training(model, recipe, steps)
        trainer.fit(x, y, batch_size=batch, epochs=1, verbose=0)  # tracing, compilation, first-touch
        best = best_of(repeat, lambda: trainer.fit(x, y, batch_size=batch, epochs=1, verbose=0))
    finally:
        keras.config.set_dtype_policy("float32")
    return n / best, model


def fit_images_per_s(recipe, batch, steps, mixup):
    """Training images/s of ``fervis.training.fit``'s second epoch (the first traces and compiles) on
    random faces, with the recipe's ``mixup`` set to ``mixup`` (0: arrays straight to Keras)."""
    recipe = recipes.get(recipe).replace(batch_size=batch, epochs=2, warmup_epochs=0, mixup=mixup,
                                         recalibrate_bn=False)
    n = batch * steps
    x = np.random.default_rng(0).integers(0, 256, (n, 48, 48, 1)).astype(np.float32)
    stamps = []
    timer = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: stamps.append(time.perf_counter()),
                                           on_epoch_end=lambda epoch, logs: stamps.append(time.perf_counter()))
    training.fit(models.build(recipe.arch, seed=0), (x, np.arange(n) % 7), recipe, callbacks=[timer], verbose=False)
    return n / (stamps[3] - stamps[2])


# (arch, recipe, batch, dtype policy, augmentation): the embedded default's models, then the
# shipped FER2013 model's recipe as it trains, without its augmentation (what the in-graph
# augmentation costs), in bfloat16 mixed precision (this EPYC has AVX-512 BF16), and on vgg-wide.
ROWS = [
    ("tiny", "quick", 64, "float32", True),
    ("compact", "quick", 64, "float32", True),
    ("vgg", "fer2013", 128, "float32", True),
    ("vgg", "fer2013", 128, "float32", False),
    ("vgg", "fer2013", 128, "mixed_bfloat16", True),
    ("vgg-wide", "fer2013", 128, "float32", True),
]
FER2013_TRAINING_FACES = 28_709


def main(argv=None):
    parser = _parser(__doc__)
    parser.add_argument("--archs", nargs="+", default=list(models.ARCHITECTURES), choices=models.ARCHITECTURES)
    parser.add_argument("--steps", type=int, default=12, help="training steps per timed epoch")
    parser.add_argument("--mixup", type=float, default=0.2, help="the Beta parameter of the mixup comparison; 0: skip it")
    args = parser.parse_args(argv)

    peak_tf, peak_np = matmul_flops()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
          f"TensorFlow {tf.__version__}, Keras {keras.__version__}")
    print(f"float32 2048x2048 matmul: TensorFlow {peak_tf / 1e9:.1f} GFLOP/s, NumPy {peak_np / 1e9:.1f} GFLOP/s "
          f"(bound uses {max(peak_tf, peak_np) / 1e9:.1f})")
    peak = max(peak_tf, peak_np)
    print(f"training: {args.steps} steps per timed epoch, best of {args.repeat}; augmentation runs inside the "
          "compiled train step (Keras preprocessing layers), so no Python touches a single image\n")
    header = (f"{'arch':8} {'recipe':8} {'batch':>5} {'policy':15} {'aug':>4} {'params':>9} {'fwd GFLOP/img':>14} "
              f"{'images/s':>9} {'GFLOP/s':>8} {'bound img/s':>12} {'fraction':>9} {'FER2013 epoch':>14}")
    print(header)
    print("-" * len(header))
    rates = {}
    for arch, recipe, batch, policy, augment in ROWS:
        if arch not in args.archs:
            continue
        rate, model = train_images_per_s(arch, recipe, batch, args.steps, args.repeat, policy, augment)
        rates[(arch, policy, augment)] = rate
        fwd = forward_flops(model)
        achieved = rate * 3 * fwd
        bound = peak / (3 * fwd)
        print(f"{arch:8} {recipe:8} {batch:>5} {policy:15} {'on' if augment else 'off':>4} {model.count_params():>9,} "
              f"{fwd / 1e9:>14.4f} {rate:>9.1f} {achieved / 1e9:>8.1f} {bound:>12.1f} {rate / bound:>9.2f} "
              f"{FER2013_TRAINING_FACES / rate / 60:>10.1f} min", flush=True)
    base = rates.get(("vgg", "float32", True))
    if base:
        if ("vgg", "float32", False) in rates:
            print(f"\nvgg: augmentation costs {1 - base / rates[('vgg', 'float32', False)]:.0%} of the training rate")
        if ("vgg", "mixed_bfloat16", True) in rates:
            print(f"vgg: mixed_bfloat16 / float32 = {rates[('vgg', 'mixed_bfloat16', True)] / base:.2f}x "
                  "(the recipe uses mixed precision only if this is clearly above 1)")
        if ("vgg-wide", "float32", True) in rates:
            print(f"vgg-wide / vgg = {rates[('vgg-wide', 'float32', True)] / base:.2f}x the training rate")
    if args.mixup and "vgg" in args.archs:
        best = {0.0: 0.0, args.mixup: 0.0}
        for _ in range(args.repeat):
            for mixup in best:  # turn by turn: both meet the machine's drift
                best[mixup] = max(best[mixup], fit_images_per_s("fer2013", 128, args.steps, mixup))
        print(f"\nvgg, fer2013 recipe through fervis.training.fit: arrays {best[0.0]:.1f} images/s, "
              f"mixup {args.mixup} {best[args.mixup]:.1f} images/s ({best[args.mixup] / best[0.0]:.2f}x; "
              f"a FER2013 epoch {FER2013_TRAINING_FACES / best[0.0] / 60:.1f} / "
              f"{FER2013_TRAINING_FACES / best[args.mixup] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
