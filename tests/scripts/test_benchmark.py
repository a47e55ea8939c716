"""scripts/benchmark.py in its quickest mode writes a table with every row (CPU only, tiny demo).

The sections' own pieces are tested in tests/benchmarks/."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow  # about 5 minutes on the shared 2-core machine at load 10; well under a minute unloaded
def test_benchmark_quickest_mode_writes_every_row(repo_root, tmp_path):
    out = tmp_path / "benchmarks.md"
    cmd = [sys.executable, "-W", "ignore", "scripts/benchmark.py", "--size", "tiny", "--repeats", "1", "--iters", "2", "--out", str(out)]
    cmd += ["--ttf_epochs", "1"]
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert "Machine:" in text and "torch " in text
    for row in (
        "| volume inference, slices/s",
        "| process start-up",
        "| network on 512x512",
        "| training data loader alone",
        "| training step",
        "| training, time to a validation F1",
        "| mining, whole command wall",
        "| de-identification, files/s",
    ):
        assert row in text, (row, text)
    table = text.split("Notes")[0]
    assert "identical boxes: yes" in text and "not measured" not in table
    assert "same files: yes" in text  # the lean mining command wrote what monai.bundle run wrote


def test_help_parses(repo_root):
    """The script only parses arguments: --help works without running anything."""
    proc = subprocess.run([sys.executable, "scripts/benchmark.py", "--help"], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--sections" in proc.stdout, proc.stderr
