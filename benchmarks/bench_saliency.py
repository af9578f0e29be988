"""How fast are fervis' saliency maps on this CPU, beside the usual ways to compute them?

On the compact default model (the packaged quick model, else a fresh ``compact`` build:
timings do not depend on the weights) and 3,589 faces (FER2013's
PublicTest size; FER2013 faces from ``$FERVIS_FER2013`` when set, else synthetic), one run
prints side by side:

* plain inference, images/s (fervis' traced forward graph, best of batch 64 and 256), and the forward GFLOP per
  image counted from the layer shapes (``bench_training.forward_flops``);
* vanilla gradients: :func:`fervis.saliency.explain` (one traced graph, batched), the
  per-image ``tf.GradientTape`` loop of homework solutions (eager; timed on ``--loop-faces``
  faces, reported per face), and tf-keras-vis' own batched ``Saliency`` (eager tape, same
  batches, ``ReplaceToLinear``); tf-keras-vis and the eager loop run on the compact model
  only, which does not trigger the oneDNN eager-gradient crash;
* SmoothGrad with 20 samples over every face, against the time its FLOPs allow at the
  measured inference rate: a gradient w.r.t. the input costs a forward pass and a backward
  pass through the data path (about the forward FLOPs again, no weight gradients), so the
  bound is ``samples x faces x 2 / inference rate``;
* deletion and insertion curves (16 steps, both curves, batched across faces) on
  ``--di-faces`` faces, against the same bound (``faces x 17 x 2 / inference rate``).

Each timing is the best of ``--repeat`` runs (one for the eager loop and deletion/insertion)
after a warm-up call on a few faces that absorbs tracing.

Usage: ``python benchmarks/bench_saliency.py [--faces 3589] [--loop-faces 300] [--di-faces 600] [--repeat 2]``
"""

import os
import platform
import sys
import warnings

import _common
from _common import parser as _parser

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench_training import forward_flops  # noqa: E402
from fervis import models, saliency, synthetic  # noqa: E402


def best_of(repeat, fn, warm_up=None):
    """:func:`_common.best_of` after one call of ``warm_up`` (default ``fn`` itself) that absorbs
    tracing, and ``fn``'s last result."""
    results = [(warm_up or fn)()]
    return _common.best_of(repeat, lambda: results.append(fn())), results[-1]


def faces(n):
    path = os.environ.get("FERVIS_FER2013")
    if path:
        from fervis import data

        ds = data.load(path)
        test = ds.subset("PublicTest") if "PublicTest" in set(ds.splits) else ds
        return test.images[:n].astype(np.float32)[..., None], f"FER2013 ({len(test.images[:n])} faces)"
    images, _, _ = synthetic.generate(n, seed=1)
    return images.astype(np.float32)[..., None], f"synthetic ({n} faces)"


def default_model():
    """The packaged quick model (compact, trained on the embedded faces), else a fresh compact."""
    try:
        return models.load_pretrained("synthetic"), "packaged quick model (compact)"
    except ValueError:  # not installed: timings do not depend on the weights
        return models.build("compact", seed=0), "compact (fresh weights)"


def eager_loop(model, x):
    """The per-image loop of homework solutions: a new tape, a softmax score, one face at a time."""
    out = np.empty(x.shape[:3], np.float32)
    for i in range(len(x)):
        image = tf.convert_to_tensor(x[i:i + 1])
        with tf.GradientTape() as tape:
            tape.watch(image)
            preds = model(image, training=False)
            score = preds[:, int(tf.argmax(preds[0]))]
        out[i] = np.abs(tape.gradient(score, image).numpy()[0, ..., 0])
    return out


def tf_keras_vis_saliency(model, x, batch):
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    classes = np.asarray(saliency.predict(model, x)).argmax(axis=1)
    visualizer = Saliency(model, model_modifier=ReplaceToLinear(), clone=True)

    def run():
        return np.concatenate([
            visualizer(CategoricalScore(list(classes[i:i + batch])), x[i:i + batch], normalize_map=False)
            for i in range(0, len(x), batch)
        ])

    return run


def main(argv=None):
    parser = _parser(__doc__, repeat=2)
    parser.add_argument("--faces", type=int, default=3589)
    parser.add_argument("--loop-faces", type=int, default=300, help="faces timed in the per-image eager loop")
    parser.add_argument("--samples", type=int, default=20, help="SmoothGrad samples")
    parser.add_argument("--steps", type=int, default=16, help="deletion/insertion steps")
    parser.add_argument("--di-faces", type=int, default=600, help="faces timed for deletion/insertion")
    parser.add_argument("--batch", type=int, default=64, help="images per graph call for gradients")
    args = parser.parse_args(argv)
    os.environ.pop("FERVIS_MAX_STEPS", None)  # measure the real sample and step counts
    # tf-keras-vis passes a list where the model names its input: Keras warns on every call.
    warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")

    x, what = faces(args.faces)
    n = len(x)
    model, which = default_model()
    fwd = forward_flops(model)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
          f"TensorFlow {tf.__version__}, Keras {keras.__version__}")
    print(f"model: {which}, {model.count_params():,} parameters, {fwd / 1e9:.4f} forward GFLOP/face; data: {what}")
    print(f"best of {args.repeat} after a warm-up\n")

    warm = x[:args.batch]
    # The bound below is only as strict as this rate: take the best batch size.
    t_inf, size = min((best_of(args.repeat, lambda: saliency.predict(model, x, batch_size=b),
                               lambda: saliency.predict(model, warm, batch_size=b))[0], b) for b in (64, 256))
    rate = n / t_inf
    print(f"plain inference (batch {size})  {1e3 * t_inf / n:8.3f} ms/face   {rate:8.0f} faces/s   "
          f"{rate * fwd / 1e9:6.1f} GFLOP/s achieved")

    t_batched, maps = best_of(args.repeat, lambda: saliency.explain(model, x, "gradient", batch_size=args.batch,
                                                                    normalize=False),
                              lambda: saliency.explain(model, warm, "gradient", batch_size=args.batch))
    k = min(args.loop_faces, n)
    t_loop, _ = best_of(1, lambda: eager_loop(model, x[:k]), lambda: eager_loop(model, x[:2]))
    t_loop_face = t_loop / k
    t_vis, vis_maps = best_of(args.repeat, tf_keras_vis_saliency(model, x, args.batch),
                              tf_keras_vis_saliency(model, warm, args.batch))
    # The three compute the same thing on the same class; check before comparing speed.
    close_vis = np.allclose(maps, vis_maps, rtol=1e-3, atol=1e-6 * np.abs(maps).max())
    print("\nvanilla gradients, all faces")
    print(f"  fervis explain (graph, batch {args.batch})   {1e3 * t_batched / n:8.3f} ms/face   "
          f"{t_batched:7.2f} s total")
    print(f"  per-image GradientTape loop       {1e3 * t_loop_face:8.3f} ms/face   ({k} faces timed)   "
          f"speed-up {t_loop_face / (t_batched / n):6.1f}x   (target >= 20x)")
    print(f"  tf-keras-vis Saliency (batch {args.batch})   {1e3 * t_vis / n:8.3f} ms/face   {t_vis:7.2f} s total   "
          f"speed-up {t_vis / t_batched:6.2f}x   (target >= 1.5x)   same maps: {close_vis}")

    t_sg, _ = best_of(args.repeat, lambda: saliency.explain(model, x, "smoothgrad", samples=args.samples,
                                                            batch_size=args.batch),
                      lambda: saliency.explain(model, warm, "smoothgrad", samples=2, batch_size=args.batch))
    bound_sg = args.samples * n * 2 / rate
    print(f"\nSmoothGrad, {args.samples} samples, all faces")
    print(f"  measured {t_sg:7.2f} s   FLOP bound at the inference rate {bound_sg:7.2f} s   "
          f"ratio {t_sg / bound_sg:5.2f}   (target <= 2)")

    m = min(args.di_faces, n)
    gradcam = saliency.explain(model, x[:m], "gradcam")
    t_di, _ = best_of(1, lambda: saliency.deletion_insertion(model, x[:m], gradcam, steps=args.steps),
                      lambda: saliency.deletion_insertion(model, x[:min(m, len(warm))], gradcam[:len(warm)], steps=2))
    bound_di = m * (args.steps + 1) * 2 / rate
    print(f"\ndeletion + insertion, {args.steps} steps, {m} faces (Grad-CAM maps), batched across faces")
    print(f"  measured {t_di:7.2f} s ({1e3 * t_di / m:.2f} ms/face)   forward-pass bound at the inference rate "
          f"{bound_di:7.2f} s   ratio {t_di / bound_di:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
