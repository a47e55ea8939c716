"""Mining the simulated export from a folder: the kept boxes are exactly the measured lesions."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from bundle.mining.pipeline import Miner
from bundle.mining.rules.boxes import iou
from bundle.pacs.folder import FolderSource


@pytest.fixture(scope="module")
def mined(pacs_export, tiny_demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("mined")
    res = Miner(
        str(out), source=FolderSource(pacs_export / "dicom"), split_file=str(tiny_demo / "truth.json"), workers=2, progress=False
    ).run()
    return out, res


def match_record(record: dict, datalist: dict) -> list[float]:
    """Every expected 'kept' mark has one mined box on its image (IoU >= 0.9) and nothing else was kept."""
    mined = [(it["sop_instance_uid"], b) for items in datalist.values() for it in items for b in it["box"]]
    expected = [m for p in record["patients"] for m in p["marks"] if m["status"] == "kept"]
    assert len(mined) == len(expected)
    ious, used = [], set()
    for m in expected:
        cands = [(iou(m["box"], b), k) for k, (sop, b) in enumerate(mined) if sop == m["referenced_sop_instance_uid"] and k not in used]
        best, k = max(cands)
        assert best >= 0.9, (m, best)
        used.add(k)
        ious.append(best)
    return ious


def test_kept_boxes_match_record(mined, pacs_export):
    out, _ = mined
    record = json.loads((pacs_export / "record.json").read_text())
    datalist = json.loads((out / "datalist.json").read_text())
    ious = match_record(record, datalist)
    assert len(ious) >= 5


def test_every_exclusion_reason_counted(mined, pacs_export):
    out, _ = mined
    record = json.loads((pacs_export / "record.json").read_text())
    report = json.loads((out / "mining_report.json").read_text())
    expected = {k: v for k, v in record["expected_counts"].items() if k != "kept"}
    assert report["exclusions"] == expected
    assert report["counts"]["boxes_kept"] == record["expected_counts"]["kept"]
    assert (out / "mining_report.md").read_text().count("|") > 10


def test_slices_are_the_demo_arrays_and_split_is_by_patient(mined, pacs_export, tiny_demo):
    out, _ = mined
    record = json.loads((pacs_export / "record.json").read_text())
    truth = json.loads((tiny_demo / "truth.json").read_text())
    datalist = json.loads((out / "datalist.json").read_text())
    where = {m["referenced_sop_instance_uid"]: m for p in record["patients"] for m in p["marks"] if m["status"] == "kept"}
    for split, items in datalist.items():
        for it in items:
            assert truth["split"][it["patient"]] == split
            m = where[it["sop_instance_uid"]]
            vol = np.asarray(nib.load(tiny_demo / it["patient"] / "t1c.nii.gz").dataobj)
            img = nib.load(out / it["image"])
            assert np.array_equal(np.asarray(img.dataobj), vol[:, :, m["slice"]])
            assert np.allclose(np.diag(img.affine)[:2], truth["patients"][0]["spacing"][:2])
            for prov in it["provenance"]:
                assert prov["source"] and prov["sop_instance_uid"] and prov["referenced_sop_instance_uid"] == it["sop_instance_uid"]
                assert prov["operator"].startswith("Reader^") and prov["date"] and prov["rule"]


def test_running_twice_is_identical(mined, pacs_export, tiny_demo, tmp_path):
    out, _ = mined
    Miner(
        str(tmp_path), source=FolderSource(pacs_export / "dicom"), split_file=str(tiny_demo / "truth.json"), workers=2, progress=False
    ).run()
    for name in ("datalist.json", "mining_report.json", "mining_report.md"):
        assert (out / name).read_bytes() == (tmp_path / name).read_bytes()
    for p in (out / "images").rglob("*.nii.gz"):
        assert np.array_equal(np.asarray(nib.load(p).dataobj), np.asarray(nib.load(tmp_path / p.relative_to(out)).dataobj))


def test_config_runs_with_overrides(pacs_export, repo_root, tmp_path):
    """configs/mine.yaml through MONAI's bundle parser, with source, output, date range and rules overridden."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(repo_root / "configs" / "mine.yaml"))
    parser["source_dir"] = str(pacs_export / "dicom")
    parser["output_dir"] = str(tmp_path)
    parser["date_from"] = "20210110"  # drops the first patient's study (20210104)
    parser["progress"] = False
    parser["convert"] = False
    parser["box_rules"]["min_long_mm"] = 5.0  # the 6 mm focus is now kept
    parser.get_parsed_content("run")
    report = json.loads((tmp_path / "mining_report.json").read_text())
    assert report["exclusions"].get("out_of_date_range", 0) >= 3
    assert "too_small" not in report["exclusions"]
