"""An Enhanced MR multi-frame file in the Deploy app: one volume, the boxes of its classic series and of its NIfTI.

One demo volume is written as NIfTI (uint16, as DICOM stores it), as a classic DICOM series (bundle/demo/dicom_series.py)
and as an Enhanced MR (highdicom's multi-frame conversion of that series, relabelled Enhanced MR Image Storage: no
top-level orientation, position or spacing, its frames stored top down). The served test model then finds boxes in
(a) the NIfTI, (b) the series folder and (c) the Enhanced MR file through ``configs/inference_volume.yaml``, and in
(d) the series and (e) the Enhanced MR through the Deploy app, whose SR is read back: the same boxes in world LPS and
the same scores everywhere, and the Enhanced MR's SR names its frames (ReferencedFrameNumber).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import EnhancedMRImageStorage

from tests.inference.bundle_calls import infer_volume, package_infer

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = {"slice_sliding_window": False, "score_threshold": -100.0, "max_boxes": 8}


def enhanced_from_series(paths: list[Path], out: Path) -> Path:
    """highdicom's legacy conversion of a classic series, relabelled Enhanced MR Image Storage (geometry in functional groups)."""
    mf = hd.legacy.LegacyConvertedEnhancedMRImage(
        [pydicom.dcmread(p) for p in paths], series_instance_uid=hd.UID(), series_number=50, sop_instance_uid=hd.UID(), instance_number=1
    )
    mf.SOPClassUID = mf.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    out.parent.mkdir(parents=True, exist_ok=True)
    mf.save_as(out, enforce_file_format=True)
    return out


@pytest.fixture(scope="module")
def forms(tiny_demo, tmp_path_factory) -> dict[str, Path]:
    from bundle.demo.dicom_series import write_mr_series

    d = tmp_path_factory.mktemp("enhanced_app")
    src = nib.load(tiny_demo / "demo-000" / "t1c.nii.gz")
    nii = d / "volume.nii.gz"  # the NIfTI conversion of the DICOM: the voxels as DICOM stores them
    nib.save(nib.Nifti1Image(np.clip(np.asarray(src.dataobj), 0, None).astype(np.uint16), src.affine), nii)
    paths = write_mr_series(nii, d / "series", "AX T1 POST GAD", 1)
    enhanced = enhanced_from_series(paths, d / "enhanced" / "enhanced.dcm")
    assert "ImageOrientationPatient" not in pydicom.dcmread(enhanced, stop_before_pixels=True)
    return {"nifti": nii, "series": d / "series", "enhanced": enhanced}


# --- fast: the app's slices, geometry and SR references, in the bundle's environment ---


def test_enhanced_frames_are_the_classic_slices(forms):
    from bundle.serving.dicom_sr import build_gsps, build_sr, read_sr_boxes
    from bundle.serving.slices import SliceSource, enhanced_slices, frame_volume, selector_attributes, series_affine_lps

    mf = pydicom.dcmread(forms["enhanced"])
    slices = enhanced_slices(mf)
    classic = sorted((pydicom.dcmread(p) for p in forms["series"].iterdir()), key=lambda ds: float(ds.ImagePositionPatient[2]))
    assert [s.frame for s in slices] == list(range(len(classic), 0, -1))  # stored top down, stacked bottom up
    np.testing.assert_allclose(series_affine_lps(slices), series_affine_lps([SliceSource(ds) for ds in classic]), atol=1e-6)
    np.testing.assert_array_equal(frame_volume(slices), np.stack([ds.pixel_array for ds in classic]))
    assert selector_attributes(mf, "HFS") == {"ImageOrientationPatient": ["[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]"]}
    assert selector_attributes(classic[0], "HFS") == {}

    boxes, scores = np.array([[10.0, 12.0, 3.5, 20.0, 25.0, 6.2]]), np.array([0.8])
    frames = [s.frame for s in slices]
    sr = build_sr([s.dataset for s in slices], boxes, scores, "test", frames=frames)
    sr.save_as(forms["enhanced"].parent.parent / "sr.dcm")
    (got,) = read_sr_boxes(hd.sr.srread(forms["enhanced"].parent.parent / "sr.dcm"))
    assert got["sop_instance_uids"] == [mf.SOPInstanceUID] * 4 and got["frames"] == frames[3:7]
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert [r.ReferencedSOPInstanceUID for r in evidence] == [mf.SOPInstanceUID]  # the instance once, not once per frame
    gsps = build_gsps([s.dataset for s in slices], boxes, scores, "test", frames=frames)
    drawn = [(a.ReferencedImageSequence[0].ReferencedSOPInstanceUID, a.ReferencedImageSequence[0].ReferencedFrameNumber)
             for a in gsps.GraphicAnnotationSequence]  # fmt: skip
    assert drawn == [(mf.SOPInstanceUID, k) for k in frames[3:7]]
    if shutil.which("dciodvfy"):
        for name, ds in (("sr", sr), ("gsps", gsps)):
            ds.save_as(forms["enhanced"].parent.parent / f"{name}.dcm")
            out = subprocess.run(["dciodvfy", str(forms["enhanced"].parent.parent / f"{name}.dcm")], capture_output=True, text=True)
            assert [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")] == [], name


def test_a_broken_enhanced_mr_is_refused_in_one_line(forms, tmp_path):
    """No per-frame position (or no pixel spacing): the app's check and volume inference's check refuse it, one line each."""
    from bundle.inference.dicom_input import CheckVolumed
    from bundle.io.errors import InputError
    from bundle.serving.app_inputs import screen_series
    from bundle.serving.series_screening import SeriesError
    from bundle.serving.slices import enhanced_slices
    from bundle.transforms.checks import BadImageError

    mf = pydicom.dcmread(forms["enhanced"])
    del mf.PerFrameFunctionalGroupsSequence[4].PlanePositionSequence
    with pytest.raises(SeriesError) as err:
        enhanced_slices(mf, "S1")
    assert str(err.value) == "series S1: 32 frames without per-frame PlanePositionSequence / PlaneOrientationSequence; not a volume"
    with pytest.raises(InputError) as err:
        screen_series("IN", [mf], "S1")
    assert str(err.value).startswith("IN: series S1: 32 frames without") and "\n" not in str(err.value)
    mf.save_as(tmp_path / "broken.dcm", enforce_file_format=True)
    with pytest.raises(BadImageError, match="frames without per-frame PlanePositionSequence"):
        CheckVolumed("image", 3)({"image": str(tmp_path / "broken.dcm")})

    mf = pydicom.dcmread(forms["enhanced"])
    del mf.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence
    with pytest.raises(SeriesError, match=r"frames lack PixelSpacing \(PixelMeasuresSequence\)"):
        enhanced_slices(mf, "S1")


# --- slow: the five paths agree (inference_volume.yaml in process, the Deploy app in its own venv) ---


def _infer(bundle_root: Path, image: Path, out: Path) -> dict:
    return infer_volume(bundle_root, image, out, device="$torch.device('cpu')", **OVERRIDES)


def _app(deploy_python: Path, folder: Path, model: Path, out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, BUNDLE_OVERRIDES=json.dumps(OVERRIDES))
    env.pop("BUNDLE_DEBUG", None)
    cmd = [str(deploy_python), str(ROOT / "deploy" / "app" / "app.py"), "-i", str(folder), "-o", str(out), "-m", str(model)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)


def _by_score(boxes, scores) -> tuple[np.ndarray, np.ndarray]:
    b, s = np.asarray(boxes, float).reshape(-1, 6), np.asarray(scores, float)
    order = np.argsort(-s, kind="stable")
    return b[order], s[order]


def _sr_world(sr_path: Path, sources: dict[str, pydicom.Dataset]) -> list[dict]:
    """Each SR box in world LPS from the SR alone: its rectangle through the geometry of the image (frame) it references,
    the referenced slices' positions along z, and its certainty."""
    from bundle.serving.dicom_sr import read_sr_boxes
    from bundle.serving.slices import SliceSource

    out = []
    for got in read_sr_boxes(hd.sr.srread(sr_path)):
        planes = [SliceSource(sources[u], f) for u, f in zip(got["sop_instance_uids"], got["frames"])]
        first = planes[0]
        row_sp, col_sp = first.pixel_spacing
        c0, r0, c1, r1 = got["rect"]
        corners = [first.position + (c - 0.5) * col_sp * first.orientation[:3] + (r - 0.5) * row_sp * first.orientation[3:]
                   for c, r in ((c0, r0), (c1, r1))]  # fmt: skip
        lo, hi = np.minimum(*corners), np.maximum(*corners)
        out.append({"xy": [lo[0], lo[1], hi[0], hi[1]], "z": [float(p.position[2]) for p in planes], "certainty": got["score"]})
    return out


@pytest.mark.slow
@pytest.mark.integration
def test_series_and_enhanced_mr_give_the_nifti_boxes_through_inference_and_the_app(forms, served_bundle, tmp_path):
    from scripts.make_venv import make_venv

    deploy_python = make_venv(ROOT / "deploy" / "app" / "requirements.txt", ROOT / ".venv-deploy")
    model = served_bundle / "models" / "model.pt"  # the weights inference_volume.yaml loads (not the TorchScript export)
    preds = {name: _infer(served_bundle, path, tmp_path / f"{name}.json") for name, path in forms.items()}
    runs = {name: _app(deploy_python, folder, model, tmp_path / f"app_{name}") for name, folder in
            (("series", forms["series"]), ("enhanced", forms["enhanced"].parent))}  # fmt: skip
    for name, run in runs.items():
        assert run.returncode == 0, f"{name}: " + (run.stdout + run.stderr)[-4000:]
    summaries = {name: json.loads((tmp_path / f"app_{name}" / "detections.json").read_text()) for name in runs}

    ref_box, ref_score = _by_score(preds["nifti"]["box_world"], preds["nifti"]["score"])
    assert 1 <= len(ref_score) <= 8
    got = {name: (preds[name]["box_world"], preds[name]["score"]) for name in ("series", "enhanced")}
    for name, s in summaries.items():
        got[f"app_{name}"] = ([d["box_world"] for d in s["detections"]], [d["score"] for d in s["detections"]])
    for name, (boxes, scores) in got.items():
        b, sc = _by_score(boxes, scores)
        assert len(sc) == len(ref_score), name
        np.testing.assert_allclose(b, ref_box, atol=1e-3, err_msg=name)  # world LPS cccwhd, mm
        np.testing.assert_allclose(sc, ref_score, rtol=1e-5, atol=1e-5, err_msg=name)  # logits

    # the SRs: each box read back from the SR alone lands on the NIfTI's box, on the slices it covers
    mf = pydicom.dcmread(forms["enhanced"])
    assert summaries["enhanced"]["series_instance_uid"] == mf.SeriesInstanceUID
    assert summaries["enhanced"]["slice_frames"] == list(range(int(mf.NumberOfFrames), 0, -1))
    classic = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(p) for p in forms["series"].iterdir())}
    nifti_aff = nib.load(forms["nifti"]).affine
    ref_vox, _ = _by_score(preds["nifti"]["box"], preds["nifti"]["score"])
    for name, sources in (("series", classic), ("enhanced", {mf.SOPInstanceUID: mf})):
        sr_path = tmp_path / f"app_{name}" / "detections_sr.dcm"
        evidence = pydicom.dcmread(sr_path).CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence
        assert {r.ReferencedSOPInstanceUID for r in evidence} == set(sources), name
        back = _sr_world(sr_path, sources)
        assert len(back) == len(ref_box), name
        ref_xy = np.stack([ref_box[:, 0] - ref_box[:, 3] / 2, ref_box[:, 1] - ref_box[:, 4] / 2,
                           ref_box[:, 0] + ref_box[:, 3] / 2, ref_box[:, 1] + ref_box[:, 4] / 2], axis=1)  # fmt: skip
        matched = [int(np.argmin(np.abs(ref_xy - g["xy"]).max(1))) for g in back]
        assert sorted(matched) == list(range(len(ref_box))), name
        for g, i in zip(back, matched):
            vox, p = ref_vox[i], 1.0 / (1.0 + np.exp(-ref_score[i]))
            np.testing.assert_allclose(g["xy"], ref_xy[i], atol=1e-3, err_msg=name)
            covered = range(int(np.floor(vox[2])), int(np.ceil(vox[5])))  # the NIfTI's slices the box covers (same z axis)
            np.testing.assert_allclose(g["z"], [(nifti_aff @ [0, 0, k, 1])[2] for k in covered], atol=1e-3, err_msg=name)
            assert g["certainty"] == pytest.approx(p, abs=1e-4)  # the SR keeps 4 decimals of the sigmoid
        if name == "enhanced":  # every region names its frame
            from bundle.serving.dicom_sr import read_sr_boxes

            assert all(f is not None for r in read_sr_boxes(hd.sr.srread(sr_path)) for f in r["frames"])


@pytest.mark.slow
@pytest.mark.integration
def test_the_app_refuses_a_broken_enhanced_mr_in_one_line(forms, served_bundle, tmp_path):
    """A broken Enhanced MR through the app: exit 1, one ``error:`` line naming the folder, no traceback."""
    from scripts.make_venv import make_venv

    deploy_python = make_venv(ROOT / "deploy" / "app" / "requirements.txt", ROOT / ".venv-deploy")
    mf = pydicom.dcmread(forms["enhanced"])
    for k in (3, 9):
        del mf.PerFrameFunctionalGroupsSequence[k].PlanePositionSequence
    (tmp_path / "in").mkdir()
    mf.save_as(tmp_path / "in" / "broken.dcm", enforce_file_format=True)
    run = _app(deploy_python, tmp_path / "in", served_bundle / "models", tmp_path / "out")
    assert run.returncode == 1, (run.stdout + run.stderr)[-3000:]
    assert "Traceback" not in run.stdout + run.stderr, run.stderr[-3000:]
    errors = [ln for ln in run.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, run.stderr[-3000:]
    assert errors[0].startswith(
        f"error: {tmp_path / 'in'}: series {mf.SeriesInstanceUID}: 32 frames without per-frame PlanePositionSequence"
    )


def _monailabel_infer(package_dir: Path, image: Path) -> tuple[np.ndarray, np.ndarray]:
    """What MONAI Label's bundle infer task runs on a request; the boxes in world LPS (cccwhd) and their logits, by score."""
    out, _ = package_infer(package_dir, image, **OVERRIDES)
    return _by_score(np.asarray(out["box"]), np.asarray(out["label_scores"]))


@pytest.mark.slow
def test_monailabel_package_gives_the_nifti_boxes_for_the_enhanced_mr(forms, served_bundle, tmp_path):
    """The MONAI Label package (inference.yaml = the volume config, inlined) on the Enhanced MR file and on its
    classic series: the NIfTI's boxes in world LPS and its logits."""
    from bundle.serving.package import package

    pkg = tmp_path / "monailabel" / "brain_mri_tumor_detection"
    package(pkg, root=ROOT, target="monailabel", make_zip=False, models_dir=served_bundle / "models")
    ref_box, ref_score = _monailabel_infer(pkg, forms["nifti"])
    assert 1 <= len(ref_score) <= 8
    for name in ("enhanced", "series"):
        box, score = _monailabel_infer(pkg, forms[name])
        np.testing.assert_allclose(box, ref_box, atol=1e-3, err_msg=name)
        np.testing.assert_allclose(score, ref_score, rtol=1e-5, atol=1e-5, err_msg=name)


def test_a_series_of_several_multiframe_files_is_refused_in_one_line(forms):
    """One acquisition split into two Enhanced MR instances: refused naming the count, not called a grid mismatch."""
    from bundle.io.errors import InputError
    from bundle.serving.app_inputs import screen_series

    first = pydicom.dcmread(forms["enhanced"])
    second = pydicom.dcmread(forms["enhanced"])
    second.SOPInstanceUID = hd.UID()
    with pytest.raises(InputError) as err:
        screen_series("IN", [first, second], "S1")
    assert str(err.value) == "IN: series S1: 2 multi-frame files among 2; one Enhanced MR file per series is read"
