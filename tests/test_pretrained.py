"""The models that ship inside the package load safely and do what their cards say."""

import json

import pytest

from fervis import data, models, training


def test_auto_model_on_embedded_default_is_the_packaged_one():
    meta = json.loads(models.pretrained_path("synthetic").with_suffix(".json").read_text())
    dataset = data.load("synthetic")
    assert dataset.fingerprint == meta["fingerprint"], "synthetic faces changed: rebuild with scripts/make_pretrained_synthetic.py"
    model = training.model_for(dataset, "auto")
    assert model.input_shape == (None, 48, 48, 1) and model.output_shape == (None, 7)
    result = training.evaluate(model, dataset, split="PublicTest")
    assert abs(result["accuracy"] - meta["publictest_accuracy"]) <= 0.005
    assert 0.80 <= result["accuracy"] <= 0.95  # the synthetic set is built to land here


def test_other_data_does_not_get_the_packaged_synthetic_model(synthetic_small, monkeypatch):
    calls = []
    monkeypatch.setattr(training, "load_or_train", lambda dataset, recipe="quick", **kw: calls.append(recipe) or "trained")
    assert training.model_for(synthetic_small, "auto") == "trained"
    assert calls == ["quick"]


@pytest.mark.fer2013
def test_shipped_fer2013_model_reaches_its_documented_accuracy(fer2013_path):
    path = models.pretrained_path("fer2013")
    if not path.exists():
        pytest.skip("the FER2013 model has not been trained and packaged yet (issue 3)")
    card = json.loads(path.with_suffix(".json").read_text())
    model = models.load_pretrained("fer2013")
    assert model.input_shape == (None, 48, 48, 1) and model.output_shape == (None, 7)
    result = training.evaluate(model, data.load(fer2013_path), split="PublicTest", tta=card["tta"])
    assert abs(result["accuracy"] - card["publictest_accuracy"]) <= 0.005
