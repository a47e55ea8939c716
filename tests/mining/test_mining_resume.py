"""A mining run killed halfway through conversion, run again, gives the output of an uninterrupted run, byte for byte."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bundle.mining.outputs import PARTIAL
from bundle.mining.pipeline import Miner
from bundle.pacs.folder import FolderSource

ROOT = Path(__file__).resolve().parents[2]
KILLED = """
import os, signal, sys
sys.path.insert(0, {root!r})
from bundle.mining.pipeline import Miner
from bundle.pacs.folder import FolderSource

class Dying(FolderSource):
    calls = 0
    def read_bytes(self, location):
        Dying.calls += 1
        if Dying.calls > {after}:
            os.killpg(0, signal.SIGKILL)  # as a scheduler's kill -9 of the job (its worker processes too): no clean-up runs
        return super().read_bytes(location)

Miner({out!r}, Dying({src!r}), workers=2, progress=False).run()
"""


def tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and p.name != "mining_timing.json"}


@pytest.fixture(scope="module")
def uninterrupted(pacs_export, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole")
    Miner(str(out), FolderSource(pacs_export / "dicom"), workers=2, progress=False).run()
    return out


@pytest.mark.parametrize("after, resume", [(3, False), (3, True), (40, True)])
def test_killed_run_rerun_gives_the_same_bytes(pacs_export, uninterrupted, tmp_path, after, resume):
    out = tmp_path / "out"
    script = KILLED.format(root=str(ROOT), after=after, out=str(out), src=str(pacs_export / "dicom"))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, start_new_session=True)  # its own group
    assert r.returncode == -9, r.stderr  # it really died mid-conversion
    left = tree(out)
    assert "datalist.json" not in left and "mining_report.json" not in left  # nothing final was half-written
    assert any(k.startswith(PARTIAL + "/") for k in left) or any(k.startswith("images/") for k in left)
    Miner(str(out), FolderSource(pacs_export / "dicom"), workers=2, progress=False, resume=resume).run()
    assert tree(out) == tree(uninterrupted)
