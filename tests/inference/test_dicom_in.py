"""DICOM in: volume inference on a DICOM series folder, a study folder and an Enhanced MR file gives the NIfTI's boxes.

The volume is written once as NIfTI (uint16 voxels, an oblique-free RAS grid with an offset) and as a DICOM series
from those voxels (bundle/demo/dicom_series.py); the Enhanced MR is highdicom's multi-frame conversion of that
series, relabelled Enhanced MR Image Storage. Same voxels and same world geometry, so `configs/inference_volume.yaml`
must give the same boxes in world LPS (and the same scores) for every form, with an untrained seeded network.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import EnhancedMRImageStorage

from tests.inference.bundle_calls import infer_volume

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def forms(tmp_path_factory) -> dict[str, Path]:
    from bundle.demo.dicom_series import write_mr_series

    d = tmp_path_factory.mktemp("dicom_in")
    rng = np.random.default_rng(0)
    vol = rng.normal(200, 20, (48, 40, 12))
    zz, yy, xx = np.meshgrid(np.arange(12), np.arange(40), np.arange(48), indexing="ij")
    blob = ((xx - 30) ** 2 + (yy - 15) ** 2 + 4 * (zz - 6) ** 2 < 40).transpose(2, 1, 0)
    vol[blob] = 900
    vol = np.clip(vol, 0, None).astype(np.uint16)
    aff = np.diag([1.5, 1.25, 3.0, 1.0])
    aff[:3, 3] = [-30.0, -20.0, 10.0]
    nii = d / "volume.nii.gz"
    nib.save(nib.Nifti1Image(vol, aff), nii)
    series = d / "series"
    paths = write_mr_series(nii, series, "AX T1 POST GAD", 5)
    study = d / "study"  # the same series beside a FLAIR and a sagittal T1 post-contrast one
    for p in paths:
        (study / "t1c").mkdir(parents=True, exist_ok=True)
        (study / "t1c" / p.name).write_bytes(p.read_bytes())
    write_mr_series(nii, study / "flair", "AX T2 FLAIR", 3)
    write_mr_series(nii, study / "sag", "SAG T1 POST GAD", 4, orientation="sagittal")
    (study / "NOTES.txt").write_text("not DICOM\n")
    slices = [pydicom.dcmread(p) for p in paths]
    mf = hd.legacy.LegacyConvertedEnhancedMRImage(
        slices, series_instance_uid=hd.UID(), series_number=50, sop_instance_uid=hd.UID(), instance_number=1
    )
    mf.SOPClassUID = mf.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    enhanced = d / "enhanced.dcm"
    mf.save_as(enhanced, enforce_file_format=True)
    return {"nifti": nii, "series": series, "study": study, "enhanced": enhanced}


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> Path:
    from bundle.demo.run import save_untrained

    root = tmp_path_factory.mktemp("untrained")
    save_untrained(root / "models" / "model.pt", seed=0)
    return root


def _infer(bundle_root: Path, image: Path, out: Path) -> dict:
    return infer_volume(bundle_root, image, out, score_threshold=-1e9, score_thresh=0.0, slice_sliding_window=False)


@pytest.fixture(scope="module")
def predictions(forms, untrained, tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("pred")
    return {name: _infer(untrained, path, out / f"{name}.json") for name, path in forms.items()}


@pytest.mark.parametrize("form", ["series", "study", "enhanced"])
def test_dicom_gives_the_boxes_of_its_nifti(predictions, form):
    ref, got = predictions["nifti"], predictions[form]
    assert len(ref["box_world"]) > 0
    assert len(got["box_world"]) == len(ref["box_world"])
    np.testing.assert_allclose(np.asarray(got["box_world"]), np.asarray(ref["box_world"]), atol=1e-3)
    np.testing.assert_allclose(np.asarray(got["score"]), np.asarray(ref["score"]), rtol=1e-5, atol=1e-5)


def test_world_geometry_is_kept(predictions, forms):
    """The DICOM volume's affine maps its array to the NIfTI's world: the ITK reader keeps origin, spacing and direction."""
    ref = np.asarray(predictions["nifti"]["affine"])
    for form in ("series", "enhanced"):
        aff = np.asarray(predictions[form]["affine"])
        assert np.allclose(np.abs(aff[:3, :3]), np.abs(ref[:3, :3]), atol=1e-4), form  # same spacing, axes maybe flipped
        corners = np.array([[0, 0, 0, 1], [47, 39, 11, 1]], float)
        world = {tuple(np.round(c, 3)) for c in (ref @ corners.T).T[:, :3]}
        shape = predictions[form]["shape"]
        theirs = (aff @ np.array([[0, 0, 0, 1], [shape[0] - 1, shape[1] - 1, shape[2] - 1, 1]], float).T).T[:, :3]
        box = lambda pts: (np.round(np.min(pts, 0), 3).tolist(), np.round(np.max(pts, 0), 3).tolist())  # noqa: E731
        assert box(np.asarray(sorted(world))) == box(theirs), form


def test_study_folder_names_the_series_it_picked(forms, caplog):
    from bundle.datalist.series_rules import SeriesRules
    from bundle.inference.dicom_input import pick_series

    with caplog.at_level(logging.INFO, logger="bundle.inference.dicom_input"):
        chosen = pick_series(forms["study"], SeriesRules())
    assert chosen.infos[0].series_description == "AX T1 POST GAD"
    (line,) = [r.getMessage() for r in caplog.records if "picked series" in r.getMessage()]
    assert "'AX T1 POST GAD'" in line and "'AX T2 FLAIR'" in line and "series_description (t2_pd)" in line and "not_axial" in line


def test_refusals_are_one_line_naming_the_input(forms, tmp_path):
    from bundle.datalist.series_rules import SeriesRules
    from bundle.inference.dicom_input import CheckVolumed
    from bundle.transforms.checks import BadImageError

    one = next(forms["series"].iterdir())
    uneven = tmp_path / "uneven"
    uneven.mkdir()
    for k, p in enumerate(sorted(forms["series"].iterdir())[:4]):
        ds = pydicom.dcmread(p)
        ds.ImagePositionPatient = [0, 0, [0, 3, 6, 12][k]]
        ds.save_as(uneven / p.name)
    nomatch = tmp_path / "nomatch"
    for sub in ("flair", "sag"):
        shutil.copytree(forms["study"] / sub, nomatch / sub)
    cases = {
        str(one): "is a single-frame DICOM image, not a volume; give the folder of its series",
        str(forms["study"] / "flair"): None,  # a series folder is taken as given, whatever its description
        str(uneven): "slices are not evenly spaced (gaps 3.000 to 6.000 mm)",
        str(nomatch): "no series matches the series rules (axial T1 post-contrast); found: MR '",
    }
    for path, tail in cases.items():
        check = CheckVolumed("image", 3, SeriesRules())
        if tail is None:
            check({"image": path})
            continue
        with pytest.raises(BadImageError) as err:
            check({"image": path})
        msg = str(err.value)
        assert msg.startswith(f"{path}: ") and tail in msg and "\n" not in msg, msg
    assert "'AX T2 FLAIR' (12 files, 12 frames): series_description (t2_pd)" in msg  # the last one: each series says why not


def test_enhanced_mr_becomes_a_series_volume_in_mining(forms, tmp_path):
    """Mining's series volumes: an Enhanced MR file is stacked frame by frame in position order (was series_not_a_volume)."""
    from bundle.datalist.schema import DatalistItem
    from bundle.io.dicom import image_info, read_dataset
    from bundle.mining.volumes import series_volumes
    from bundle.pacs.folder import FolderSource

    folder = tmp_path / "export"
    folder.mkdir()
    mf = pydicom.dcmread(forms["enhanced"])  # highdicom stores the frames top down (z 43 .. 10): the volume goes by position
    assert float(mf.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient[2]) == 43.0
    mf.save_as(folder / "MF0001", enforce_file_format=True)
    info = image_info(read_dataset(folder / "MF0001"), "MF0001")
    key = DatalistItem(
        image="slices/k.nii.gz", box=[[4.0, 5.0, 9.0, 12.0]], label=[0], patient="p", series_instance_uid=info.series_uid,
        sop_instance_uid=info.sop_instance_uid, frame=3, spacing=info.per_frame[2]["spacing"],
    )  # fmt: skip
    vols, issues = series_volumes({"training": [key]}, {info.sop_instance_uid: info}, FolderSource(folder), tmp_path / "out", 1, False)
    assert issues == []
    (item,) = vols["training"]
    assert item.box == [[4.0, 5.0, 9.0, 9.0, 12.0, 10.0]]  # stored frame 3 is the 10th slice from the bottom
    vol = np.asarray(nib.load(tmp_path / "out" / item.image).dataobj)
    assert vol.shape == (48, 40, 12) and item.spacing[2] == pytest.approx(3.0)
    classic = sorted((pydicom.dcmread(f) for f in forms["series"].iterdir()), key=lambda ds: float(ds.ImagePositionPatient[2]))
    np.testing.assert_array_equal(vol, np.stack([ds.pixel_array.T for ds in classic], -1))  # the classic series, bottom up


def test_frames_that_are_not_one_volume_stay_series_not_a_volume(forms):
    from bundle.io.dicom import image_info
    from bundle.mining.volumes import NotAVolume, order_series

    mf = pydicom.dcmread(forms["enhanced"])
    mf.PerFrameFunctionalGroupsSequence[4].PlanePositionSequence[0].ImagePositionPatient[2] += 1.0
    info = image_info(mf, "MF")
    with pytest.raises(NotAVolume, match="not evenly spaced"):
        order_series([info])


def test_evaluate_volume_scores_a_dicom_series_as_its_nifti(forms, predictions, untrained, tmp_path):
    """evaluate_volume.yaml with DICOM datalist items (truth in the series' own array, as ITK stores it) = with the NIfTI."""
    from monai.bundle import ConfigWorkflow

    from bundle.datalist.schema import write_datalist

    nifti_box = np.array([24, 10, 4, 37, 21, 9], float)  # around the bright blob, in the NIfTI's array
    ref_aff = np.asarray(predictions["nifti"]["affine"])
    corners = np.array([[x, y, z, 1.0] for x in nifti_box[[0, 3]] for y in nifti_box[[1, 4]] for z in nifti_box[[2, 5]]])
    metrics = {}
    for form in ("nifti", "series"):
        aff = np.asarray(predictions[form]["affine"])
        vox = (np.linalg.inv(aff) @ (ref_aff @ corners.T)).T[:, :3]
        box = np.concatenate([vox.min(0), vox.max(0)]).round(3).tolist()  # corners map to corners: the axes are only flipped
        spacing = np.linalg.norm(aff[:3, :3], axis=0).round(4).tolist()  # the stored array's (the datalist field mining writes)
        item = {"image": str(forms[form]), "box": [box], "label": [0], "patient": "p1", "spacing": spacing}
        dl = write_datalist({"validation": [item], "test": [item]}, tmp_path / form / "datalist_volume.json")
        (tmp_path / form / "models").mkdir(parents=True)
        (tmp_path / form / "models" / "model.pt").write_bytes((untrained / "models" / "model.pt").read_bytes())
        cfg = [str(ROOT / "configs" / n) for n in ("inference_volume.yaml", "evaluate_volume.yaml")]
        wf = ConfigWorkflow(config_file=cfg, workflow_type="infer", bundle_root=str(tmp_path / form), volume_datalist_file=str(dl),
                            output_dir=str(tmp_path / form / "eval"), slice_sliding_window=False, n_bootstrap=10, protocol_variants={},
                            write_operating_point=False)  # fmt: skip
        wf.initialize()
        wf.run()
        wf.finalize()
        metrics[form] = json.loads((tmp_path / form / "eval" / "metrics_volume.json").read_text())
    for key in ("operating_point", "test"):
        a, b = json.dumps(metrics["nifti"][key], sort_keys=True), json.dumps(metrics["series"][key], sort_keys=True)
        assert a == b, key


def test_enhanced_mr_frames_out_of_slice_order_are_refused(forms, tmp_path):
    """ITK stacks frames in stored order, so frames that do not go one way through the volume are refused, not scrambled."""
    from bundle.inference.dicom_input import CheckVolumed
    from bundle.transforms.checks import BadImageError

    mf = pydicom.dcmread(forms["enhanced"])
    groups = list(mf.PerFrameFunctionalGroupsSequence)
    groups[2], groups[7] = groups[7], groups[2]
    mf.PerFrameFunctionalGroupsSequence = groups
    mf.save_as(tmp_path / "shuffled.dcm", enforce_file_format=True)
    with pytest.raises(BadImageError, match="frames are not stored in slice order"):
        CheckVolumed("image", 3)({"image": str(tmp_path / "shuffled.dcm")})
