"""How long does finding a model's contract take?

Target (issue 19): :func:`fervis.contract.inspect` on 1,000 labelled faces with the shipped
``pretrained:fer2013`` model in at most 5 s on this CPU.

Prints, best of ``--repeat`` runs (the machine may be shared):

* ``inspect``: the whole detection (every input convention the model's channels allow, screened
  on 250 faces, the survivors on all 1,000; both class orders; the paired tests);
* ``one forward pass``: the model on the 1,000 faces through fervis's traced graph, the unit
  the detection is counted in;
* the ratio of the two, and the same for an RGB 64x64 model (six conventions instead of four).

Faces: PublicTest of ``--data`` (default: ``$FERVIS_FER2013``, else the embedded synthetic faces;
the time does not depend on which faces, only on how many).

Usage: ``python benchmarks/bench_contract.py [--data fer2013.csv.gz] [--faces 1000] [--repeat 3]``
"""

import os

from _common import best_of, parser as _parser

import keras  # noqa: E402
import numpy as np  # noqa: E402

from fervis import contract, data, models, recipes  # noqa: E402

TARGET_S = 5.0


def rgb_model():
    """A 64x64 RGB model of about the shipped model's cost: the shipped vgg behind a resize and a grey mix."""
    shipped = models.load_pretrained("fer2013")
    inputs = keras.Input((64, 64, 3))
    mix = keras.layers.Dense(1, use_bias=False, trainable=False)
    grey = mix(keras.layers.Resizing(48, 48)(inputs))
    mix.set_weights([np.full((3, 1), 1 / 3, np.float32)])
    return keras.Model(inputs, shipped(keras.layers.Rescaling(255.0)(grey)), name="rgb_64")  # takes 0-1 pixels


def main(argv=None):
    parser = _parser(__doc__)
    parser.add_argument("--data", default=os.environ.get("FERVIS_FER2013", "synthetic"))
    parser.add_argument("--faces", type=int, default=contract.MAX_FACES)
    args = parser.parse_args(argv)
    public = data.load(args.data).subset("PublicTest")
    faces = public.sample(min(args.faces, len(public)), stratify=True, seed=0)
    print(f"fervis.contract.inspect on {len(faces):,} PublicTest faces of {args.data} (best of {args.repeat})")
    print(f"{'model':<22}{'inspect s':>11}{'forward s':>11}{'ratio':>8}{'target s':>10}  verdict")
    for name, model in (("pretrained:fer2013", models.load_pretrained("fer2013")), ("rgb 64x64 (6 inputs)", rgb_model())):
        found = contract.inspect(model, faces)  # warm: traced graphs exist, as in a session
        x = faces.x() if model.input_shape[-1] == 1 else models.preprocess(faces.x(), (64, 64, 3)).numpy()
        forward = best_of(args.repeat, lambda: recipes.predict(model, x))
        inspect = best_of(args.repeat, lambda: contract.inspect(model, faces))
        print(f"{name:<22}{inspect:>11.2f}{forward:>11.2f}{inspect / forward:>8.1f}{TARGET_S:>10.1f}  "
              f"{found.model_input}, {found.output}, accuracy {100 * (found.accuracy or 0):.1f} %")


if __name__ == "__main__":
    main()
