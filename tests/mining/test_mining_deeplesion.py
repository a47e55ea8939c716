"""A generated DeepLesion-style release (DL_info.csv + 16-bit Images_png) mined into a detection datalist."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from bundle.mining.pipeline import Miner
from bundle.pacs.deeplesion import DeepLesionSource

COLUMNS = [
    "File_name",
    "Patient_index",
    "Study_index",
    "Series_ID",
    "Key_slice_index",
    "Measurement_coordinates",
    "Bounding_boxes",
    "Lesion_diameters_Pixel_",
    "Normalized_lesion_location",
    "Coarse_lesion_type",
    "Possibly_noisy",
    "Slice_range",
    "Spacing_mm_px_",
    "Image_size",
    "DICOM_windows",
    "Patient_gender",
    "Patient_age",
    "Train_Val_Test",
]
W, H = 96, 64  # columns, rows: not square, so a missing transpose cannot pass


def _hu(seed: int) -> np.ndarray:
    """(rows, columns) HU image whose every pixel differs: value = 10 * column - row + seed."""
    r, c = np.mgrid[0:H, 0:W]
    return (10 * c - r - 1000 + seed).astype(np.int32)


def _recist(cx, cy, long_px, short_px, ang=0.3):
    u, v = np.array([np.cos(ang), np.sin(ang)]), np.array([-np.sin(ang), np.cos(ang)])
    c = np.array([cx, cy], dtype=float)
    return np.array([c - long_px / 2 * u, c + long_px / 2 * u, c - short_px / 2 * v, c + short_px / 2 * v])


def _row(pid, study, series, key, pts, spacing="0.8, 0.8, 5", split="1", **over):
    box = np.concatenate([pts.min(0) - 5, pts.max(0) + 5]) if pts is not None else []
    row = {
        "File_name": f"{pid:06d}_{study:02d}_{series:02d}_{key:03d}.png",
        "Patient_index": str(pid),
        "Study_index": str(study),
        "Series_ID": str(series),
        "Key_slice_index": str(key),
        "Measurement_coordinates": ", ".join(f"{v:.3f}" for v in pts.ravel()) if pts is not None else "",
        "Bounding_boxes": ", ".join(f"{v:.3f}" for v in box),
        "Lesion_diameters_Pixel_": "",
        "Normalized_lesion_location": "0.5, 0.5, 0.5",
        "Coarse_lesion_type": "-1",
        "Possibly_noisy": "0",
        "Slice_range": f"{key - 2}, {key + 2}",
        "Spacing_mm_px_": spacing,
        "Image_size": f"{W}, {H}",
        "DICOM_windows": "-175, 275",
        "Patient_gender": "F",
        "Patient_age": "50",
        "Train_Val_Test": split,
    }
    row.update(over)
    return row


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("deeplesion")
    rows = [
        _row(1, 1, 1, 20, _recist(25, 20, 25, 12), split="1"),  # 20 mm: kept
        _row(1, 1, 1, 20, _recist(65, 40, 30, 10, 1.2), split="1"),  # 24 mm, same slice: second box of one image
        _row(2, 1, 2, 7, _recist(40, 30, 20, 8), spacing="0.7, 0.9, 2.5", split="2"),  # 14 mm: kept (validation)
        _row(3, 2, 1, 11, _recist(50, 30, 40, 20), split="3"),  # 32 mm: kept (test)
        _row(3, 2, 1, 11, _recist(20, 45, 10, 6), split="3"),  # 8 mm: too_small
        _row(4, 1, 1, 5, _recist(48, 32, 44, 20), spacing="2, 2, 5", split="1"),  # 88 mm: too_large
        _row(4, 1, 1, 5, _recist(48, 32, 20, 8), spacing="", split="1"),  # missing spacing
        _row(4, 1, 1, 5, _recist(48, 32, 20, 8), spacing="0, 0, 5", split="1"),  # invalid spacing
        _row(4, 1, 1, 5, None, split="1"),  # no coordinates
        _row(5, 1, 1, 9, _recist(48, 32, 20, 8), split="1"),  # its PNG is never written: image_missing
        _row(6, 1, 1, 3, _recist(48, 32, 20, 8), split="2"),  # truncated PNG: image_unreadable
        _row(7, 1, 1, 4, _recist(48, 32, 20, 8), Key_slice_index="abc"),  # invalid_row
        _row(8, 1, 1, 4, _recist(48, 32, 20, 8), File_name="garbage"),  # invalid_row
    ]
    with open(root / "DL_info.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    images = root / "Images_png"
    for k, (series_dir, key) in enumerate(
        [("000001_01_01", 20), ("000002_01_02", 7), ("000003_02_01", 11), ("000004_01_01", 5), ("000006_01_01", 3)]
    ):
        (images / series_dir).mkdir(parents=True)
        Image.fromarray((_hu(k) + 32768).astype(np.uint16)).save(images / series_dir / f"{key:03d}.png")
    bad = images / "000006_01_01" / "003.png"
    bad.write_bytes(bad.read_bytes()[:200])
    return root


@pytest.fixture(scope="module")
def mined(release, tmp_path_factory):
    out = tmp_path_factory.mktemp("dl_mined")
    Miner(
        str(out),
        source=DeepLesionSource(release / "DL_info.csv", release / "Images_png"),
        box_rules={"recist_rule": "segments", "margin_px": 5},  # DeepLesion's own box rule
        workers=1,
        progress=False,
    ).run()
    return out


def test_boxes_splits_and_exclusions(mined, release):
    datalist = json.loads((mined / "datalist.json").read_text())
    report = json.loads((mined / "mining_report.json").read_text())
    assert {k: [it["patient"] for it in v] for k, v in datalist.items()} == {"training": ["1"], "validation": ["2"], "test": ["3"]}
    assert all(it["split_source"] == "csv" for v in datalist.values() for it in v)
    assert report["exclusions"] == {
        "too_small": 1,
        "too_large": 1,
        "missing_pixel_spacing": 2,
        "no_coordinates": 1,
        "image_missing": 1,
        "image_unreadable": 1,
        "invalid_row": 2,
    }
    c = report["counts"]
    assert (c["measurements_found"], c["boxes_kept"], c["images_in_datalist"]) == (13, 4, 3)
    assert c["files_seen"] == 6 and c["objects_by_type"] == {"deeplesion_csv": 1, "png": 4}  # the missing PNG is not a file seen
    assert report["per_source"]["deeplesion"]["boxes_kept"] == 4 and report["source"]["kind"] == "deeplesion"
    assert "image_missing" in (mined / "mining_report.md").read_text()
    # the CSV's own Bounding_boxes (0-based pixel centres) come back from the segments rule + 5 px
    rows = list(csv.DictReader(open(release / "DL_info.csv")))
    for items in datalist.values():
        for it in items:
            assert it["image"] == f"images/{it['patient']}/{it['series_instance_uid']}_{it['instance_number']:03d}.nii.gz"
            for box, prov in zip(it["box"], it["provenance"]):
                row = rows[prov["csv_row"] - 2]
                expected = [float(v) for v in row["Bounding_boxes"].split(",")]
                assert np.allclose(np.asarray(box) - 0.5, expected, atol=1e-3)
                assert prov["csv_file"] == "DL_info.csv" and prov["patient_index"] == row["Patient_index"]
                assert prov["study_index"] == row["Study_index"] and prov["series_id"] == row["Series_ID"]
                assert prov["key_slice"] == int(row["Key_slice_index"]) and prov["reader"] == "deeplesion" and "segments" in prov["rule"]
    training = datalist["training"][0]
    assert len(training["box"]) == 2 and training["box"][0][0] < training["box"][1][0]
    assert datalist["validation"][0]["z_half_extent_slices"] == [pytest.approx(datalist["validation"][0]["long_mm"][0] / 2 / 2.5, abs=1e-3)]


def test_slices_are_the_png_in_hu_transposed(mined, release):
    datalist = json.loads((mined / "datalist.json").read_text())
    seeds = {"000001_01_01": 0, "000002_01_02": 1, "000003_02_01": 2}
    for items in datalist.values():
        for it in items:
            img = nib.load(mined / it["image"])
            arr = np.asarray(img.dataobj)
            assert arr.dtype == np.int16 and arr.shape == (W, H)  # axis 0 = x = PNG column
            assert np.array_equal(arr, _hu(seeds[it["series_instance_uid"]]).T)
            assert np.allclose(np.diag(img.affine)[:2], it["spacing"])
            png = np.asarray(Image.open(release / "Images_png" / it["sop_instance_uid"]))
            assert arr[5, 3] == int(png[3, 5]) - 32768


def test_split_file_overrides_csv_and_config_runs(release, repo_root, tmp_path):
    """configs/mine.yaml with --deeplesion_csv/--deeplesion_images overrides; a split file wins over Train_Val_Test."""
    from monai.bundle import ConfigParser

    (tmp_path / "split.json").write_text(json.dumps({"1": "test", "2": "training", "3": "validation"}))
    parser = ConfigParser()
    parser.read_config(str(repo_root / "configs" / "mine.yaml"))
    parser["source"] = "@deeplesion_source"
    parser["deeplesion_csv"] = str(release / "DL_info.csv")
    parser["deeplesion_images"] = str(release / "Images_png")
    parser["output_dir"] = str(tmp_path / "out")
    parser["split_file"] = str(tmp_path / "split.json")
    parser["progress"] = False
    parser["convert"] = False
    parser["box_rules"]["min_long_mm"] = 5.0  # the 8 mm lesion is kept now
    parser.get_parsed_content("run")
    datalist = json.loads((tmp_path / "out" / "datalist.json").read_text())
    assert {k: sorted(it["patient"] for it in v) for k, v in datalist.items()} == {"training": ["2"], "validation": ["3"], "test": ["1"]}
    assert sum(len(it["box"]) for v in datalist.values() for it in v) == 5
    assert all(it["split_source"] == "split_file" for v in datalist.values() for it in v)
