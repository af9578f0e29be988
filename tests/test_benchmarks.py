"""The benchmark scripts share benchmarks/_common.py: one preamble (quiet TF, the checkout on
sys.path), one best-of timing, one --repeat parser."""

import ast
import pathlib

import pytest

BENCHMARKS = pathlib.Path(__file__).parents[1] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("bench_*.py"))


def test_there_are_benchmarks():
    assert len(SCRIPTS) >= 6 and (BENCHMARKS / "_common.py").is_file()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_each_benchmark_uses_the_common_preamble(script):
    tree = ast.parse(script.read_text())
    imports_common = any(
        (isinstance(node, ast.ImportFrom) and node.module == "_common")
        or (isinstance(node, ast.Import) and any(a.name == "_common" for a in node.names)) for node in ast.walk(tree))
    assert imports_common, f"{script.name} does not import _common"
    # its own preamble: a sys.path edit or its own ROOT
    own = [ast.unparse(node) for node in ast.walk(tree)
           if (isinstance(node, ast.Call) and ast.unparse(node.func).startswith("sys.path."))
           or (isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "ROOT" for t in node.targets))]
    assert own == []
    # a --repeat option comes from _common.parser, not a parser of its own
    repeats = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and node.args
               and isinstance(node.args[0], ast.Constant) and node.args[0].value == "--repeat"]
    assert repeats == []
