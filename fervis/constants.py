"""The one place that names FER2013's classes, image size, splits and the pixel conventions."""

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

__all__ = ["CLASS_NAMES", "NUM_CLASSES", "IMAGE_SIZE", "SPLITS", "INPUT_CONVENTIONS", "MODEL_INPUTS", "CLASS_ORDERS",
           "TTA", "OVERFIT_MIN_RISE"]
