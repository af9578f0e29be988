"""Starting TensorFlow without its C++ start-up text.

``import tensorflow`` and its first look for devices write lines straight to file descriptor 2
(absl's notice, oneDNN's, a failed ``cuInit`` on a machine without a GPU) before absl's logging
is set up, so ``TF_CPP_MIN_LOG_LEVEL`` cannot hold them back. In a notebook they land in the first
cell's output as "CUDA error" lines that are not results; on a terminal they come before the
command's own output. :func:`start_tensorflow` is the one place they are hidden: the ``fervis``
command calls it before importing Keras, and :mod:`fervis.session` (what every notebook imports
first) at import.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading

__all__ = ["start_tensorflow"]


def start_tensorflow():
    """Import TensorFlow and list its devices with file descriptor 2 hidden; once per process.

    Does nothing when TensorFlow is already imported (its text is out already, or was wanted).
    Hides nothing when ``TF_CPP_MIN_LOG_LEVEL`` asks for TensorFlow's notices (0 or 1; fervis
    sets 2 when it is unset). On an error the hidden text is written to stderr after all, then
    the error is raised.
    """
    with _LOCK:  # two threads must not swap file descriptor 2 around each other
        if "tensorflow" in sys.modules:
            return
        if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "").strip() in ("0", "1"):
            _import_and_find_devices()
            return
        if sys.stderr is not None:  # None when Python started without a stderr (2>&-, pythonw)
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no file descriptor 2: nothing to hide
            _import_and_find_devices()
            return
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                _import_and_find_devices()
            except BaseException:
                os.dup2(saved, 2)
                captured.seek(0)
                text = captured.read()
                if sys.stderr is not None:
                    sys.stderr.write(text.decode(errors="replace"))
                else:
                    os.write(2, text)
                raise
            finally:
                os.dup2(saved, 2)
                os.close(saved)


_LOCK = threading.Lock()


def _import_and_find_devices():
    import tensorflow as tf

    tf.config.list_physical_devices()  # where cuInit runs, and fails without a GPU
