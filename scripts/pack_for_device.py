"""Pack FER2013 for scripts/train_on_device.py: the device machine takes at most 64 MiB.

Row-wise pixel differences compress better with LZMA than the raw bytes (56 MB vs 57 MB; the
CSV.gz is 85 MB). The packed files go to an ignored folder and are never committed.

Usage: python scripts/pack_for_device.py path/to/fer2013.csv[.gz] .devdata
"""

import lzma
import os
import sys

import numpy as np
import pandas as pd


def main(src, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    frame = pd.read_csv(src)
    x = np.stack([np.asarray(p.split(), np.uint8) for p in frame["pixels"]]).reshape(-1, 48, 48)
    dx = np.diff(x.astype(np.int16), axis=2, prepend=0).astype(np.uint8)
    with open(os.path.join(out_dir, "fer_x.xz"), "wb") as f:
        f.write(lzma.compress(dx.tobytes(), preset=6))
    np.savez(os.path.join(out_dir, "fer_meta.npz"), y=frame["emotion"].to_numpy(np.int8),
             train=(frame["Usage"] == "Training").to_numpy())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
