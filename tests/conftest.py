"""Shared fixtures: tiny generated demo data, the repository root on sys.path."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """Four tiny patients (3 mm voxels): enough for every workflow to run end to end in seconds."""
    from bundle.demo.synth import generate

    out = tmp_path_factory.mktemp("demo")
    generate(out, size="tiny", seed=1, n_patients=4)
    return out


@pytest.fixture(scope="session")
def pacs_export(tiny_demo, tmp_path_factory) -> Path:
    """The simulated PACS export of the tiny demo (DICOM under ./dicom, the truth record in ./record.json)."""
    from bundle.demo.pacs_export import export

    out = tmp_path_factory.mktemp("pacs")
    export(tiny_demo, out, seed=0)
    return out
