"""How fast is fervis' batched activation maximisation, beside one filter at a time?

On the default compact model (the packaged quick model trained on the embedded faces when
it is installed, else a fresh ``compact`` build: timings do not depend on the weights), one
run prints:

* **batched**: :func:`fervis.filters.maximize` on 64 ascent images of one layer at once,
  ``--steps`` steps (default 256), ``readable`` preset. The compact model's widest layer
  has 32 filters (``block3_act2``), so the 64 images are its 32 filters x 2 seeds; with
  ``--arch vgg`` the layer is ``block1_act2``, 64 filters x 1 seed;
* **one at a time**: the same 64 images as 64 runs of batch 1 (the compiled step is reused
  across runs, so this is the loop's cost, not tracing); ``--loop-images`` of them are run
  and the time is scaled to 64;
* the time the FLOPs allow at this CPU's measured inference rate through the truncated
  model (a step costs a forward and an input-gradient backward pass, about twice the
  forward FLOPs, weight gradients excluded).

The target: the 64-image batch x 256 steps in at most 60 s on 2 CPU cores.
``FERVIS_MAX_STEPS`` is ignored here (unset for this process).

Usage: ``python benchmarks/bench_filters.py [--steps 256] [--loop-images 8] [--arch compact]``
"""

import argparse
import os
import platform
import time

from _common import best_of

os.environ.pop("FERVIS_MAX_STEPS", None)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench_training import forward_flops  # noqa: E402
from fervis import filters, models  # noqa: E402


def default_model(arch):
    if arch == "compact":
        try:
            return models.load_pretrained("synthetic"), "packaged quick model (compact)"
        except ValueError:
            pass
    return models.build(arch, seed=0), f"fresh {arch} build"


def inference_rate(part, batch=64, repeat=5):
    """Faces per second through the truncated model, traced, best of ``repeat``."""
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, 48, 48, 1)).astype(np.float32))
    forward = tf.function(lambda v: part(v, training=False))
    forward(x).numpy()
    return batch / best_of(repeat, lambda: forward(x).numpy())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--loop-images", type=int, default=8, help="batch-1 runs timed (scaled to 64)")
    parser.add_argument("--arch", default="compact", choices=["compact", "vgg"])
    args = parser.parse_args(argv)

    model, what = default_model(args.arch)
    layer = "block3_act2" if args.arch == "compact" else "block1_act2"
    width = filters.layer_width(model, layer)
    seeds = max(1, 64 // width)
    chosen = list(range(min(width, 64)))
    images = len(chosen) * seeds
    part = models.truncate_at(model, layer)
    rate = inference_rate(part)
    gflop = forward_flops(part) / 1e9
    bound = images * args.steps * 2 / rate
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; TF {tf.__version__}")
    print(f"model: {what}; layer {layer} ({width} filters), {images} images = {len(chosen)} filters x {seeds} "
          f"seed(s), {args.steps} steps, readable preset")
    print(f"forward through {layer}: {gflop * 1e3:.2f} MFLOP/face, {rate:.0f} faces/s traced "
          f"-> FLOP bound for the ascent {bound:.1f} s")

    filters.maximize(model, layer, chosen, steps=2, seeds=seeds)  # warm-up: traces the batched step
    t = time.perf_counter()
    result = filters.maximize(model, layer, chosen, steps=args.steps, seeds=seeds)
    batched = time.perf_counter() - t
    print(f"batched, one compiled step per iteration: {batched:7.1f} s  "
          f"({1e3 * batched / args.steps:.0f} ms/step; target <= 60 s: {'met' if batched <= 60 else 'MISSED'})  "
          f"mean noise {result.noise.mean():.2f}")

    loop = max(1, min(args.loop_images, images))
    filters.maximize(model, layer, 0, steps=2)  # warm-up: traces the batch-1 step
    t = time.perf_counter()
    for i in range(loop):
        filters.maximize(model, layer, chosen[i % len(chosen)], steps=args.steps, seed=i // len(chosen))
    single = (time.perf_counter() - t) / loop * images
    print(f"one filter at a time (batch 1):           {single:7.1f} s  "
          f"(measured on {loop} of {images} images, scaled; {single / batched:.1f}x the batched time)")


if __name__ == "__main__":
    main()
