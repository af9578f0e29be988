"""What every notebook does first: the data, the model and the faces to explain.

The four notebooks start from the same three settings (their ``parameters`` cell):
``DATA`` (a source for :func:`fervis.data.load`), ``MODEL`` ("auto", a path, or
"pretrained:fer2013") and ``BUDGET`` ("quick" or "full"), and ``MODEL_INPUT`` / ``CLASS_ORDER``
("auto", or how the model was trained). :func:`prepare` turns them into a :class:`Session` so no
notebook repeats that logic; its model is always read right: :func:`fervis.contract.inspect` finds
how the model wants its faces and :func:`fervis.contract.apply` adapts it.
"""

from __future__ import annotations

import dataclasses

from fervis._checks import declared_input, parse_class_order
from fervis._startup import start_tensorflow
from fervis.constants import BUDGETS  # the one budget table, re-exported: every notebook's BUDGET

# Every notebook imports this module first: TensorFlow starts here, its C++ start-up text (a "CUDA
# error" on a machine without a GPU) kept out of the first cell's output.
start_tensorflow()

__all__ = ["BUDGETS", "Session", "prepare"]


@dataclasses.dataclass(frozen=True)
class Session:
    """The objects a notebook works on.

    Attributes
    ----------
    dataset : fervis.data.Dataset
        Everything that was loaded.
    model : keras.Model
        Takes raw 0-255 pixels ``(n, 48, 48, 1)``, outputs class probabilities in FER2013's
        order: the given model itself, or adapted to that by its contract.
    evaluation : fervis.data.Dataset
        The faces analysed: the ``split`` of ``dataset`` (stratified sample under ``quick``).
    budget : str
    contract : fervis.contract.Contract
        How the given model wants its faces, and how that was decided; ``print`` it.
    """

    dataset: object
    model: object
    evaluation: object
    budget: str
    contract: object = None


def prepare(data="synthetic", model="auto", budget="quick", split="PublicTest", seed=0, model_input="auto",
            class_order="auto"):
    """Load the data, get the model (cached or trained), and pick the faces to explain.

    Parameters
    ----------
    data : str or path, default "synthetic"
        Anything :func:`fervis.data.load` reads.
    model : str, default "auto"
        "auto" uses the shipped FER2013 model on FER2013 and otherwise trains (once, then
        cached) the ``quick`` recipe; "train" (or "train:<recipe>") retrains even on FER2013;
        or a ``.keras``/``.h5`` path, or "pretrained:fer2013".
    budget : {"quick", "full"}
    split : str, default "PublicTest"
        The split analysed; when the data has no such split, all of it.
    seed : int
    model_input : str, default "auto"
        The pixel convention the model was trained with (one of
        :data:`fervis.contract.MODEL_INPUTS`); "auto" detects it on the analysed faces.
    class_order : str or list of str, default "auto"
        "fer2013", "alphabetical" or the class names in the model's output order; "auto" detects it.

    Returns
    -------
    Session

    Example
    -------
    >>> s = prepare("synthetic", budget="quick")  # doctest: +SKIP
    >>> s.model.output_shape  # doctest: +SKIP
    (None, 7)
    """
    from fervis import contract as contract_mod
    from fervis import data as data_mod
    from fervis import training

    if budget not in BUDGETS:
        raise ValueError(
            f"The 'budget' parameter of fervis.session.prepare must be one of {sorted(BUDGETS)}. "
            f"Got {budget!r} instead."
        )
    caps = BUDGETS[budget]
    dataset = data_mod.load(data)
    trainable = dataset
    if caps["max_train"] and "Training" in set(dataset.splits):
        train = dataset.subset("Training")
        if len(train) > caps["max_train"]:
            # Only what a model is trained on is capped; the analysed split stays whole.
            trainable = train.sample(caps["max_train"], stratify=True, seed=seed)
    parse_class_order(class_order, "fervis.session.prepare")  # before any training
    training.check_model_spec(model, "fervis.session.prepare")
    declared_input(model_input, "fervis.session.prepare")
    given = training.model_for(trainable, model)
    evaluation = dataset.subset(split) if split in set(dataset.splits) else dataset
    if caps["max_eval"] and len(evaluation) > caps["max_eval"]:
        evaluation = evaluation.sample(caps["max_eval"], stratify=evaluation.labeled, seed=seed)
    # The contract is checked on the faces analysed (labelled ones, at most 1,000); an unlabelled
    # split leaves it to the rest of the data.
    faces = evaluation if (evaluation.labels >= 0).any() else dataset
    found = contract_mod.inspect(given, faces, model_input=model_input, class_order=class_order, seed=seed)
    return Session(dataset=dataset, model=contract_mod.apply(given, found), evaluation=evaluation, budget=budget,
                   contract=found)
