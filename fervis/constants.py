"""The one place that names FER2013's classes, image size, splits, the pixel conventions and the budgets."""

CLASS_NAMES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 48
SPLITS = ("Training", "PublicTest", "PrivateTest")
#: How a classifier may want its pixels (see fervis.models.preprocess): raw 0-255, 0-1, -1-1,
#: per-image standardised, ImageNet mean/std per RGB channel, Caffe BGR mean subtraction.
INPUT_CONVENTIONS = ("0-255", "0-1", "-1-1", "standardized", "imagenet", "caffe")
#: What a user may declare as a model's pixels: "auto" (found on the faces) or a convention.
MODEL_INPUTS = ("auto",) + INPUT_CONVENTIONS
#: The class orders a user may name (or write the 7 names in the model's output order).
CLASS_ORDERS = ("auto", "fer2013", "alphabetical")
#: Test-time augmentations fervis.recipes.predict knows (here so the CLI lists them without Keras).
TTA = ("none", "flip", "tencrop", "flip-rotate")
#: How far above its best so far validation loss must be for fervis.monitoring.overfitting to flag
#: it, as a fraction of that best. The shipped FER2013 model's 100 epochs wander up to 7 % above their
#: running best (a high learning rate, augmented batches) and end within 0.4 % of their
#: minimum: a wiggle, not overfitting. A model that memorises its training faces ends far above.
OVERFIT_MIN_RISE = 0.1

#: The one budget table: what each notebook ``BUDGET`` allows. quick: a notebook finishes in about
#: a minute on 2 CPU cores; full: every face, the full step counts.
#:
#: - ``max_eval``, ``max_train``: faces analysed (a stratified sample of the split) and faces a model
#:   is trained on when one must be (:func:`fervis.session.prepare`); None: all of them.
#: - ``ascent_steps``: gradient-ascent steps of notebook 2 (:func:`fervis.filters.maximize`).
#: - ``plan``: notebook 4's training run (:func:`fervis.monitoring.training_plan`) on synthetic faces,
#:   ``plan_real`` on real ones (a dataset without regions, e.g. FER2013); None: every face, the
#:   recipe's own epochs and batch size. quick trains on a sample, in batches of 32 that give the
#:   batch-norm statistics enough steps to settle in six epochs. On real faces a fresh copy of the
#:   shipped vgg on 2,400 faces for 6 epochs stays at 25 % validation accuracy (always "happy") and
#:   teaches nothing to watch; the ``small`` architecture on 8,000 faces for 8 epochs of 64 leaves
#:   that plateau: measured on FER2013 (PublicTest sample of 350, seed 0, 2 shared CPU cores) 45 % at
#:   epoch 7 and 49 % at epoch 8 in 5.4 minutes of plain training, and through this plan with
#:   notebook 4's callbacks 47 % and 51 % in 4.3 minutes (no overfitting flag). compact, tried
#:   instead on the same 8,000 faces, reached 29 % after 6 epochs.
BUDGETS = {
    "quick": {
        "max_eval": 600, "max_train": 6000, "ascent_steps": 16,
        "plan": {"n_train": 2400, "n_val": 350, "epochs": 6, "batch_size": 32},
        "plan_real": {"n_train": 8000, "n_val": 350, "epochs": 8, "batch_size": 64, "architecture": "small"},
    },
    "full": {
        "max_eval": None, "max_train": None, "ascent_steps": 256,
        "plan": {"n_train": None, "n_val": None, "epochs": None, "batch_size": None},
        "plan_real": {"n_train": None, "n_val": None, "epochs": None, "batch_size": None},
    },
}

__all__ = ["CLASS_NAMES", "NUM_CLASSES", "IMAGE_SIZE", "SPLITS", "INPUT_CONVENTIONS", "MODEL_INPUTS", "CLASS_ORDERS",
           "TTA", "OVERFIT_MIN_RISE", "BUDGETS"]
