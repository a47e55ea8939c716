"""Copies of one SOP Instance UID: one is written (or mined), every other copy is reported with the kept copy and why."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file

from bundle.deid.deidentify import deidentify_folder
from bundle.mining.pipeline import Miner
from bundle.pacs.folder import FolderSource


def _export(folder: Path) -> dict[str, Path]:
    """a: a lossy copy with other pixels (first in path order); b: the original; c: the original in RLE (same pixels)."""
    folder.mkdir()
    paths = {k: folder / f"{k}.dcm" for k in "abc"}
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.LossyImageCompression = "01"
    ds.PixelData = (ds.pixel_array.astype(np.int16) // 2).astype(ds.pixel_array.dtype).tobytes()
    ds.save_as(paths["a"], enforce_file_format=True)
    shutil.copyfile(get_testdata_file("MR_small.dcm"), paths["b"])
    shutil.copyfile(get_testdata_file("MR_small_RLE.dcm"), paths["c"])
    return paths


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_deidentification_writes_one_copy_and_says_which_and_why(tmp_path):
    paths = _export(tmp_path / "export")
    key = tmp_path / "key"
    key.write_text("0123456789abcdef0123456789abcdef")
    rep = deidentify_folder(tmp_path / "export", tmp_path / "deid", key, workers=1)
    assert rep["files_written"] == 1 and len(list((tmp_path / "deid").rglob("*.dcm"))) == 1
    by_input = {e["input_sha256"]: e for e in rep["excluded"]}
    a, c = by_input[_sha(paths["a"])], by_input[_sha(paths["c"])]
    assert a["reason"] == "duplicate_differing_copy" and c["reason"] == "duplicate_same_pixels"
    assert a["kept_input_sha256"] == c["kept_input_sha256"] == _sha(paths["b"])  # the lossless copy, though a comes first
    assert "this copy is lossy" in a["detail"] and "(the lossless copy)" in a["detail"]
    assert c["detail"].startswith("same pixels as the kept copy input sha256 " + _sha(paths["b"])[:12])
    written = pydicom.dcmread(next((tmp_path / "deid").rglob("*.dcm")))
    assert np.array_equal(written.pixel_array, pydicom.dcmread(paths["b"]).pixel_array)


def test_mining_reports_the_same_copies_the_same_way(tmp_path):
    _export(tmp_path / "export")
    rep = Miner(str(tmp_path / "mined"), source=FolderSource(tmp_path / "export"), workers=1, progress=False).run()["report"]
    issues = {i["source"]: i for i in rep["file_issues"]}
    assert issues["a.dcm"]["reason"] == "duplicate_differing_copy" and "kept b.dcm (the lossless copy)" in issues["a.dcm"]["detail"]
    assert issues["c.dcm"]["reason"] == "duplicate_same_pixels" and "b.dcm" in issues["c.dcm"]["detail"]
    assert "b.dcm" not in issues
    assert rep["counts"]["duplicate_copies"] == 2 and rep["counts"]["unreadable_or_unsupported_files"] == 0


def test_a_file_with_an_invalid_value_or_a_short_stream_fails_with_its_reason_not_internally(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    shutil.copyfile(get_testdata_file("badVR.dcm"), export / "bad_vr.dcm")
    raw = Path(get_testdata_file("MR_small.dcm")).read_bytes()
    (export / "cut.dcm").write_bytes(raw[:-500])  # pixel data cut short
    key = tmp_path / "key"
    key.write_text("0123456789abcdef0123456789abcdef")
    rep = deidentify_folder(export, tmp_path / "deid", key, workers=1)
    assert rep["failed_by_reason"] == {"corrupt": 1, "invalid_attribute": 1}
    details = sorted(e["detail"] for e in rep["errors"])
    assert details[0].startswith("(0028,0008) NumberOfFrames '1A'") and "declares" in details[1]
