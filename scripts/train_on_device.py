"""Train the shipped FER2013 model on a lent GPU machine that has JAX but no TensorFlow.

Keras 3 saves backend-independent ``.keras`` files, so a model trained here with the JAX
backend loads in TensorFlow with ``safe_mode`` unchanged. The data travels as the output of
``scripts/pack_for_device.py`` (FER2013 never enters the repository). This script fits the
recipe's cosine schedule to a wall-clock budget: it times one probe epoch, then trains for
as many epochs as fit, and records that number so the run can be reproduced on any machine
with ``fervis train --recipe fer2013 --epochs N``.

Usage (on the device): KERAS_BACKEND=jax python scripts/train_on_device.py DATA_DIR OUT_DIR BUDGET_S
"""

import json
import lzma
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from fervis import CLASS_NAMES, models, recipes  # noqa: E402


def load(data_dir, limit=None):
    meta = np.load(os.path.join(data_dir, "fer_meta.npz"))
    dx = np.frombuffer(lzma.decompress(open(os.path.join(data_dir, "fer_x.xz"), "rb").read()), np.uint8)
    x = np.cumsum(dx.reshape(-1, 48, 48), axis=2, dtype=np.uint8)
    y, train = meta["y"].astype(np.int64), meta["train"]
    xtr, ytr, xte, yte = x[train], y[train], x[~train], y[~train]
    if limit:
        xtr, ytr, xte, yte = xtr[:limit], ytr[:limit], xte[:limit // 4], yte[:limit // 4]
    return xtr, ytr, xte, yte


class _Saver(keras.callbacks.Callback):
    def __init__(self, core, path, every):
        super().__init__()
        self.core, self.path, self.every = core, path, every

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0:
            self.core.save(self.path + ".tmp.keras")
            os.replace(self.path + ".tmp.keras", self.path)


def main(data_dir, out_dir, budget_s, limit=None):
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.time()
    xtr, ytr, xte, yte = load(data_dir, limit)
    print(f"backend={keras.backend.backend()} train={len(xtr)} test={len(xte)} load={time.time() - t0:.1f}s", flush=True)
    recipe = recipes.get("fer2013")
    keras.utils.set_random_seed(recipe.seed)
    xtr4 = xtr[..., None].astype(np.float32)
    ytr1 = keras.utils.to_categorical(ytr, 7)
    steps = int(np.ceil(len(xtr) / recipe.batch_size))

    # Probe: one epoch of an identical throwaway model, compile included.
    probe = recipes.compile_for_training(models.build(recipe.arch, seed=recipe.seed), recipe, steps)
    t = time.time()
    probe.fit(xtr4, ytr1, batch_size=recipe.batch_size, epochs=1, verbose=0)
    first = time.time() - t
    t = time.time()
    probe.fit(xtr4, ytr1, batch_size=recipe.batch_size, epochs=1, verbose=0)
    per_epoch = time.time() - t
    epochs = int(max(4, min(recipe.epochs * 4, (budget_s - first) // per_epoch)))
    print(f"probe: first epoch {first:.1f}s, then {per_epoch:.2f}s/epoch -> {epochs} epochs", flush=True)
    del probe

    recipe = recipe.replace(epochs=epochs)
    keras.utils.set_random_seed(recipe.seed)
    core = models.build(recipe.arch, seed=recipe.seed)
    train_model = recipes.compile_for_training(core, recipe, steps)
    path = os.path.join(out_dir, "fer2013.keras")
    log = keras.callbacks.CSVLogger(os.path.join(out_dir, "history.csv"))
    t = time.time()
    train_model.fit(
        xtr4, ytr1, batch_size=recipe.batch_size, epochs=epochs, verbose=2,
        validation_data=(xte[..., None].astype(np.float32), keras.utils.to_categorical(yte, 7)),
        validation_freq=max(1, epochs // 10), callbacks=[log, _Saver(core, path, max(1, epochs // 6))],
    )
    train_s = time.time() - t
    core.save(path)

    report = {"recipe": recipe.to_dict(), "epochs": epochs, "train_seconds": round(train_s, 1),
              "seconds_per_epoch": round(per_epoch, 2), "params": int(core.count_params()),
              "device": os.environ.get("DEVICE_NAME", "gpu"), "backend": keras.backend.backend()}
    for tta in ("none", "flip", "tencrop"):
        probs = recipes.predict(core, xte, tta=tta, batch_size=512)
        pred = probs.argmax(1)
        report[f"publictest_accuracy_{tta}"] = float((pred == yte).mean())
        cm = models.confusion_matrix(yte, pred, len(CLASS_NAMES))
        report[f"confusion_{tta}"] = cm.tolist()
        recall = models.class_recall(cm)  # NaN for a class without faces: null in the JSON
        report[f"recall_{tta}"] = {c: None if np.isnan(r) else round(float(r), 4) for c, r in zip(CLASS_NAMES, recall)}
        print(f"PublicTest accuracy, tta={tta}: {report[f'publictest_accuracy_{tta}']:.4f}", flush=True)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps({k: v for k, v in report.items() if not k.startswith("confusion")}), flush=True)


if __name__ == "__main__":
    limit = int(os.environ.get("LIMIT", "0")) or None
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), limit)
