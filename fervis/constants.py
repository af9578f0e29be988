"""The one place that names FER2013's classes and image size."""

CLASS_NAMES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 48
SPLITS = ("Training", "PublicTest", "PrivateTest")

__all__ = ["CLASS_NAMES", "NUM_CLASSES", "IMAGE_SIZE", "SPLITS"]
