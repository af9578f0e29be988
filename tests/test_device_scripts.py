"""scripts/pack_for_device.py and scripts/train_on_device.py: the GPU path to the shipped model.

The device machine has JAX and no TensorFlow; here the same scripts run on the TensorFlow
backend (Keras 3 files do not depend on the backend that wrote them), on a few faces.
"""

import importlib.util
import json
import pathlib

import numpy as np
import pandas as pd
import pytest

from fervis import models, recipes

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _script(name, monkeypatch=None):
    if monkeypatch is not None:  # train_on_device defaults KERAS_BACKEND to jax for later processes
        monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """A Kaggle-layout CSV of 48 Training and 16 PublicTest random faces, packed for the device."""
    tmp = tmp_path_factory.mktemp("device")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 48, 48), dtype=np.uint8)
    frame = pd.DataFrame({"emotion": np.arange(64) % 7,
                          "pixels": [" ".join(map(str, im.ravel())) for im in images],
                          "Usage": ["Training"] * 48 + ["PublicTest"] * 16})
    frame.to_csv(tmp / "fer.csv.gz", index=False)
    _script("pack_for_device").main(str(tmp / "fer.csv.gz"), str(tmp / "packed"))
    return tmp / "packed", images, frame["emotion"].to_numpy()


def test_packing_is_lossless(packed, monkeypatch):
    folder, images, labels = packed
    xtr, ytr, xte, yte = _script("train_on_device", monkeypatch).load(str(folder))
    np.testing.assert_array_equal(xtr, images[:48])
    np.testing.assert_array_equal(xte, images[48:])
    np.testing.assert_array_equal(np.concatenate([ytr, yte]), labels)


def test_train_on_device_writes_a_model_that_loads_safely_and_a_matching_report(packed, tmp_path, monkeypatch):
    folder, images, labels = packed
    _script("train_on_device", monkeypatch).main(str(folder), str(tmp_path), budget_s=1.0)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["epochs"] == 4  # no time for more: the floor
    assert report["recipe"] == recipes.get("fer2013").replace(epochs=4).to_dict()
    assert len(pd.read_csv(tmp_path / "history.csv")) == 4
    model = models.load(tmp_path / "fer2013.keras", num_classes=7)  # safe_mode
    assert report["params"] == model.count_params()
    for tta in ("none", "flip", "tencrop"):
        predicted = recipes.predict(model, images[48:], tta=tta).argmax(1)
        assert report[f"publictest_accuracy_{tta}"] == pytest.approx((predicted == labels[48:]).mean())
        assert np.asarray(report[f"confusion_{tta}"]).sum() == 16
