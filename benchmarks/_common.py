"""What every benchmark script starts with: quiet TensorFlow, the checkout importable, best-of timing.

Import it first, before Keras or fervis (``import _common`` works because Python puts the
script's own folder, ``benchmarks/``, on ``sys.path``).
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT), str(ROOT / "benchmarks")):
    if _path not in sys.path:
        sys.path.insert(0, _path)


def best_of(repeat, fn):
    """The shortest wall time, in seconds, of ``repeat`` calls of ``fn`` (the machine may be shared)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def parser(doc, repeat=3):
    """An argument parser described by the first paragraph of ``doc``, with ``--repeat``."""
    out = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    out.add_argument("--repeat", type=int, default=repeat, help="timed runs; the best is shown")
    return out
