"""The real overlay in pydicom-data's MR-SIEMENS-DICOM-WithOverlays.dcm: one lesion box, glyphs rejected."""

from __future__ import annotations

import json
import shutil

import pytest

from bundle.mining.pipeline import Miner
from bundle.pacs.folder import FolderSource

pydicom_data = pytest.importorskip("pydicom.data")


def test_overlay_circle_becomes_one_box(tmp_path):
    src = pydicom_data.get_testdata_file("MR-SIEMENS-DICOM-WithOverlays.dcm")
    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copy(src, folder / "overlay_image")
    (folder / "garbage.bin").write_bytes(b"\x00" * 200 + b"DICM")  # non-DICOM beside it
    # the series is an MPR of a liver MR, so the brain series rules are relaxed for this source
    rules = {"include": [".*"], "exclude": [], "image_type_exclude": [], "require_axial": True}
    res = Miner(str(tmp_path / "out"), source=FolderSource(folder), series_rules=rules, workers=1, progress=False).run()
    datalist = json.loads((tmp_path / "out" / "datalist.json").read_text())
    items = [it for v in datalist.values() for it in v]
    assert len(items) == 1 and len(items[0]["box"]) == 1
    x0, y0, x1, y1 = items[0]["box"][0]
    # the drawn circle spans columns 46..80 and rows 239..273 (0-based) of the 484x484 image
    assert (x0, y0, x1, y1) == pytest.approx((46, 239, 81, 274), abs=0.01)
    assert 20 <= items[0]["long_mm"][0] <= 30
    assert res["report"]["exclusions"] == {"not_dicom": 1, "overlay_glyph": 5}
    assert items[0]["provenance"][0]["reader"] == "overlay"
