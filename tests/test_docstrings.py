"""Every example in fervis's docstrings runs and prints what it says (those marked ``+SKIP`` need a
user's file or a long run, and are left out)."""

import doctest
import importlib
import pkgutil

import pytest

import fervis

MODULES = sorted(info.name for info in pkgutil.walk_packages(fervis.__path__, "fervis."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.setenv("FERVIS_HOME", str(tmp_path))  # an example that caches writes here, not in the user's home
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    extra = {}
    if name == "fervis.dataset":
        from fervis.data import load  # dataset's examples load with fervis.data, which imports dataset

        extra["load"] = load
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failures = []
    for test in finder.find(module, name, extraglobs=extra):
        runner.run(test, out=failures.append)
    assert not failures, "".join(failures)
