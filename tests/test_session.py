"""fervis.session: the first cell of every notebook, and the one budget table it shares."""

import types

import pytest

from fervis import constants, monitoring, report, session
from fervis.dataset import Dataset


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
