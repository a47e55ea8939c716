"""An export as hospitals send it: damaged pixel streams, non-image files and national character sets.

One generated export (the tiny demo's simulated PACS export) is turned into what archives really hold:
each patient's MR series in another SpecificCharacterSet with non-ASCII names and descriptions, one
referenced image re-encoded by dcmtk (JPEG lossless SV1) and then cut mid-stream, and beside the studies a
DICOMDIR (dcmmkdir), an encapsulated PDF (pdf2dcm), a README.txt, a .DS_Store and a zero-byte file.
Mining and de-identification must report each bad file with its reason and keep everything else;
de-identification killed mid-run and rerun must give the uninterrupted run's output.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames

from bundle.deid.deidentify import deidentify_folder
from bundle.deid.keying import Keyed, load_key
from bundle.io.dicom import UnreadableError, read_dataset
from bundle.mining.inspect import inspect_object
from bundle.mining.pipeline import Miner
from bundle.pacs.folder import FolderSource

pytestmark = pytest.mark.skipif(not shutil.which("dcmcjpeg") or not shutil.which("pdf2dcm"), reason="dcmtk must be installed")

# patient folder -> (SpecificCharacterSet, patient name, series description); the description quotes a name part
CHARSETS = {
    "demo-000": ("ISO_IR 100", "Müller^Jürgen", "AX T1 POST GAD Schädel Übersicht Müller"),
    "demo-001": ("ISO_IR 192", "Łukasiewicz^Zoë", "AX T1 POST GAD 造影 Schädel Łukasiewicz"),
    "demo-002": ("\\ISO 2022 IR 87", "Yamada^Tarou=山田^太郎=やまだ^たろう", "AX T1 POST GAD 造影後 山田"),
    "demo-003": ("ISO 2022 IR 100\\ISO 2022 IR 126", "Papadopoulos^Eleni", "AX T1 POST GAD Schädel Σκιαγραφία Papadopoulos"),
}
KEPT = {
    "demo-000": ["Schädel", "Übersicht"],
    "demo-001": ["造影", "Schädel"],
    "demo-002": ["造影後"],
    "demo-003": ["Schädel", "Σκιαγραφία"],
}
SCRUBBED = {"demo-000": "Müller", "demo-001": "Łukasiewicz", "demo-002": "山田", "demo-003": "Papadopoulos"}
KEY = b"clinical-inputs-test-key-0123456789"


def _mine(root: Path, out: Path) -> dict:
    return Miner(str(out), FolderSource(root), workers=1, progress=False).run()


def _set_charset(path: Path, charset: str, name: str, description: str) -> None:
    ds = pydicom.dcmread(path)
    ds.SpecificCharacterSet = charset.split("\\") if "\\" in charset else charset
    ds.PatientName = name
    ds.SeriesDescription = description
    ds.save_as(path, enforce_file_format=True)


def _damage(path: Path, work: Path) -> None:
    """dcmtk's JPEG lossless SV1, then the frame cut in half inside a valid encapsulation (a broken transfer)."""
    enc = work / "sv1.dcm"
    subprocess.run(["dcmcjpeg", "+e1", str(path), str(enc)], check=True, capture_output=True)
    ds = pydicom.dcmread(enc)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) // 2]])
    ds.save_as(path, enforce_file_format=True)


def _extras(root: Path, work: Path, image: Path) -> None:
    """Non-image files an export carries: DICOMDIR, encapsulated PDF, README.txt, .DS_Store, a zero-byte file."""
    dd = work / "dd"
    dd.mkdir()
    shutil.copy(image, dd / "IMG1")
    subprocess.run(["dcmmkdir", "IMG1"], cwd=dd, check=True, capture_output=True)
    shutil.copy(dd / "DICOMDIR", root / "DICOMDIR")
    (work / "report.pdf").write_bytes(b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n")
    subprocess.run(
        [
            "pdf2dcm",
            "--patient-name",
            "Doe^Jane",
            "--patient-id",
            "PDF123",
            str(work / "report.pdf"),
            str(root / "demo-000" / "REPORT.dcm"),
        ],
        check=True,
        capture_output=True,
    )
    (root / "README.txt").write_text("Export from the archive. Contact the PACS team.\n")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    (root / "demo-001" / "EMPTY").write_bytes(b"")


@pytest.fixture(scope="module")
def clinical(pacs_export, tmp_path_factory):
    work = tmp_path_factory.mktemp("clinical")
    ref_root = pacs_export / "dicom"
    ref = _mine(ref_root, work / "ref_mined")
    root = work / "export"
    shutil.copytree(ref_root, root)
    for patient, (charset, name, desc) in CHARSETS.items():
        for path in sorted((root / patient / "t1c").iterdir()):
            _set_charset(path, charset, name, desc)
    items = [it for v in ref["datalist"].values() for it in v]
    damaged_item = items[0]
    damaged = next(p for p in sorted(root.rglob("*")) if p.is_file() and _sop(p) == damaged_item["sop_instance_uid"])
    _damage(damaged, work)
    _extras(root, work, ref_root / "demo-000" / "t1c" / "IM0004")
    return {"work": work, "root": root, "ref": ref, "damaged": damaged, "damaged_item": damaged_item}


def _sop(path: Path) -> str | None:
    try:
        return str(read_dataset(path, stop_before_pixels=True).SOPInstanceUID)
    except UnreadableError:
        return None


def test_mining_reports_bad_files_and_keeps_every_other_measurement(clinical):
    ref, root = clinical["ref"], clinical["root"]
    result = _mine(root, clinical["work"] / "mined")
    rep = result["report"]
    rel = clinical["damaged"].relative_to(root).as_posix()
    issues = {(i["source"], i["reason"]) for i in rep["file_issues"]}
    assert (rel, "undecodable_pixels") in issues
    assert {("DICOMDIR", "dicomdir"), ("demo-001/EMPTY", "empty_file"), ("README.txt", "not_dicom"), (".DS_Store", "not_dicom")} <= issues
    assert ("demo-000/REPORT.dcm", "unsupported_object") in issues
    detail = next(i["detail"] for i in rep["file_issues"] if i["source"] == rel)
    assert "EOI" in detail and "JPEG Lossless" in detail and "\n" not in detail

    lost = len(clinical["damaged_item"]["box"])
    assert rep["exclusions"]["image_not_converted"] == lost
    assert rep["counts"]["boxes_kept"] == ref["report"]["counts"]["boxes_kept"] - lost
    want = {
        k: [it for it in v if it["sop_instance_uid"] != clinical["damaged_item"]["sop_instance_uid"]] for k, v in ref["datalist"].items()
    }
    assert json.dumps(result["datalist"], sort_keys=True, default=str) == json.dumps(want, sort_keys=True, default=str)
    for it in [it for v in result["datalist"].values() for it in v]:
        assert (clinical["work"] / "mined" / it["image"]).is_file()
    assert not (clinical["work"] / "mined" / clinical["damaged_item"]["image"]).exists()


@pytest.mark.parametrize("patient", list(CHARSETS))
def test_mining_reads_names_and_descriptions_in_their_character_set(clinical, patient):
    path = sorted((clinical["root"] / patient / "t1c").iterdir())[1]
    res = inspect_object(path.read_bytes(), path.name)
    assert res.issue is None and res.image.series_description == CHARSETS[patient][2]


def _dciodvfy_errors(path: Path) -> set[str]:
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return {line.split(" - ", 1)[-1] for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")}


@pytest.fixture(scope="module")
def deid(clinical):
    out = clinical["work"] / "deid"
    report = deidentify_folder(clinical["root"], out, KEY, workers=2)
    return {"out": out, "report": report}


def test_deid_reports_bad_files_and_writes_the_rest(clinical, deid):
    rep = deid["report"]
    assert rep["failed_by_reason"].get("undecodable_pixels") == 1
    assert rep["failed_by_reason"].get("dicomdir") == 1
    assert rep["failed_by_reason"].get("empty_file") == 1
    assert rep["failed_by_reason"].get("not_dicom", 0) >= 3  # README.txt, .DS_Store, the export's own NOTES
    assert rep["excluded_by_reason"].get("encapsulated_document") == 1
    assert rep["files_written"] == rep["files_seen"] - rep["files_failed"] - rep["files_excluded"]
    detail = next(e["detail"] for e in rep["errors"] if e["reason"] == "undecodable_pixels")
    assert "EOI" in detail
    written = sorted(deid["out"].rglob("*.dcm"))
    assert len(written) == rep["files_written"]
    for p in written:
        read_dataset(p)  # complete, parseable files only
    assert not list(deid["out"].rglob("*.partial"))


@pytest.mark.parametrize("patient", list(CHARSETS))
def test_deid_keeps_kept_text_in_its_character_set(clinical, deid, patient):
    charset, name, _ = CHARSETS[patient]
    src = sorted((clinical["root"] / patient / "t1c").iterdir())[1]
    sop = Keyed(load_key(KEY)).uid(str(pydicom.dcmread(src, stop_before_pixels=True).SOPInstanceUID))
    (out,) = deid["out"].rglob(f"{sop}.dcm")
    ds = pydicom.dcmread(out)
    assert ds.SpecificCharacterSet == pydicom.dcmread(src, stop_before_pixels=True).SpecificCharacterSet, f"{charset!r} not kept"
    for word in KEPT[patient]:
        assert word in ds.SeriesDescription, f"{patient}: {word!r} lost from {ds.SeriesDescription!r}"
    assert SCRUBBED[patient] not in ds.SeriesDescription
    assert name.split("^")[0] not in str(ds.PatientName)
    assert not _dciodvfy_errors(out) - _dciodvfy_errors(src), "de-identification added dciodvfy errors"


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_deid_killed_midway_and_rerun_gives_the_uninterrupted_output(clinical, tmp_path):
    src = tmp_path / "in"
    for part in ("demo-000", "demo-001", "DICOMDIR", "README.txt"):
        s = clinical["root"] / part
        shutil.copytree(s, src / part) if s.is_dir() else shutil.copy(s, src / part)
    whole = deidentify_folder(src, tmp_path / "whole", KEY, workers=1)

    out = tmp_path / "killed"
    code = f"from bundle.deid.deidentify import deidentify_folder; deidentify_folder({str(src)!r}, {str(out)!r}, {KEY!r}, workers=1)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list(out.rglob("*.dcm"))) < 10:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    half = sorted(out.rglob("*.dcm"))
    assert 10 <= len(half) < whole["files_written"] and not (out / "deid_report.json").exists()
    for p in half:
        read_dataset(p)  # the kill left no half file under a final name
    (half[0].parent / f".{half[0].name}.99999.partial").write_bytes(b"half a file")  # as a kill mid-write leaves it

    again = deidentify_folder(src, out, KEY, workers=1)
    a, b = _tree(tmp_path / "whole"), _tree(out)
    assert sorted(a) == sorted(b)
    assert [k for k in a if k != "deid_report.json" and a[k] != b[k]] == []
    strip = lambda r: {k: v for k, v in r.items() if k != "elapsed_s"}  # noqa: E731
    assert strip(again) == strip(whole)
    assert strip(json.loads(b["deid_report.json"])) == strip(json.loads(a["deid_report.json"]))


@pytest.mark.parametrize("tool", [["dcmcjpls"], ["dcmcjpeg", "+e1"], ["dcmcrle"], ["dcmconv", "+tb"], ["dcmconv", "+td"]])
def test_blanking_works_in_any_transfer_syntax(pacs_export, tmp_path, tool):
    """Burned-in regions blanked on a compressed / big endian / deflated image: region at the minimum, the rest unchanged."""
    import numpy as np

    from bundle.deid.pixels import blank_regions
    from bundle.deid.write import save_atomic

    src = pacs_export / "dicom" / "demo-000" / "t1c" / "IM0012"
    enc = tmp_path / "enc.dcm"
    subprocess.run([*tool, str(src), str(enc)], check=True, capture_output=True)
    want = pydicom.dcmread(src).pixel_array.astype(np.int32)
    ds = pydicom.dcmread(enc)
    blank_regions(ds, [[0, 0, 20, 10]])
    save_atomic(ds, tmp_path / "out.dcm")
    got = pydicom.dcmread(tmp_path / "out.dcm").pixel_array.astype(np.int32)
    assert (got[:10, :20] == want.min()).all()
    np.testing.assert_array_equal(got[10:], want[10:])
    np.testing.assert_array_equal(got[:, 20:], want[:, 20:])
