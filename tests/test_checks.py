"""fervis._checks: one behaviour per check, the same from every module that uses it.

Each test here is a place where two modules used to keep their own copy of a check and the
copies disagreed (messages, accepted values or models); the unified behaviour is asserted
through the public functions of every module concerned.
"""

import numpy as np
import pytest

from fervis import _checks, constants, stats


@pytest.fixture(scope="module")
def rgb_model():
    """A 64x64x3 classifier with 7 outputs: not fervis' 48x48x1 contract, but an image model."""
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((64, 64, 3)),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(7, activation="softmax", name="predictions"),
    ], name="rgb64")


@pytest.fixture(scope="module")
def three_class_model():
    import keras

    keras.utils.set_random_seed(1)
    return keras.Sequential([
        keras.Input((48, 48, 1)),
        keras.layers.Rescaling(1 / 255.0),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
        keras.layers.GlobalAveragePooling2D(name="gap"),
        keras.layers.Dense(3, activation="softmax", name="predictions"),
    ], name="three")


# --------------------------------------------------------------------------- the step cap


@pytest.mark.parametrize("cap, value, expected", [(None, 40, 40), ("16", 40, 16), ("16", 5, 5), ("1", 7, 1)])
def test_max_steps_caps(monkeypatch, cap, value, expected):
    if cap is None:
        monkeypatch.delenv("FERVIS_MAX_STEPS", raising=False)
    else:
        monkeypatch.setenv("FERVIS_MAX_STEPS", cap)
    assert _checks.max_steps(value) == expected


@pytest.mark.parametrize("cap", ["abc", "0", "-3", "2.5"])
def test_bad_max_steps_raises_the_same_from_every_module(monkeypatch, tiny_model, synthetic_small, cap):
    """saliency raised "must be an int" (and took 0 as 1), filters "a positive int" (and took 0 as
    1): now every iterative method refuses a cap that is not an int >= 1, with one message."""
    from fervis import filters, monitoring, saliency

    monkeypatch.setenv("FERVIS_MAX_STEPS", cap)
    message = rf"environment variable FERVIS_MAX_STEPS must be an int >= 1 .* Got '{cap}' instead"
    faces = synthetic_small.images[:2]
    with pytest.raises(ValueError, match=message):
        saliency.explain(tiny_model, faces, method="smoothgrad")
    with pytest.raises(ValueError, match=message):
        saliency.deletion_insertion(tiny_model, faces, np.ones((2, 48, 48)))
    with pytest.raises(ValueError, match=message):
        filters.maximize(tiny_model, "block2_conv", 0)
    val = synthetic_small.subset("PublicTest").sample(21, seed=0)
    monitor = monitoring.Monitor(val, monitoring.probe_set(val), method="integrated_gradients")
    monitor.set_model(tiny_model)
    with pytest.raises(ValueError, match=message):
        monitor.measure(0, {})


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("value, kwargs, ok", [
    (1, {}, True), (0, {}, False), (True, {}, False), (2.0, {}, False), (np.int64(3), {}, True),
    (0, {"low": 0}, True), (-1, {"low": 0}, False), (5, {"high": 5}, True), (6, {"high": 5}, False),
])
def test_positive_int(value, kwargs, ok):
    if ok:
        assert _checks.positive_int(value, "k", "f", **kwargs) == value and type(
            _checks.positive_int(value, "k", "f", **kwargs)) is int
    else:
        allowed = r"an int in \[" if "high" in kwargs else "an int >= "
        with pytest.raises(ValueError, match=rf"The 'k' parameter of f must be {allowed}.* Got {value!r} instead"):
            _checks.positive_int(value, "k", "f", **kwargs)


@pytest.mark.parametrize("value, kwargs, ok", [
    (0.5, {"low": 0, "high": 1, "low_open": True, "high_open": True}, True),
    (1.0, {"low": 0, "high": 1, "low_open": True, "high_open": True}, False),
    (0.0, {"low": 0, "high": 1, "low_open": True}, False),
    (1.0, {"low": 0, "high": 1}, True),
    (np.inf, {"low": 0}, False), (True, {"low": 0}, False), ("1", {"low": 0}, False),
])
def test_real(value, kwargs, ok):
    if ok:
        assert _checks.real(value, "x", "f", **kwargs) == value
    else:
        with pytest.raises(ValueError, match=r"The 'x' parameter of f must be a number [>=]+ 0"):
            _checks.real(value, "x", "f", **kwargs)


def test_positive_int_messages_agree_across_modules(tiny_model, synthetic_small):
    """filters said "a positive int", saliency and labels "an int >= 1": one message now."""
    from fervis import filters, labels, saliency, training

    faces = synthetic_small.images[:2]
    for call in (lambda: filters.maximize(tiny_model, "block2_conv", 0, seeds=0),
                 lambda: saliency.explain(tiny_model, faces, batch_size=0),
                 lambda: labels.penultimate_features(tiny_model, faces, batch_size=0),
                 lambda: training.recalibrate_batchnorm(tiny_model, faces, batch_size=0)):
        with pytest.raises(ValueError, match=r"parameter of fervis\.\w+\.\w+ must be an int >= 1\. Got 0 instead"):
            call()


# --------------------------------------------------------------------------- models


def test_cell_saliency_takes_any_model_explain_takes(rgb_model):
    """labels.cell_saliency refused a model that the saliency.explain it calls accepts."""
    from fervis import labels, saliency

    x = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    t, p, d = labels.cell_saliency(rgb_model, x, "happy", "sad")
    np.testing.assert_allclose(t, saliency.explain(rgb_model, x, class_idx=3), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p, saliency.explain(rgb_model, x, class_idx=4), rtol=1e-5, atol=1e-6)
    assert t.shape == (3, 64, 64) and np.allclose(d, p - t)
    with pytest.raises(ValueError, match=r"'images' parameter of fervis.labels.cell_saliency .*\(n, 64, 64, 3\)"):
        labels.cell_saliency(rgb_model, np.zeros((3, 48, 48)), "happy", "sad")


def test_face_only_functions_share_one_message(rgb_model, synthetic_small):
    """LIME, filters and training need raw 48x48 grey faces; each says so the same way."""
    from fervis import filters, labels, training

    faces = synthetic_small.images[:2]
    for func, call in (("fervis.labels.lime_explain", lambda: labels.lime_explain(rgb_model, faces)),
                       ("fervis.filters.feature_maps", lambda: filters.feature_maps(rgb_model, faces, "conv")),
                       ("fervis.training.evaluate", lambda: training.evaluate(rgb_model, synthetic_small))):
        with pytest.raises(ValueError, match=rf"'model' parameter of {func} must take raw faces shaped "
                                             r"\(n, 48, 48, 1\)\. Got model 'rgb64' .* fervis.models.adapt"):
            call()
    with pytest.raises(ValueError, match=r"'model' parameter of f must be a keras.Model. Got 'vgg' instead"):
        _checks.face_model("vgg", "f")


def test_a_model_without_inputs_yet_gets_a_clear_error(synthetic_small):
    """A Sequential model built without keras.Input has no inputs until called: Keras's own AttributeError,
    deep in any explanation, became one line that says what to do."""
    import keras

    from fervis import contract, saliency, session

    model = keras.Sequential([keras.layers.Conv2D(4, 3), keras.layers.Flatten(), keras.layers.Dense(7, activation="softmax")])
    faces = synthetic_small.images[:2]
    for func, call in (("fervis.saliency.explain", lambda: saliency.explain(model, faces, "gradient")),
                       ("fervis.contract.inspect", lambda: contract.inspect(model, synthetic_small)),
                       ("fervis.session.prepare", lambda: session.prepare("synthetic", model, "quick"))):
        with pytest.raises(ValueError, match=rf"'model' parameter of {func} must be a model with defined inputs\. "
                                             r"Got model 'sequential\w*', which has none: .* call it once"):
            call()
    # models.adapt still wraps it (its documented route for such models)
    from fervis import models

    adapted = models.adapt(model, input_shape=(48, 48, 1), scale="0-255")
    assert saliency.explain(adapted, faces, "gradient").shape == (2, 48, 48)

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="subclassed")
            self.flat, self.out = keras.layers.Flatten(), keras.layers.Dense(7, activation="softmax")

        def call(self, x):
            return self.out(self.flat(x))

    with pytest.raises(ValueError, match=r"which has none: .* subclassed model, whose layers fervis cannot follow"):
        contract.inspect(Subclassed(), synthetic_small)
    model(faces[..., None].astype("float32"))  # called once: it has inputs now
    assert saliency.explain(model, faces, "gradient").shape == (2, 48, 48)


# --------------------------------------------------------------------------- class_idx


def test_explain_accepts_class_names(tiny_model, synthetic_small):
    """labels took class names, saliency only ints: every explanation takes both now."""
    from fervis import saliency

    faces = synthetic_small.images[:4]
    np.testing.assert_array_equal(saliency.explain(tiny_model, faces, class_idx="happy"),
                                  saliency.explain(tiny_model, faces, class_idx=3))
    np.testing.assert_array_equal(saliency.explain(tiny_model, faces, class_idx=["Happy", 0, "fear", np.int64(6)]),
                                  saliency.explain(tiny_model, faces, class_idx=np.array([3, 0, 2, 6])))
    with pytest.raises(ValueError, match=r"'class_idx' parameter of fervis.saliency.explain .* Got 'joy' instead"):
        saliency.explain(tiny_model, faces, class_idx="joy")


def test_class_names_of_a_model_without_seven_classes(three_class_model, synthetic_small):
    """For a model with another number of outputs the names are the indices as text."""
    from fervis import saliency

    faces = synthetic_small.images[:2]
    np.testing.assert_array_equal(saliency.explain(three_class_model, faces, class_idx="2"),
                                  saliency.explain(three_class_model, faces, class_idx=2))
    with pytest.raises(ValueError, match=r"a class index in \[0, 3\), a name in \('0', '1', '2'\).* Got 'happy'"):
        saliency.explain(three_class_model, faces, class_idx="happy")


# --------------------------------------------------------------------------- datasets and labels


def test_labelled_arrays_one_message_for_monitoring_and_training(synthetic_small):
    """monitoring said "one class label >= 0 per image", training named the dataset: training's wins."""
    from fervis import models, monitoring, training

    unlabelled = (synthetic_small.images[:4], np.array([0, 1, -1, -1]))
    message = r"'validation' parameter of fervis\.\w+\.\w+ must be labelled, but 2 of its 4 images in the arrays"
    with pytest.raises(ValueError, match=message):
        monitoring.Monitor(unlabelled)
    with pytest.raises(ValueError, match=message):
        training.fit(models.build("tiny"), synthetic_small, "tiny", validation=unlabelled)
    x, y = _checks.labelled_arrays(synthetic_small, "f", "data")
    assert x.shape == (len(synthetic_small), 48, 48, 1) and x.dtype == np.float32 and y.dtype == np.int64
    with pytest.raises(ValueError, match=r"'data' parameter of f must be a fervis Dataset or a tuple"):
        _checks.labelled_arrays("faces", "f", "data")


def test_saliency_labels_and_dataset_checks_agree(tiny_model, synthetic_small):
    """saliency kept its own label check (no word about unlabelled faces); it uses class_labels now."""
    from fervis import monitoring, saliency, training

    maps = np.ones((3, 48, 48))
    with pytest.raises(ValueError, match=r"fervis.saliency.region_shares needs labelled faces, but 1 of 3"):
        saliency.region_shares(maps, np.zeros((48, 48), np.uint8), np.array([0, 1, -1]), ["all"])
    for call, func in ((lambda: monitoring.probe_set("faces"), "fervis.monitoring.probe_set"),
                       (lambda: training.model_for("faces"), "fervis.training.model_for")):
        with pytest.raises(ValueError, match=rf"'dataset' parameter of {func} must be a fervis Dataset. Got str"):
            call()
    assert _checks.is_dataset(synthetic_small) and not _checks.is_dataset(synthetic_small.images)


def test_region_ids_one_message(synthetic_small):
    """regions and saliency kept two region checks ("ids 0-8" and "ids in [0, 9)"): one now."""
    from fervis import regions, saliency

    bad = np.full((48, 48), 9, np.uint8)
    maps = np.ones((2, 48, 48))
    with pytest.raises(ValueError, match=r"'regions' parameter of fervis.regions.shares must hold ids in \[0, 9\)"):
        regions.shares(maps, bad)
    with pytest.raises(ValueError, match=r"'regions' parameter of fervis.saliency.region_shares must hold ids in "
                                         r"\[0, 9\)"):
        saliency.region_shares(maps, bad, np.array([0, 1]), regions.REGION_NAMES)
    with pytest.raises(ValueError, match=r"one template shaped \(48, 48\) or \(2, 48, 48\) maps. Got dtype uint8 "
                                         r"and shape \(3, 48, 48\)"):
        _checks.region_ids(np.zeros((3, 48, 48), np.uint8), 9, "f", n=2)


# --------------------------------------------------------------------------- small single concepts


@pytest.mark.parametrize("count, n", [(0, 10), (7, 10), (10, 10), (312, 1000), (2.6, 5)])
def test_one_wilson_interval(count, n):
    """contract, labels and regions each called scipy's Wilson interval in their own words."""
    from scipy.stats import binomtest

    ci = binomtest(int(round(count)), n).proportion_ci(confidence_level=0.95, method="wilson")
    assert stats.wilson(count, n) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert all(np.isnan(stats.wilson(3, 0)))


def test_registration_interval_is_the_wilson_interval(synthetic_small):
    from fervis import regions

    reg = regions.registration(synthetic_small.images[:60])
    share, low, high = reg.within("rows")
    hits = round(share * reg.n)
    assert (low, high) == stats.wilson(hits, reg.n) and low <= share <= high


def test_one_class_order_parser():
    """report kept its own copy of the class-order rule; contract, session, report and the CLI share one."""
    from fervis import contract

    assert contract.parse_class_order is _checks.parse_class_order
    assert contract.MODEL_INPUTS is constants.MODEL_INPUTS and contract.CLASS_ORDERS is constants.CLASS_ORDERS
    alphabetical = tuple(sorted(constants.CLASS_NAMES))
    assert _checks.parse_class_order(", ".join(alphabetical)) == alphabetical
    assert _checks.parse_class_order(list(alphabetical)) == alphabetical
    with pytest.raises(ValueError, match=r"'class_order' parameter of r must be .* as text\)\. Got \['angry'"):
        _checks.parse_class_order(list(alphabetical), "r", text_only=True)
    with pytest.raises(ValueError, match=r"'model_input' parameter of r must be one of \['auto', '0-255'"):
        _checks.declared_input("0-100", "r")


def test_aliases_are_one_function(tiny_model, synthetic_small):
    """saliency.predict and monitoring.spearman repeated the checks of the functions they call."""
    from fervis import models, monitoring, saliency

    faces = synthetic_small.images[:5]
    np.testing.assert_array_equal(saliency.predict(tiny_model, faces), models.predict(tiny_model, faces))
    with pytest.raises(ValueError, match=r"'batch_size' parameter of fervis.models.predict must be an int >= 1"):
        saliency.predict(tiny_model, faces, batch_size=0)
    with pytest.raises(ValueError, match=r"fervis.saliency.spearman must be stacks of maps of one shape"):
        monitoring.spearman(np.ones((2, 4, 4)), np.ones((2, 4, 3)))


def test_maps_check_is_one(synthetic_small):
    """saliency's maps checks said "(n, h, w)", labels' "(n, 48, 48)" with other words: one message."""
    from fervis import labels, saliency

    flat = np.ones((2, 48))
    for func, call in (("fervis.saliency.class_mean_maps", lambda: saliency.class_mean_maps(flat, [0, 1], [0, 1])),
                       ("fervis.saliency.cue_check", lambda: saliency.cue_check(flat, np.zeros((48, 48), np.uint8), [0, 1],
                                                                                 ["all"], {})),
                       ("fervis.labels.lime_region_shares",
                        lambda: labels.lime_region_shares(flat, synthetic_small.take([0, 1]), [0, 1]))):
        with pytest.raises(ValueError, match=rf"'maps' parameter of {func} must be a numeric array shaped "
                                             r"\(n, [hw48]+, [hw48]+\), one map per image. Got dtype float64 and "
                                             r"shape \(2, 48\)"):
            call()


def test_no_function_shadows_a_check_it_imports():
    # A local named like an imported check (monitoring.training_plan's `real = ...` hid _checks.real)
    # turns a later check in that function into a call of a bool.
    import ast
    import pathlib

    import fervis

    shadows = []
    for path in sorted(pathlib.Path(fervis.__file__).parent.rglob("*.py")):
        tree = ast.parse(path.read_text())
        checks = {alias.asname or alias.name for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and node.module == "fervis._checks" for alias in node.names}
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            for node in ast.walk(func):
                name = (node.id if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)
                        else node.arg if isinstance(node, ast.arg) else None)
                if name in checks:
                    shadows.append(f"{path.name}:{node.lineno} {name}")
    assert shadows == []


def test_architecture_md_states_each_check_signature():
    # docs/architecture.md lists each check as `name(params)`; every parameter it shows must be the
    # function's, in order, with the function's default (trailing optional parameters may be left out).
    import ast
    import inspect
    import pathlib
    import re

    text = (pathlib.Path(__file__).parents[1] / "docs" / "architecture.md").read_text()
    section = text.split("## The checking layer", 1)[1].split("\n## ", 1)[0]
    stated = re.findall(r"^- `(\w+)\(([^)]*)\)`", section, flags=re.M)
    assert len(stated) >= 15
    wrong = []
    for name, params in stated:
        actual = list(inspect.signature(getattr(_checks, name)).parameters.values())
        shown = [p.strip() for p in params.split(",") if p.strip()]
        for i, text_param in enumerate(shown):
            param, has_default, default = text_param.partition("=")
            real = actual[i] if i < len(actual) else None
            if real is None or real.name != param:
                wrong.append(f"{name}: {text_param}")
            elif has_default and real.default is inspect.Parameter.empty:
                wrong.append(f"{name}: {text_param}, which has no default")
            elif has_default:
                try:
                    value = ast.literal_eval(default)
                except ValueError:  # a name (CLASS_NAMES): not compared
                    continue
                if value != real.default:
                    wrong.append(f"{name}: {text_param}, whose default is {real.default!r}")
            elif real.default is not inspect.Parameter.empty:
                wrong.append(f"{name}: {text_param} shown without its default {real.default!r}")
        left_out = actual[len(shown):]
        if any(p.default is inspect.Parameter.empty for p in left_out):
            wrong.append(f"{name}: leaves out {[p.name for p in left_out]}")
    assert wrong == []
