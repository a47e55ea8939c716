"""The demo's options and paths live in bundle/demo/options.py: run.py, results.py and volume_steps.py import them, not each other in a circle."""

from __future__ import annotations

import ast


def _imports(path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_no_demo_step_imports_run_back(repo_root):
    demo = repo_root / "bundle" / "demo"
    for name in ("results.py", "volume_steps.py", "options.py"):
        got = _imports(demo / name)
        assert "bundle.demo.run" not in got and "typing.TYPE_CHECKING" not in got, name
        assert "bundle.demo.volume_steps" not in got and "bundle.demo.results" not in got, name
    assert "bundle.demo.options" in _imports(demo / "results.py") and "bundle.demo.options" in _imports(demo / "volume_steps.py")


def test_run_still_offers_its_options():
    """scripts/demo.py and the experiments import DemoOptions and Paths from run.py; they are options.py's."""
    from bundle.demo import options, run

    assert run.DemoOptions is options.DemoOptions and run.Paths is options.Paths and run.option_problem is options.option_problem


def test_every_option_has_one_flag():
    """scripts/demo.py builds its flags from FLAGS: one per DemoOptions field, no field without a flag."""
    from dataclasses import fields

    from bundle.demo.options import FLAGS, DemoOptions

    assert set(FLAGS) == {f.name for f in fields(DemoOptions)}
