"""Every row of docs/bad_inputs.md: one line naming the file and the problem, no traceback, non-zero exit.

The table in the doc is generated from ROWS (``python tests/test_bad_inputs.py`` prints it), so the doc and
the tests cannot drift: test_doc_table_matches_rows fails when they differ. Most rows run in-process (the
same check the configs run); the rows marked ``cli`` also run ``python -m monai.bundle run`` as a user would.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
VOL = "configs/inference_volume.yaml"
INF = "configs/inference.yaml"

# (id, entry point, what the user hands over, file maker name, spatial dims, expected message tail, run the CLI)
ROWS = [
    ("nan", VOL, "volume with a NaN voxel", "nan", 3, "has 1 NaN or infinite voxels of", True),
    ("zero", VOL, "all-zero volume", "zero", 3, "is blank (every voxel is 0)", False),
    ("4d", VOL, "4D file (two volumes stacked)", "fourd", 3, "has 4 dimensions (shape 8x8x6x2); expected a 3D volume", True),
    ("2d_to_volume", VOL, "2D slice given to volume inference", "twod", 3, "has 2 dimensions (shape 8x8); expected a 3D volume", True),
    ("3d_to_2d", INF, "3D volume given to 2D slice inference", "good", 2, "has 3 dimensions (shape 8x8x6); expected a 2D slice", True),
    ("fake", VOL, "text file named .nii.gz", "fake", 3, "cannot be read as an image (ImageFileError:", True),
    ("truncated", VOL, "truncated .nii.gz (gzip cut short)", "truncated", 3, "cannot be read as an image (", False),
    ("missing", VOL, "path that does not exist", "missing", 3, "no such file", True),
    ("empty_glob", VOL, "--input_glob matching nothing", "glob", 3, "matches no files", True),
    ("directory", VOL, "a directory instead of a file", "directory", 3, "is a directory, not an image file", False),
    ("empty_file", VOL, "empty (0-byte) file", "empty", 3, "is empty (0 bytes)", False),
    ("complex", VOL, "complex64 voxels", "complex", 3, "has complex voxels (complex64); expected real numbers", False),
    ("zero_pixdim", VOL, "pixdim 0 in the header", "zero_pixdim", 3, "non-positive or non-finite voxel spacing in its header (pixdim [0.0, 1.0, 1.0])", False),
    ("neg_pixdim", VOL, "negative pixdim in the header", "neg_pixdim", 3, "non-positive or non-finite voxel spacing in its header (pixdim [-1.0, 1.0, 1.0])", False),
]  # fmt: skip

# in-memory arrays (MONAI Label / Deploy app hand CheckImaged an array, not a path)
ARRAY_ROWS = [
    ("bool_array", "Deploy app / MONAI Label array", "boolean array (a mask)", "has boolean voxels (a mask, not an image)"),
    ("degenerate_affine", "Deploy app / MONAI Label array", "affine with a zero column", "has a degenerate affine"),
]

# datalists: (id, what is wrong, item patch or raw text, box mode, expected message part)
DATALIST_ROWS = [
    ("json_syntax", "datalist JSON syntax error", "RAW", "xyxy", "not valid JSON"),
    ("box_length", "box of 5 numbers", {"box": [[1, 2, 3, 4, 5]]}, "xyxy", "must hold boxes of 4 (2D) or 6 (3D) numbers each"),
    ("box_nan", "NaN in a box", {"box": [[1, 2, float("nan"), 4]]}, "xyxy", "has a value that is not a finite number"),
    ("box_reversed", "x1 < x0", {"box": [[5, 2, 3, 4]]}, "xyxy", "ends before it starts"),
    ("label_count", "2 boxes, 1 label", {"box": [[1, 2, 3, 4], [1, 2, 3, 4]], "label": [0]}, "xyxy", "needs one integer per box (2)"),
    ("box_mode", "unknown box mode", {}, "xywhq", "box mode 'xywhq' is not one of"),
    ("missing_section", "no 'test' section", "NOTEST", "xyxy", "section 'test' is missing"),
]  # fmt: skip


def _make(kind: str, d: Path) -> str:
    """A bad (or good) input of the given kind under d; returns the path as the user types it."""
    rng = np.random.default_rng(0)
    vol = rng.random((8, 8, 6)).astype(np.float32) + 1
    p = d / f"{kind}.nii.gz"
    if kind == "good":
        nib.save(nib.Nifti1Image(vol, np.eye(4)), p)
    elif kind == "nan":
        vol[1, 1, 1] = np.nan
        nib.save(nib.Nifti1Image(vol, np.eye(4)), p)
    elif kind == "zero":
        nib.save(nib.Nifti1Image(np.zeros_like(vol), np.eye(4)), p)
    elif kind == "fourd":
        nib.save(nib.Nifti1Image(np.stack([vol, vol], -1), np.eye(4)), p)
    elif kind == "twod":
        nib.save(nib.Nifti1Image(vol[..., 0], np.eye(4)), p)
    elif kind == "fake":
        p.write_text("this is not a NIfTI file\n")
    elif kind == "truncated":
        nib.save(nib.Nifti1Image(vol, np.eye(4)), p)
        p.write_bytes(p.read_bytes()[:200])
    elif kind == "missing":
        pass
    elif kind == "glob":
        return str(d / "nothing_here" / "*.nii.gz")
    elif kind == "directory":
        p.mkdir()
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "complex":
        nib.save(nib.Nifti1Image(vol.astype(np.complex64), np.eye(4)), p)
    elif kind in ("zero_pixdim", "neg_pixdim"):
        p = d / f"{kind}.nii"
        nib.save(nib.Nifti1Image(vol, np.eye(4)), p)
        raw = bytearray(p.read_bytes())
        struct.pack_into("<f", raw, 80, 0.0 if kind == "zero_pixdim" else -1.0)  # pixdim[1]
        p.write_bytes(bytes(raw))
    return str(p)


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_check_names_file_and_problem(row, tmp_path):
    from bundle.transforms.checks import BadImageError, CheckImaged

    _, _, _, kind, ndim, tail, _ = row
    path = _make(kind, tmp_path)
    with pytest.raises(BadImageError) as err:
        CheckImaged("image", ndim)({"image": path})
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and tail in msg and "\n" not in msg


@pytest.mark.parametrize("row", ARRAY_ROWS, ids=[r[0] for r in ARRAY_ROWS])
def test_array_check(row):
    import torch
    from monai.data import MetaTensor

    from bundle.transforms.checks import BadImageError, CheckImaged

    arr = torch.rand(8, 8, 6) + 1
    affine = torch.eye(4, dtype=torch.float64)
    if row[0] == "bool_array":
        arr = arr > 1.5
    else:
        affine[0, 0] = 0
    img = MetaTensor(arr, affine=affine, meta={"filename_or_obj": "series 1.2.3"})
    with pytest.raises(BadImageError, match=r"^series 1\.2\.3: ") as err:
        CheckImaged("image", 3)({"image": img})
    assert row[3] in str(err.value)


def _write_datalist(d: Path, row) -> Path:
    p = d / "datalist.json"
    _, _, patch, _, _ = row
    if patch == "RAW":
        p.write_text('{"test": [')
        return p
    item = {"image": "a.nii.gz", "box": [[1, 2, 3, 4]], "label": [0], "patient": "p1"}
    if isinstance(patch, dict):
        item.update(patch)
        item["label"] = patch.get("label", [0] * len(item["box"]))
    doc = {"training": [item], "validation": [item]} if patch == "NOTEST" else {"training": [], "validation": [], "test": [item]}
    p.write_text(json.dumps(doc))
    return p


@pytest.mark.parametrize("row", DATALIST_ROWS, ids=[r[0] for r in DATALIST_ROWS])
def test_datalist_rows(row, tmp_path):
    from bundle.datalist.schema import DatalistError, load_datalist
    from bundle.io.errors import InputError

    p = _write_datalist(tmp_path, row)
    with pytest.raises(DatalistError) as err:
        load_datalist(p, "test", tmp_path, box_mode=row[3])
    assert isinstance(err.value, InputError) and str(err.value).startswith(str(p)) and row[4] in str(err.value)


def test_batch_skips_reports_and_goes_on(tmp_path):
    """A batch: the bad items are dropped, each listed with its reason for the saver; the good one stays."""
    from bundle.engines.handlers import DetectionSaver
    from bundle.engines.inputs import screen_inputs

    good, nan, missing = (_make(k, tmp_path) for k in ("good", "nan", "missing"))
    items = [{"image": nan}, {"image": good}, {"image": missing}]
    saver = DetectionSaver(str(tmp_path / "out.json"))
    skipped = screen_inputs(items, [saver], 3)
    assert items == [{"image": good}]
    assert [s["image"] for s in saver.skipped] == [nan, missing] == [s["image"] for s in skipped]
    assert "NaN" in saver.skipped[0]["reason"] and "no such file" in saver.skipped[1]["reason"]


def test_batch_of_only_bad_items_stops(tmp_path):
    from bundle.engines.inputs import screen_inputs
    from bundle.transforms.checks import BadImageError

    items = [{"image": _make("nan", tmp_path)}, {"image": _make("zero", tmp_path)}]
    with pytest.raises(BadImageError, match="all 2 input images are unusable"):
        screen_inputs(items, (), 3)


def test_monailabel_gets_a_4xx(tmp_path):
    """Inside a FastAPI server (MONAI Label) the error is an HTTPException: FastAPI answers 422 with the line."""
    fastapi = pytest.importorskip("fastapi")
    from bundle.transforms.checks import HTTP_STATUS, BadImageError, CheckImaged

    path = _make("nan", tmp_path)
    with pytest.raises(BadImageError) as err:
        CheckImaged("image", 3)({"image": path})
    assert isinstance(err.value, fastapi.HTTPException) and err.value.status_code == HTTP_STATUS == 422
    assert err.value.detail == str(err.value) and str(err.value).startswith(path)


def _cli(config: str, bundle_root: Path, tmp_path: Path, env_extra: dict | None = None, **over) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config, "--bundle_root", str(bundle_root)]
    cmd += ["--output_path", str(tmp_path / "out.json")]
    for k, v in over.items():
        cmd += [f"--{k}", str(v)]
    env = {k: v for k, v in os.environ.items() if k != "BUNDLE_DEBUG"}
    env.update(PYTHONPATH=str(ROOT), **(env_extra or {}))
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


CLI_ROWS = [r for r in ROWS if r[6]]


@pytest.mark.parametrize("row", CLI_ROWS, ids=[r[0] for r in CLI_ROWS])
def test_cli_one_line_no_traceback(row, served_bundle, tmp_path):
    _, config, _, kind, _, tail, _ = row
    path = _make(kind, tmp_path)
    key = "input_glob" if kind == "glob" else "input_image"
    proc = _cli(config, served_bundle, tmp_path, **{key: path})
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert errors == [f"error: {path}: {errors[0].split(': ', 2)[2]}"] and tail in errors[0], proc.stderr[-3000:]


def test_cli_debug_shows_traceback(served_bundle, tmp_path):
    proc = _cli(VOL, served_bundle, tmp_path, env_extra={"BUNDLE_DEBUG": "1"}, input_image=_make("missing", tmp_path))
    assert proc.returncode == 1 and "Traceback" in proc.stderr


def test_cli_glob_skips_bad_volume(served_bundle, tmp_path):
    good = tmp_path / "a" / "t1c.nii.gz"
    bad = tmp_path / "b" / "t1c.nii.gz"
    for p in (good, bad):
        p.parent.mkdir()
    vol = np.random.default_rng(0).random((32, 32, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), good)
    vol[0, 0, 0] = np.inf
    nib.save(nib.Nifti1Image(vol, np.eye(4)), bad)
    proc = _cli(VOL, served_bundle, tmp_path, input_glob=str(tmp_path / "*" / "t1c.nii.gz"), val_patch_size="[32,32]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "out.json").read_text())
    assert [p["image"] for p in doc["predictions"]] == [str(good)]
    assert [s["image"] for s in doc["skipped"]] == [str(bad)] and "infinite" in doc["skipped"][0]["reason"]


def table() -> str:
    """The markdown table of docs/bad_inputs.md, from the rows above."""
    out = ["| id | entry point | bad input | what the user sees (stderr, exit code 1) |", "| --- | --- | --- | --- |"]
    for rid, config, what, _, _, tail, _ in ROWS:
        cmd = f"`python -m monai.bundle run --config_file {config} --input_image FILE`"
        if rid == "empty_glob":
            cmd = f"`python -m monai.bundle run --config_file {config} --input_glob 'DIR/*.nii.gz'`"
        out.append(f"| {rid} | {cmd} | {what} | `error: FILE: {tail}...` |")
    for rid, where, what, tail in ARRAY_ROWS:
        out.append(f"| {rid} | {where} | {what} | `error: <series>: {tail}` (HTTP 422 from MONAI Label) |")
    for rid, what, _, mode, tail in DATALIST_ROWS:
        out.append(
            f"| {rid} | `configs/train.yaml`, `evaluate.yaml`, `inference.yaml` (box mode {mode}) | {what} | `error: DATALIST: ...{tail}...` |"
        )
    return "\n".join(out)


def test_doc_table_matches_rows():
    doc = (ROOT / "docs" / "bad_inputs.md").read_text()
    assert table() in doc, "docs/bad_inputs.md is out of date: paste the output of `python tests/test_bad_inputs.py`"


if __name__ == "__main__":
    print(table())
