"""fervis.session: the first cell of every notebook, and the one budget table it shares."""

import os
import subprocess
import sys
import types

import pytest

from fervis import constants, monitoring, report, session
from fervis.dataset import Dataset


def _stderr_of(code, stderr=subprocess.PIPE, **env):
    """What a fresh Python running ``code`` writes to stderr (file descriptor 2 included), in a shell
    without TF_CPP_MIN_LOG_LEVEL unless ``env`` sets it."""
    env = {**{k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}, **env}
    done = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
                          timeout=300)
    return done.returncode, done.stderr


def test_the_notebooks_first_import_keeps_tensorflows_start_up_text_out():
    """``import fervis.session`` (every notebook's first cell) starts TensorFlow with its C++ start-up text
    hidden: no absl notice, no oneDNN line, no "CUDA error" of a machine without a GPU in the output."""
    chatter = ("absl::InitializeLog", "I0000", "E0000", "cuInit")
    _, plain = _stderr_of("import tensorflow as tf; tf.config.list_physical_devices()")
    if not any(text in plain for text in chatter):
        pytest.skip("this TensorFlow writes nothing at start-up here: nothing to hide")
    code, ours = _stderr_of("import fervis.session, numpy as np\nfrom fervis import models\n"
                            "models.predict(models.build('tiny'), np.zeros((1, 48, 48, 1), 'float32'))")
    assert code == 0 and not any(text in ours for text in chatter), ours
    # A user who asks for TensorFlow's notices gets them; a Python without stderr (2>&-) still starts.
    _, wanted = _stderr_of("import fervis.session", TF_CPP_MIN_LOG_LEVEL="0")
    assert any(text in wanted for text in chatter)
    assert _stderr_of("import fervis.session", stderr=subprocess.DEVNULL)[0] == 0
    code, _ = _stderr_of("import os, sys; os.close(2); sys.stderr = None; import fervis.session; print('ok')")
    assert code == 0


def test_a_failing_tensorflow_start_shows_what_it_wrote(tmp_path):
    """What TensorFlow wrote before failing to import is the user's clue: it is shown, then the error."""
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text("import os\nos.write(2, b'libfoo.so: cannot open shared object\\n')\n"
                                      "raise ImportError('no tensorflow here')\n")
    code, err = _stderr_of("import fervis.session", PYTHONPATH=str(tmp_path))
    assert code == 1 and "libfoo.so: cannot open shared object" in err and "no tensorflow here" in err
    assert err.index("libfoo.so") < err.index("no tensorflow here")


def test_one_budget_table_for_every_reader():
    assert session.BUDGETS is constants.BUDGETS is monitoring.BUDGETS
    for name, budget in constants.BUDGETS.items():
        assert set(budget) == {"max_eval", "max_train", "ascent_steps", "plan", "plan_real"}, name
        assert set(budget["plan_real"]) - {"architecture"} == set(budget["plan"]), name
    assert constants.BUDGETS["quick"]["ascent_steps"] < constants.BUDGETS["full"]["ascent_steps"]


def test_a_changed_budget_shows_in_the_session_and_the_training_plan(monkeypatch, tiny_model):
    quick = constants.BUDGETS["quick"]
    monkeypatch.setitem(quick, "max_eval", 70)
    monkeypatch.setitem(quick, "plan", {**quick["plan"], "n_val": 30, "epochs": 3, "batch_size": 16})
    s = session.prepare("synthetic", tiny_model, "quick")
    assert len(s.evaluation) == 70 and set(s.evaluation.splits) == {"PublicTest"}
    plan = monitoring.training_plan(s)
    assert len(plan.validation) == 30 and plan.recipe.epochs == 3 and plan.recipe.batch_size == 16
    assert len(plan.train) == quick["plan"]["n_train"]
    # Real faces (no regions) read the table's plan_real row.
    real = types.SimpleNamespace(**{**vars(s), "dataset": Dataset(s.dataset.images, s.dataset.labels, s.dataset.splits)})
    monkeypatch.setitem(quick, "plan_real", {**quick["plan_real"], "epochs": 2, "n_train": 50})
    plan = monitoring.training_plan(real)
    assert plan.recipe.epochs == 2 and len(plan.train) == 50 and plan.model.name == "small"


@pytest.mark.parametrize("call", [
    lambda: session.prepare("synthetic", "auto", "huge"),
    lambda: report.run("synthetic", budget="huge"),
    lambda: monitoring.training_plan(types.SimpleNamespace(dataset=None, model=None, evaluation=None, budget="huge")),
])
def test_budgets_outside_the_table_are_refused(call):
    with pytest.raises(ValueError, match=r"budget.* must be one of \['full', 'quick'\]"):
        call()
