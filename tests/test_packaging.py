"""The conda environment and the pip project declare the same packages."""

import pathlib
import re
import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _name(requirement):
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _environment_pip():
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    deps = []
    for line in lines[start + 1:]:
        m = re.match(r"^\s+- (.+)$", line)
        if not m:
            break
        if not m.group(1).startswith("-e"):
            deps.append(m.group(1).strip())
    return deps


def _pyproject():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return data["dependencies"] + data["optional-dependencies"]["test"]


def test_environment_and_pyproject_agree():
    env = {_name(r): r.replace(" ", "") for r in _environment_pip()}
    pyp = {_name(r): r.replace(" ", "") for r in _pyproject()}
    assert set(env) == set(pyp), f"only in environment.yml: {set(env) - set(pyp)}; only in pyproject: {set(pyp) - set(env)}"
    assert env == pyp, "version bounds differ between environment.yml and pyproject.toml"


@pytest.mark.parametrize("package, floor", [("keras", "3.14"), ("tensorflow", "2.16"), ("ipywidgets", "8"), ("jupyterlab", "4")])
def test_security_and_feature_floors(package, floor):
    # Keras < 3.14 has safe_mode bypasses (CVE-2025-8747, -9905, -9906, CVE-2026-1462).
    pyp = {_name(r): r for r in _pyproject()}
    assert f">={floor}" in pyp[package]


def test_python_floor_and_console_script():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert data["requires-python"] == ">=3.10"
    assert data["scripts"]["fervis"] == "fervis.cli:main"
