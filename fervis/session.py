"""What every notebook does first: the data, the model and the faces to explain.

The four notebooks start from the same three settings (their ``parameters`` cell):
``DATA`` (a source for :func:`fervis.data.load`), ``MODEL`` ("auto", a path, or
"pretrained:fer2013") and ``BUDGET`` ("quick" or "full"). :func:`prepare` turns them into a
:class:`Session` so no notebook repeats that logic.
"""

from __future__ import annotations

import dataclasses

__all__ = ["BUDGETS", "Session", "prepare"]

# quick: a notebook finishes in about a minute on 2 CPU cores; full: every face.
BUDGETS = {
    "quick": {"max_eval": 600, "max_train": 6000},
    "full": {"max_eval": None, "max_train": None},
}


@dataclasses.dataclass(frozen=True)
class Session:
    """The objects a notebook works on.

    Attributes
    ----------
    dataset : fervis.data.Dataset
        Everything that was loaded.
    model : keras.Model
        Takes raw 0-255 pixels ``(n, 48, 48, 1)``, outputs class probabilities.
    evaluation : fervis.data.Dataset
        The faces analysed: the ``split`` of ``dataset`` (stratified sample under ``quick``).
    budget : str
    """

    dataset: object
    model: object
    evaluation: object
    budget: str


def prepare(data="synthetic", model="auto", budget="quick", split="PublicTest", seed=0):
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

    Returns
    -------
    Session

    Example
    -------
    >>> s = prepare("synthetic", budget="quick")  # doctest: +SKIP
    >>> s.model.output_shape
    (None, 7)
    """
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
    fitted = training.model_for(trainable, model)
    evaluation = dataset.subset(split) if split in set(dataset.splits) else dataset
    if caps["max_eval"] and len(evaluation) > caps["max_eval"]:
        evaluation = evaluation.sample(caps["max_eval"], stratify=evaluation.labeled, seed=seed)
    return Session(dataset=dataset, model=fitted, evaluation=evaluation, budget=budget)
