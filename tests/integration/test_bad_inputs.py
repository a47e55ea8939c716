"""Every row of docs/bad_inputs.md: one line naming the file and the problem, no traceback, non-zero exit.

The table in the doc is generated from ROWS (``python tests/integration/test_bad_inputs.py`` prints it), so the doc and
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

ROOT = Path(__file__).resolve().parents[2]
VOL = "configs/inference_volume.yaml"
INF = "configs/inference.yaml"

# (id, entry point, what the user hands over, file maker name, spatial dims, expected message tail)
ROWS = [
    ("nan", VOL, "volume with a NaN voxel", "nan", 3, "has 1 NaN or infinite voxels of"),
    ("zero", VOL, "all-zero volume", "zero", 3, "is blank (every voxel is 0)"),
    ("4d", VOL, "4D file (two volumes stacked)", "fourd", 3, "has 4 dimensions (shape 8x8x6x2); expected a 3D volume"),
    ("2d_to_volume", VOL, "2D slice given to volume inference", "twod", 3, "has 2 dimensions (shape 8x8); expected a 3D volume"),
    ("3d_to_2d", INF, "3D volume given to 2D slice inference", "good", 2, "has 3 dimensions (shape 8x8x6); expected a 2D slice"),
    ("fake", VOL, "text file named .nii.gz", "fake", 3, "cannot be read as an image (ImageFileError:"),
    ("truncated", VOL, "truncated .nii.gz (gzip cut short)", "truncated", 3, "cannot be read as an image ("),
    ("missing", VOL, "path that does not exist", "missing", 3, "no such file"),
    ("empty_glob", VOL, "--input_glob matching nothing", "glob", 3, "matches no files"),
    ("directory", VOL, "a folder without DICOM images (a DICOM series or study folder is read)", "directory", 3, "holds no DICOM image files"),
    ("dicom_slice", VOL, "one single-frame DICOM file", "dicom_slice", 3, "is a single-frame DICOM image, not a volume; give the folder of its series"),
    ("dicom_no_match", VOL, "study folder, no axial T1 post-contrast series", "dicom_no_match", 3, "no series matches the series rules (axial T1 post-contrast); found: MR '"),
    ("empty_file", VOL, "empty (0-byte) file", "empty", 3, "is empty (0 bytes)"),
    ("complex", VOL, "complex64 voxels", "complex", 3, "has complex voxels (complex64); expected real numbers"),
    ("zero_pixdim", VOL, "pixdim 0 in the header", "zero_pixdim", 3, "non-positive or non-finite voxel spacing in its header (pixdim [0.0, 1.0, 1.0])"),
    ("neg_pixdim", VOL, "negative pixdim in the header", "neg_pixdim", 3, "non-positive or non-finite voxel spacing in its header (pixdim [-1.0, 1.0, 1.0])"),
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
        (p / "notes.txt").write_text("no DICOM here\n")
    elif kind == "dicom_slice":
        return str(_series(d, "AX T1 POST GAD", 1)[0])
    elif kind == "dicom_no_match":
        _series(d, "AX T2 FLAIR", 2)
        _series(d, "SAG T1 POST GAD", 3, orientation="sagittal")
        return str(d / "in")
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
    from bundle.inference.dicom_input import CheckVolumed
    from bundle.transforms.checks import BadImageError, CheckImaged

    _, config, _, kind, ndim, tail = row
    path = _make(kind, tmp_path)
    check = CheckVolumed("image", ndim) if config == VOL else CheckImaged("image", ndim)  # the check each config runs
    with pytest.raises(BadImageError) as err:
        check({"image": path})
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
    from bundle.inference.inputs import screen_inputs
    from bundle.inference.predictions import DetectionSaver

    good, nan, missing = (_make(k, tmp_path) for k in ("good", "nan", "missing"))
    items = [{"image": nan}, {"image": good}, {"image": missing}]
    saver = DetectionSaver(str(tmp_path / "out.json"))
    skipped = screen_inputs(items, [saver], 3)
    assert items == [{"image": good}]
    assert [s["image"] for s in saver.skipped] == [nan, missing] == [s["image"] for s in skipped]
    assert "NaN" in saver.skipped[0]["reason"] and "no such file" in saver.skipped[1]["reason"]


def test_batch_of_only_bad_items_stops(tmp_path):
    from bundle.inference.inputs import screen_inputs
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


def test_debug_env_shows_the_traceback(monkeypatch, capsys):
    """BUNDLE_DEBUG=1: the hook hands an input error to Python's own hook (the full traceback)."""
    from bundle.io import errors

    try:
        raise RuntimeError("Failed to evaluate") from errors.InputError("x.nii.gz: no such file")
    except RuntimeError as exc:
        caught = exc
    errors._hook(type(caught), caught, caught.__traceback__)
    assert capsys.readouterr().err.strip() == "error: x.nii.gz: no such file (BUNDLE_DEBUG=1 shows the traceback)"
    monkeypatch.setenv("BUNDLE_DEBUG", "1")
    errors._hook(type(caught), caught, caught.__traceback__)
    err = capsys.readouterr().err
    assert "Traceback" in err and "InputError: x.nii.gz: no such file" in err


# --- the Deploy app (deploy/app/app.py): checked before its graph starts (bundle/serving/app_inputs.py) ---
# (id, bad input, maker, expected message tail)
DEPLOY_ROWS = [
    ("deploy_file", "`-i` names a file, not a folder", "file", "is a file, not a folder; give -i the folder that holds the DICOM series"),
    ("deploy_empty", "empty input folder", "empty", "is empty; no DICOM files to read"),
    ("deploy_not_dicom", "folder of non-DICOM files", "not_dicom", "none of its 2 files is DICOM (the first: a.txt)"),
    ("deploy_no_match", "mixed series, none T1 post-contrast axial", "no_match", "no series matches 'T1 post-contrast axial' (SERIES_RULES); found: MR 'AX T2 FLAIR'; MR 'SAG T1 POST GAD'"),
    ("deploy_unusable_series", "a series with 1 decodable slice of 4", "unusable", "cannot form a volume: 1 of 4 slices usable (need 2; skipped: undecodable_pixels 3)"),
    ("deploy_no_model", "`-m` folder without model.ts / model.pt", "no_model", "no model.ts or model.pt in this folder"),
]  # fmt: skip


def _series(d: Path, desc: str, number: int, shape=(16, 16, 4), orientation: str = "axial") -> list[Path]:
    from bundle.demo.dicom_series import write_mr_series

    vol = (np.random.default_rng(number).random(shape) * 100 + 1).astype(np.float32)
    nii = d / f"s{number}.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.diag([3.0, 3.0, 3.0, 1.0])), nii)
    paths = write_mr_series(nii, d / "in", desc, number, orientation=orientation)
    nii.unlink()
    return paths


def _deploy_input(kind: str, d: Path) -> tuple[str, str]:
    """(what the user gives: folder or model path, the file the message names)."""
    folder = d / "in"
    if kind == "file":
        folder.write_text("not a folder\n")
    elif kind == "empty":
        folder.mkdir()
    elif kind == "not_dicom":
        folder.mkdir()
        (folder / "a.txt").write_text("hello\n")
        (folder / "b.dcm").write_bytes(b"\0" * 10)
    elif kind == "no_match":
        _series(d, "AX T2 FLAIR", 2)
        _series(d, "SAG T1 POST GAD", 3, orientation="sagittal")
    elif kind == "unusable":  # one damaged slice is skipped and reported (tests/serving/test_deploy_series.py); three leave too few
        paths = _series(d, "AX T1 POST GAD", 1)
        for f in paths[1:]:
            f.write_bytes(f.read_bytes()[:-100])
    elif kind == "no_model":
        (d / "models").mkdir()
        return str(d / "models"), str(d / "models")
    return str(folder), str(folder)


IN_PROCESS_DEPLOY_ROWS = [r for r in DEPLOY_ROWS if r[0] != "deploy_no_match"]  # the SDK's selector decides: subprocess only


@pytest.mark.parametrize("row", IN_PROCESS_DEPLOY_ROWS, ids=[r[0] for r in IN_PROCESS_DEPLOY_ROWS])
def test_deploy_rows(row, tmp_path):
    """The checks the app runs before its graph; the series choice itself is the SDK's (subprocess row below)."""
    import pydicom

    from bundle.io.errors import InputError
    from bundle.serving.app_inputs import dicom_files, model_file, screen_series

    rid, _, kind, tail = row
    given, named = _deploy_input(kind, tmp_path)
    with pytest.raises(InputError) as err:
        if kind == "no_model":
            model_file(given)
        elif kind == "unusable":
            files = dicom_files(given)  # the folder itself is fine
            screen_series(given, [pydicom.dcmread(f) for f in files], pydicom.dcmread(files[0]).SeriesInstanceUID)
        else:
            dicom_files(given)
    msg = str(err.value)
    assert msg.startswith(f"{named}: ") and tail in msg and "\n" not in msg, msg


def test_deploy_one_damaged_slice_is_not_refused(tmp_path):
    """The app's volume step skips and reports a single damaged slice (tests/serving/test_deploy_series.py): no error here."""
    import pydicom

    from bundle.serving.app_inputs import screen_series

    paths = _series(tmp_path, "AX T1 POST GAD", 1)
    paths[2].write_bytes(paths[2].read_bytes()[:-100])
    screen_series(tmp_path / "in", [pydicom.dcmread(f) for f in paths], "S1")


# --- mining (configs/mine.yaml) and de-identification (configs/deidentify.yaml): the configs, parsed in-process ---
# (id, bad input, overrides ({d}: a scratch folder), the file the message names, expected message tail)
MINE_ROWS = [
    ("mine_missing", "`--source_dir` that does not exist", {"source_dir": "{d}/nowhere"}, "{d}/nowhere", "no such folder; give --source_dir the PACS export folder"),
    ("mine_file", "`--source_dir` naming a file", {"source_dir": "{d}/export.zip"}, "{d}/export.zip", "is a file, not a folder; give --source_dir the folder that holds the export"),
    ("mine_empty", "empty `--source_dir`", {"source_dir": "{d}/empty"}, "{d}/empty", "is empty; no files to mine (--source_dir)"),
    ("mine_old_source", "old-style `--source PATH`", {"source": "{d}/export"}, "{d}/export", "--source takes a source object ('@folder_source', '@dicomweb_source', '@deeplesion_source'); for a folder export give --source_dir {d}/export"),
]  # fmt: skip
DEID_ROWS = [
    ("deid_missing_input", "`--input_dir` that does not exist", {"input_dir": "{d}/nowhere"}, "{d}/nowhere", "no such input folder (--input_dir)"),
    ("deid_input_file", "`--input_dir` naming a file", {"input_dir": "{d}/export.zip"}, "{d}/export.zip", "is a file, not a folder (--input_dir takes the export folder)"),
    ("deid_empty_input", "empty `--input_dir`", {"input_dir": "{d}/empty"}, "{d}/empty", "is empty; nothing to de-identify (--input_dir)"),
    ("deid_no_key", "no `--key_file`", {"key_file": None}, "key_file", "required; give --key_file FILE holding >= 16 bytes of secret"),
    ("deid_missing_key", "`--key_file` that does not exist", {"key_file": "{d}/nokey"}, "{d}/nokey", "no such key file (--key_file)"),
    ("deid_short_key", "key file of 5 bytes", {"key_file": "{d}/short.key"}, "{d}/short.key", "the key is 5 bytes; at least 16 are required"),
    ("deid_output_inside_input", "`--output_dir` inside `--input_dir`", {"output_dir": "{d}/export/deid"}, "{d}/export/deid", "output_dir must not be inside input_dir {d}/export (or contain it)"),
    ("deid_linkage_in_output", "`--linkage_file` inside `--output_dir`", {"linkage_file": "{d}/out/linkage.csv"}, "{d}/out/linkage.csv", "linkage_file is inside output_dir"),
]  # fmt: skip


def _scratch(d: Path) -> None:
    """What the data-side rows point at: a one-file export, an empty folder, a file, keys."""
    (d / "export").mkdir()
    (d / "export" / "a.dcm").write_bytes(b"\0" * 10)
    (d / "empty").mkdir()
    (d / "export.zip").write_bytes(b"PK")
    (d / "good.key").write_text("0123456789abcdef0123\n")
    (d / "short.key").write_text("abcde\n")


def _fill(v, d: Path):
    return v.replace("{d}", str(d)) if isinstance(v, str) else v


def _config_error(config: str, expr: str, overrides: dict) -> BaseException:
    """Build the config as ``monai.bundle run`` does and evaluate ``expr``; the exception it ends in."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / config))
    parser.update(overrides)
    with pytest.raises(Exception) as err:
        parser.get_parsed_content(expr)
    return err.value


@pytest.mark.parametrize("row", MINE_ROWS + DEID_ROWS, ids=[r[0] for r in MINE_ROWS + DEID_ROWS])
def test_data_side_rows(row, tmp_path):
    from bundle.io.errors import find_input_error

    rid, _, over, named, tail = row
    _scratch(tmp_path)
    d = tmp_path
    if rid.startswith("mine"):
        base = {"source_dir": f"{d}/export", "output_dir": f"{d}/out", "workers": 1, "progress": False}
        exc = _config_error("mine.yaml", "miner", {**base, **{k: _fill(v, d) for k, v in over.items()}})
    else:
        base = {"input_dir": f"{d}/export", "output_dir": f"{d}/out", "key_file": f"{d}/good.key"}
        exc = _config_error("deidentify.yaml", "run", {**base, **{k: _fill(v, d) for k, v in over.items()}})
    err = find_input_error(exc)
    assert err is not None, repr(exc)
    msg = str(err)
    assert msg.startswith(f"{_fill(named, d)}: ") and _fill(tail, d) in msg and "\n" not in msg, msg
    assert not (d / "out").exists()  # refused before anything was written


# --- as a user runs them: a few rows as subprocesses, all started at once (each is mostly import time) ---
# one per way a run can end: a config's initialize (nan), its engine run (empty_glob), the mining config, the Deploy app
SUBPROCESS_ROWS = ["nan", "empty_glob", "dicom_no_match", "mine_old_source", "deploy_no_match"]


@pytest.fixture(scope="module")
def untrained_bundle(tmp_path_factory) -> Path:
    """A bundle root whose models/model.pt is the untrained network: enough to test input checking."""
    from bundle.demo.run import save_untrained

    root = tmp_path_factory.mktemp("untrained")
    save_untrained(root / "models" / "model.pt", seed=0)
    return root


def _command(rid: str, d: Path, bundle_root: Path, deploy_python: Path) -> tuple[list[str], str]:
    """(the command line, the path the error line must name)."""
    bundle = [sys.executable, "-m", "monai.bundle", "run", "--bundle_root", str(bundle_root), "--config_file"]
    if rid in ("nan", "empty_glob", "dicom_no_match"):
        path = _make({"empty_glob": "glob"}.get(rid, rid), d)
        key = "--input_image" if rid == "nan" else "--input_glob"
        return [*bundle, VOL, key, path, "--output_path", str(d / "out.json")], path
    if rid == "mine_old_source":
        _scratch(d)
        return [*bundle, "configs/mine.yaml", "--source", str(d / "export"), "--output_dir", str(d / "out")], str(d / "export")
    given, _ = _deploy_input("no_match", d)
    app = [str(deploy_python), str(ROOT / "deploy" / "app" / "app.py")]
    return [*app, "-i", given, "-o", str(d / "out"), "-m", str(bundle_root / "models")], given


@pytest.fixture(scope="module")
def subprocess_runs(tmp_path_factory, untrained_bundle):
    from scripts.make_venv import make_venv

    deploy_python = make_venv(ROOT / "deploy" / "app" / "requirements.txt", ROOT / ".venv-deploy")
    env = {k: v for k, v in os.environ.items() if k != "BUNDLE_DEBUG"}
    env["PYTHONPATH"] = str(ROOT)
    runs = {}
    for rid in SUBPROCESS_ROWS:
        d = tmp_path_factory.mktemp(rid)
        cmd, named = _command(rid, d, untrained_bundle, deploy_python)
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        runs[rid] = (proc, named)
    yield runs
    for proc, _ in runs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _tail(rid: str) -> str:
    return next(r[-1] for rows in (ROWS, DATALIST_ROWS, MINE_ROWS, DEPLOY_ROWS) for r in rows if r[0] == rid)


@pytest.mark.parametrize("rid", SUBPROCESS_ROWS)
def test_subprocess_rows(rid, subprocess_runs):
    """Exit code 1, exactly one ``error: <file>: <problem>`` line, no traceback anywhere."""
    proc, named = subprocess_runs[rid]
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err[-3000:]
    assert "Traceback" not in out + err, err[-3000:]
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    tail = _tail(rid).replace("{d}", str(Path(named).parent))
    assert len(errors) == 1 and errors[0].startswith(f"error: {named}: ") and tail in errors[0], err[-3000:]
    assert errors[0].endswith("(BUNDLE_DEBUG=1 shows the traceback)")


def test_glob_skips_bad_volume(untrained_bundle, tmp_path):
    """A batch (``--input_glob``) with one bad volume: the run goes on, the output lists it under "skipped"."""
    from monai.bundle import ConfigWorkflow

    good = tmp_path / "a" / "t1c.nii.gz"
    bad = tmp_path / "b" / "t1c.nii.gz"
    for p in (good, bad):
        p.parent.mkdir()
    vol = np.random.default_rng(0).random((32, 32, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), good)
    vol[0, 0, 0] = np.inf
    nib.save(nib.Nifti1Image(vol, np.eye(4)), bad)
    wf = ConfigWorkflow(
        config_file=str(ROOT / VOL),
        workflow_type="infer",
        bundle_root=str(untrained_bundle),
        input_glob=str(tmp_path / "*" / "t1c.nii.gz"),
        output_path=str(tmp_path / "out.json"),
        val_patch_size=[32, 32],
        device="$torch.device('cpu')",
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    doc = json.loads((tmp_path / "out.json").read_text())
    assert [p["image"] for p in doc["predictions"]] == [str(good)]
    assert [s["image"] for s in doc["skipped"]] == [str(bad)] and "infinite" in doc["skipped"][0]["reason"]


def table() -> str:
    """The markdown table of docs/bad_inputs.md, from the rows above."""
    sub = set(SUBPROCESS_ROWS)

    def tested(rid: str) -> str:
        if rid == "deploy_no_match":
            return "as a subprocess (the app's venv)"
        return "in-process + as a subprocess" if rid in sub else "in-process"

    out = ["| id | entry point | bad input | what the user sees (stderr, exit code 1) | tested |", "| --- | --- | --- | --- | --- |"]
    for rid, config, what, _, _, tail in ROWS:
        cmd = f"`python -m monai.bundle run --config_file {config} --input_image FILE`"
        if rid == "empty_glob":
            cmd = f"`python -m monai.bundle run --config_file {config} --input_glob 'DIR/*.nii.gz'`"
        out.append(f"| {rid} | {cmd} | {what} | `error: FILE: {tail}...` | {tested(rid)} |")
    for rid, where, what, tail in ARRAY_ROWS:
        out.append(f"| {rid} | {where} | {what} | `error: <series>: {tail}` (HTTP 422 from MONAI Label) | {tested(rid)} |")
    for rid, what, _, mode, tail in DATALIST_ROWS:
        where = f"`configs/train.yaml`, `evaluate.yaml`, `inference.yaml` (box mode {mode})"
        out.append(f"| {rid} | {where} | {what} | `error: DATALIST: ...{tail}...` | {tested(rid)} |")
    app = "`python deploy/app/app.py -i DIR -o OUT -m MODELS`"
    for rid, what, kind, tail in DEPLOY_ROWS:
        named = {"unusable": "DIR: series UID", "no_model": "MODELS"}.get(kind, "DIR")
        out.append(f"| {rid} | {app} | {what} | `error: {named}: {tail}...` | {tested(rid)} |")
    for rows, config in ((MINE_ROWS, "mine"), (DEID_ROWS, "deidentify")):
        for rid, what, _, named, tail in rows:
            shown = "key_file" if named == "key_file" else "PATH"
            tail = tail.replace("{d}/export", "PATH" if config == "mine" else "INPUT_DIR")
            out.append(
                f"| {rid} | `python -m monai.bundle run --config_file configs/{config}.yaml` | {what} | "
                f"`error: {shown}: {tail}...` | {tested(rid)} |"
            )
    return "\n".join(out)


def test_doc_table_matches_rows():
    doc = (ROOT / "docs" / "bad_inputs.md").read_text()
    assert table() in doc, "docs/bad_inputs.md is out of date: paste the output of `python tests/integration/test_bad_inputs.py`"


if __name__ == "__main__":
    print(table())
