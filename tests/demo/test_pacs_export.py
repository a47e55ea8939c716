"""The simulator writes valid DICOM (dciodvfy, dcmpschk), fake identities, and a faithful record."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from bundle.demo.clinic.config import READERS
from bundle.demo.clinic.incidents import SIMULATE
from bundle.demo.pacs_export import INCIDENTS, export

needs_dicom3tools = pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="Debian dicom3tools not installed (.ci/run installs it)")
needs_dcmtk = pytest.mark.skipif(shutil.which("dcmpschk") is None, reason="Debian dcmtk not installed (.ci/run installs it)")


def _objects(export_dir: Path) -> list[Path]:
    record = json.loads((export_dir / "record.json").read_text())
    broken = {f["file"] for p in record["patients"] for f in p["files"] if f.get("expected") in ("corrupt", "not_dicom")}
    root = export_dir / "dicom"
    return [p for p in sorted(root.rglob("*")) if p.is_file() and p.relative_to(root).as_posix() not in broken]


@needs_dicom3tools
def test_every_object_passes_dciodvfy(pacs_export):
    files = _objects(pacs_export)
    assert len(files) > 100
    failures = {}
    for f in files:
        out = subprocess.run(["dciodvfy", str(f)], capture_output=True, text=True).stderr
        errors = [line for line in out.splitlines() if line.startswith("Error")]
        if errors:
            failures[f.name] = errors[:3]
    assert not failures, failures


@needs_dicom3tools
def test_dciodvfy_flags_the_truncated_file(pacs_export):
    """The validator is not a rubber stamp: the deliberately truncated GSPS fails it."""
    record = json.loads((pacs_export / "record.json").read_text())
    broken = [f["file"] for p in record["patients"] for f in p["files"] if f.get("expected") == "corrupt"]
    assert broken
    out = subprocess.run(["dciodvfy", str(pacs_export / "dicom" / broken[0])], capture_output=True, text=True).stderr
    assert "Error" in out


@needs_dcmtk
def test_every_gsps_passes_dcmpschk(pacs_export):
    gsps = [f for f in _objects(pacs_export) if f.parent.name == "PR"]
    assert len(gsps) >= 5
    for f in gsps:
        r = subprocess.run(["dcmpschk", str(f)], capture_output=True, text=True)
        text = r.stdout + r.stderr
        assert r.returncode == 0 and "Test passed" in text and "Error" not in text, (f, text[-500:])


def test_record_and_identities(pacs_export, tiny_demo):
    record = json.loads((pacs_export / "record.json").read_text())
    truth = json.loads((tiny_demo / "truth.json").read_text())
    assert record["split"] == truth["split"]
    seen_incidents = [i for p in record["patients"] for i in p["incidents"]]
    assert sorted(seen_incidents) == sorted(INCIDENTS)
    for p, tp in zip(record["patients"], truth["patients"]):
        lesions = {les["index"] for les in tp["lesions"]}
        measured = [m["lesion"] for m in p["measured_lesions"]]
        second = [m["lesion"] for m in p["second_reader_lesions"]]
        assert 1 <= len(measured) == len(set(measured)) <= 3 and len(second) == len(set(second)) <= 3
        assert {m["operator"] for m in p["measured_lesions"]} == {READERS[0]} and {m["operator"] for m in p["second_reader_lesions"]} <= {
            READERS[3]
        }
        seen = set(measured) | set(second)
        assert seen | set(p["unmeasured_lesions"]) == lesions and not seen & set(p["unmeasured_lesions"])
        for m in p["measured_lesions"] + p["second_reader_lesions"]:
            assert abs(m["slice"] - m["largest_slice"]) <= 2  # ExportConfig.near_slices
    ds = pydicom.dcmread(next((pacs_export / "dicom" / "demo-000" / "t1c").iterdir()))
    assert str(ds.PatientName).startswith("SYNTHETIC^") and ds.PatientID == "demo-000" and ds.PatientBirthDate == ""


def test_every_incident_has_a_simulation():
    """INCIDENTS (round-robin over patients) and the writers that simulate them name the same set, in order."""
    assert tuple(SIMULATE) == INCIDENTS


def test_export_is_deterministic(tiny_demo, pacs_export, tmp_path):
    export(tiny_demo, tmp_path, seed=0, workers=1)  # the fixture used 2 workers: the pool changes no byte
    a = sorted(p.relative_to(pacs_export) for p in pacs_export.rglob("*") if p.is_file())
    b = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert a == b
    for rel in a:
        if rel.name != "record.json":
            assert (pacs_export / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel


def test_export_of_some_splits_keeps_each_patients_bytes(tiny_demo, pacs_export, tmp_path):
    """The demo leaves its test cohort out of the PACS; the exported patients do not change."""
    record = export(tiny_demo, tmp_path, seed=0, splits=("training",))
    split = json.loads((tiny_demo / "truth.json").read_text())["split"]
    kept = sorted(p for p, s in split.items() if s == "training")
    assert [p["patient"] for p in record["patients"]] == kept and len(kept) < len(split)
    assert sorted(d.name for d in (tmp_path / "dicom").iterdir()) == kept
    for pid in kept:
        for f in (pacs_export / "dicom" / pid / "t1c").iterdir():  # image series: same bytes as the full export
            assert (tmp_path / "dicom" / pid / "t1c" / f.name).read_bytes() == f.read_bytes()
