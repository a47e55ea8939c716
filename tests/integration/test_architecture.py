"""Architecture contracts (pyproject.toml [tool.importlinter]) and size limits, checked in CI.

Why: data flows one way (io <- pacs/deid/datalist <- mining; the model side reads only the datalist
schema and io). A future upward import or cycle must fail the build, not a code review.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80
REASON = "Why this long:"  # a longer function states its reason in its docstring


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, capture_output=True, text=True, env={"PYTHONPATH": str(root), "PATH": ""})


@pytest.mark.skipif(not LINT.exists(), reason="import-linter is a dev dependency (pip install -e .[dev])")
def test_import_contracts_hold():
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


@pytest.mark.skipif(not LINT.exists(), reason="import-linter is a dev dependency (pip install -e .[dev])")
@pytest.mark.parametrize(
    ("module", "line"),
    [
        ("bundle/io/records.py", "import bundle.mining.pipeline"),  # upward on the data side
        ("bundle/metrics/matching.py", "import bundle.mining.readers.gsps"),  # model side reading around the schema
        ("bundle/pacs/folder.py", "import bundle.demo.synth"),  # library importing the demo
        ("bundle/mining/readers/gsps.py", "import bundle.mining.pipeline"),  # a cycle inside mining
        ("bundle/steps/runner.py", "import bundle.benchmarks.page"),  # the library importing the benchmark
    ],
)
def test_an_upward_import_breaks_the_contracts(tmp_path, module, line):
    """The contracts are not vacuous: the same tree with one bad import fails."""
    shutil.copytree(ROOT / "bundle", tmp_path / "bundle", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    f = tmp_path / module
    f.write_text(f.read_text() + f"\n{line}  # noqa\n")
    res = _lint(tmp_path)
    assert res.returncode != 0 and "BROKEN" in res.stdout, res.stdout


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield node


def test_files_and_functions_stay_small():
    """No module (bundle/, scripts/) over 400 lines, no function over 80 unless its docstring says why."""
    too_long = []
    for path in sorted([*(ROOT / "bundle").rglob("*.py"), *(ROOT / "scripts").glob("*.py")]):
        rel = path.relative_to(ROOT)
        text = path.read_text()
        if text.count("\n") > MAX_FILE_LINES and REASON not in (ast.get_docstring(ast.parse(text)) or ""):
            too_long.append(f"{rel}: {text.count(chr(10))} lines")
        for node in _functions(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                continue
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES and REASON not in (ast.get_docstring(node) or ""):
                too_long.append(f"{rel}:{node.lineno} {node.name}: {n} lines")
    assert not too_long, "over the size limits (split it, or say why in the docstring):\n" + "\n".join(too_long)


MAX_SCRIPT_FUNCTION_LINES = 40  # scripts only parse arguments and call bundle/: their logic lives there


def test_scripts_only_parse_arguments():
    """No function in scripts/*.py over 40 lines (issue 27): whatever needs more belongs in a bundle module."""
    too_long = []
    for path in sorted((ROOT / "scripts").glob("*.py")):
        for node in _functions(ast.parse(path.read_text())):
            n = node.end_lineno - node.lineno + 1
            if not isinstance(node, ast.ClassDef) and n > MAX_SCRIPT_FUNCTION_LINES:
                too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert not too_long, "script functions over 40 lines (move the logic into bundle/):\n" + "\n".join(too_long)
