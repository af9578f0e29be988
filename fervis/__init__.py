"""fervis: what has a facial-expression CNN learned?

Four questions, one module each: :mod:`fervis.saliency` (where does it look),
:mod:`fervis.filters` (what do its filters want), :mod:`fervis.labels` (why some
labels are easy and others hard) and :mod:`fervis.monitoring` (how it learns),
beside the shared :mod:`fervis.data`, :mod:`fervis.synthetic`, :mod:`fervis.models`
and :mod:`fervis.training`.
"""

import os as _os

# TensorFlow prints several lines of C++ start-up chatter on import; users of a
# notebook never need them. setdefault leaves a user's own choice alone.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fervis.constants import CLASS_NAMES, NUM_CLASSES, IMAGE_SIZE  # noqa: E402

__version__ = "0.1.0"
__all__ = ["CLASS_NAMES", "NUM_CLASSES", "IMAGE_SIZE", "__version__"]
