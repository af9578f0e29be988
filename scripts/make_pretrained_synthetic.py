"""Rebuild fervis/pretrained/synthetic.keras: the quick recipe trained on the embedded faces.

The notebooks' stored outputs are regression checks (nbval). CPU training is not bit-for-bit
repeatable across runs (oneDNN's threaded reductions), so the notebooks explain this packaged
model instead of a freshly trained one whenever the data is the embedded default.

Usage: python scripts/make_pretrained_synthetic.py [FERVIS_HOME used for training]
"""

import json
import os
import sys
import tempfile

if len(sys.argv) > 1:
    os.environ["FERVIS_HOME"] = sys.argv[1]
else:
    os.environ.setdefault("FERVIS_HOME", tempfile.mkdtemp(prefix="fervis-"))

from fervis import data, models, training  # noqa: E402

dataset = data.load("synthetic")
model = training.load_or_train(dataset, "quick")
result = training.evaluate(model, dataset, split="PublicTest")
path = models.pretrained_path("synthetic")
model.save(path)  # compile state is not needed for inference
meta = {"fingerprint": dataset.fingerprint, "recipe": "quick", "arch": "compact",
        "publictest_accuracy": round(result["accuracy"], 4)}
path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
print(f"wrote {path.name}: PublicTest accuracy {meta['publictest_accuracy']:.4f}")
