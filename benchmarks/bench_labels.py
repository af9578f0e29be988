"""How long does LIME take per face, against plain lime_image and against the model's own cost?

Target (issue 6): 1,000 samples per face in at most 2 s on the default model (the ``quick``
recipe's architecture; its weights do not change the time, so an untrained build is used).

For 48x48 synthetic faces this prints seconds per face, best of ``--repeat`` runs, for:

* ``fervis``: :func:`fervis.labels.lime_explain` (SLIC superpixels, the neighbourhood built in
  one numpy step, the model called through one traced graph in batches of 500);
* ``lime + SLIC, one batch``: ``lime_image.LimeImageExplainer.explain_instance`` with the same
  segmentation and one ``model.predict`` call for all samples (lime's per-sample Python loop
  is what is left of the difference);
* ``lime defaults``: ``explain_instance`` as its README calls it (quickshift segmentation,
  ``batch_size=10``, ``top_labels=5``) with ``model.predict``: the baseline (one run, at most
  two faces: it takes about 20 s a face);
* ``model only``: 1,000 forward passes through the traced graph, the floor for any LIME
  with 1,000 samples; with the CPU's measured matmul FLOP/s and the model's FLOPs, the
  fraction of the CPU's bound that the forward passes reach.

The machine may be shared: each timing is the best of ``--repeat`` runs.

Usage: ``python benchmarks/bench_labels.py [--faces 4] [--samples 1000] [--repeat 3]``
"""

import os
import sys

from _common import best_of, parser as _parser

os.environ.setdefault("TQDM_DISABLE", "1")  # lime's own progress bar, per face

import keras  # noqa: E402
import numpy as np  # noqa: E402

from bench_training import forward_flops, matmul_flops  # noqa: E402
from fervis import labels, models, recipes, saliency, synthetic  # noqa: E402

TARGET_S = 2.0


def main(argv=None):
    parser = _parser(__doc__)
    parser.add_argument("--faces", type=int, default=4, help="faces per timed run")
    parser.add_argument("--samples", type=int, default=1000, help="LIME samples per face")
    args = parser.parse_args(argv)
    from lime import lime_image

    arch = recipes.get("quick").arch
    model = models.build(arch, seed=0)
    faces = synthetic.generate(args.faces, seed=0)[0]
    x = faces.astype(np.float32)[..., None]
    n, s = args.faces, args.samples

    peak_tf, peak_np = matmul_flops()
    peak = max(peak_tf, peak_np)
    fwd = forward_flops(model)
    print(f"model: {arch!r} (the quick recipe's), {model.count_params():,} parameters, "
          f"{fwd / 1e6:.1f} MFLOP per face; {os.cpu_count()} CPUs visible, Keras {keras.__version__}")
    print(f"CPU bound: float32 matmul {peak / 1e9:.1f} GFLOP/s -> {s} forward passes take at least "
          f"{s * fwd / peak:.2f} s")
    print(f"{n} faces, {s} samples per face, best of {args.repeat}\n")

    segments = labels.lime_segments(faces)
    noise = np.random.default_rng(0).uniform(0, 255, (s, 48, 48, 1)).astype(np.float32)
    saliency.predict(model, noise)  # tracing
    labels.lime_explain(model, x[:1], num_samples=s)  # first-call costs
    model.predict(noise[:10], verbose=0)

    def plain_lime(segmentation, batch_size, top_labels, faces_timed=n):
        def classifier_fn(batch):
            return model.predict(batch[..., :1], batch_size=max(batch_size, 32), verbose=0)

        for i in range(faces_timed):
            kwargs = {} if segmentation is None else {"segmentation_fn": lambda _img, i=i: segmentation[i]}
            lime_image.LimeImageExplainer(random_state=0).explain_instance(
                np.repeat(x[i], 3, axis=-1).astype(np.float64), classifier_fn, top_labels=top_labels,
                num_samples=s, batch_size=batch_size, **kwargs)

    rows = [
        ("fervis lime_explain", best_of(args.repeat, lambda: labels.lime_explain(model, x, num_samples=s)) / n),
        ("lime + SLIC, one batch", best_of(args.repeat, lambda: plain_lime(segments, s, None)) / n),
        # About 20 s per face: timed once, on at most two faces.
        ("lime defaults (baseline)", best_of(1, lambda: plain_lime(None, 10, 5, min(n, 2))) / min(n, 2)),
        ("model only (floor)", best_of(args.repeat, lambda: saliency.predict(model, noise, batch_size=500))),
    ]
    baseline = rows[2][1]
    header = f"{'method':26} {'s/face':>8} {'vs baseline':>12} {'faces/s':>8}"
    print(header)
    print("-" * len(header))
    for name, seconds in rows:
        print(f"{name:26} {seconds:>8.3f} {baseline / seconds:>11.1f}x {1 / seconds:>8.2f}")
    floor = rows[3][1]
    print(f"\nforward passes reach {s * fwd / floor / 1e9:.1f} GFLOP/s = {s * fwd / floor / peak:.2f} of the bound; "
          f"LIME's own work (segmenting, sampling, ridge fit) adds {rows[0][1] - floor:.3f} s per face")
    ok = rows[0][1] <= TARGET_S
    print(f"target: {s} samples per face <= {TARGET_S:.0f} s on the default model: "
          f"{'met' if ok else 'NOT met'} ({rows[0][1]:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
