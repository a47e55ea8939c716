"""MONAI Deploy path: DICOM series -> app -> SR (TID 1500) + GSPS that dciodvfy accepts and highdicom reads back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from bundle.demo.dicom_series import ras_array_box_to_dicom, write_mr_series
from bundle.serving.dicom_sr import build_gsps, build_sr, long_axis_mm, read_sr_boxes
from bundle.transforms.world import voxel_to_world
from tests.ports import free_port

needs_dciodvfy = pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed (.ci/run installs it)")


def _dciodvfy_errors(path) -> list[str]:
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def _study(tiny_demo, out, patient):
    """The axial T1 post-contrast series to detect on, plus two the selector must skip."""
    study, frame = generate_uid(), generate_uid()
    image = tiny_demo / patient["image"]
    write_mr_series(image, out / "t1c_ax", "AX T1 POST GAD", 1, study_uid=study, frame_of_reference_uid=frame)
    write_mr_series(image, out / "flair_ax", "AX T2 FLAIR", 2, study_uid=study, frame_of_reference_uid=frame)
    write_mr_series(image, out / "t1c_sag", "SAG T1 POST GAD", 3, study_uid=study, frame_of_reference_uid=frame, orientation="sagittal")
    return sorted((pydicom.dcmread(p) for p in (out / "t1c_ax").iterdir()), key=lambda d: float(d.ImagePositionPatient[2]))


@needs_dciodvfy
def test_sr_and_gsps_of_truth_boxes_validate_and_read_back(tiny_demo, tmp_path):
    truth = json.loads((tiny_demo / "truth.json").read_text())
    patient = truth["patients"][0]
    sources = _study(tiny_demo, tmp_path / "in", patient)
    for src in sources[:1]:
        assert _dciodvfy_errors(src.filename) == []
    boxes = np.asarray([ras_array_box_to_dicom(les["box_vox"], patient["shape"]) for les in patient["lesions"]], float)
    scores = np.linspace(0.9, 0.4, len(boxes))
    sr, gsps = build_sr(sources, boxes, scores, "0.2.0"), build_gsps(sources, boxes, scores, "0.2.0")
    sr.save_as(tmp_path / "sr.dcm")
    gsps.save_as(tmp_path / "gsps.dcm")
    assert _dciodvfy_errors(tmp_path / "sr.dcm") == []
    assert _dciodvfy_errors(tmp_path / "gsps.dcm") == []
    uid_to_slice = {d.SOPInstanceUID: k for k, d in enumerate(sources)}
    back = read_sr_boxes(hd.sr.srread(tmp_path / "sr.dcm"))
    assert len(back) == len(boxes)
    for got, box, score, les in zip(back, boxes, scores, patient["lesions"]):
        assert got["rect"] == [box[0], box[1], box[3], box[4]]
        assert [uid_to_slice[u] for u in got["sop_instance_uids"]] == list(range(int(box[2]), int(box[5])))
        assert got["score"] == pytest.approx(score, abs=1e-4)
        # long axis: the longer in-plane side of the truth box, in mm (3 mm pixels in the tiny demo)
        b = les["box_vox"]
        assert got["long_axis_mm"] == pytest.approx(max(b[3] - b[0], b[4] - b[1]) * 3.0)
        assert got["long_axis_mm"] == pytest.approx(long_axis_mm(box, sources[0]))


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """A real Orthanc with the DICOMweb plugin on a loopback port (the STOW-RS target); None if not installed."""
    import time

    import requests

    binary, plugin = shutil.which("Orthanc"), "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
    if binary is None or not os.path.exists(plugin):
        yield None
        return
    base = tmp_path_factory.mktemp("orthanc")
    port = free_port()
    config = {
        "Name": "test", "HttpPort": port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "StorageDirectory": str(base / "db"), "IndexDirectory": str(base / "db"),
        "Plugins": [plugin], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }  # fmt: skip
    (base / "orthanc.json").write_text(json.dumps(config))
    log = open(base / "orthanc.log", "w")
    proc = subprocess.Popen([binary, str(base / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(60):
            try:
                if requests.get(url + "/system", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        else:
            pytest.fail("Orthanc did not start:\n" + (base / "orthanc.log").read_text()[-2000:])
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def deploy_python(repo_root):
    """The app's own venv (.venv-deploy), built on first use by scripts/make_venv.py."""
    from scripts.make_venv import make_venv

    return make_venv(repo_root / "deploy" / "app" / "requirements.txt", repo_root / ".venv-deploy")


@pytest.mark.slow
@pytest.mark.integration
@needs_dciodvfy
def test_deploy_app_on_a_dicom_study(repo_root, deploy_python, served_bundle, tiny_demo, tmp_path, orthanc):
    truth = json.loads((tiny_demo / "truth.json").read_text())
    patient = truth["patients"][0]
    sources = _study(tiny_demo, tmp_path / "in", patient)
    out = tmp_path / "out"
    env = dict(os.environ, BUNDLE_OVERRIDES=json.dumps({"slice_sliding_window": False, "score_threshold": -100.0, "max_boxes": 8}))
    stow = ["--stow-url", orthanc + "/dicom-web"] if orthanc else []
    run = subprocess.run(
        [
            str(deploy_python),
            str(repo_root / "deploy" / "app" / "app.py"),
            "-i",
            str(tmp_path / "in"),
            "-o",
            str(out),
            "-m",
            str(served_bundle / "models"),
            *stow,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    summary = json.loads((out / "detections.json").read_text())
    # the selector took the axial T1 post-contrast series, not the FLAIR or the sagittal one
    assert summary["series_instance_uid"] == sources[0].SeriesInstanceUID
    assert summary["model"].endswith("model.ts")
    dets = summary["detections"]
    assert 1 <= len(dets) <= 8 and summary["counts"]["kept"] == len(dets)
    for name in ("detections_sr.dcm", "detections_gsps.dcm"):
        assert _dciodvfy_errors(out / name) == [], name
    if orthanc:  # STOW-RS delivered both objects to the PACS
        import requests

        stored = {
            requests.get(f"{orthanc}/instances/{i}/simplified-tags", timeout=10).json()["SOPInstanceUID"]
            for i in requests.get(f"{orthanc}/instances", timeout=10).json()
        }
        assert stored == {pydicom.dcmread(out / n).SOPInstanceUID for n in ("detections_sr.dcm", "detections_gsps.dcm")}
        assert summary["stored_to"] == orthanc + "/dicom-web"
    if shutil.which("dcmpschk"):
        chk = subprocess.run(["dcmpschk", str(out / "detections_gsps.dcm")], capture_output=True, text=True)
        assert chk.returncode == 0 and "Test passed" in chk.stdout + chk.stderr
    sr = hd.sr.srread(out / "detections_sr.dcm")
    referenced = {
        i.ReferencedSOPInstanceUID
        for s in sr.CurrentRequestedProcedureEvidenceSequence
        for r in s.ReferencedSeriesSequence
        for i in r.ReferencedSOPSequence
    }
    assert referenced == {d.SOPInstanceUID for d in sources}
    back = read_sr_boxes(sr)
    assert len(back) == len(dets)
    uid_to_slice = {d.SOPInstanceUID: k for k, d in enumerate(sources)}
    affine = nib.load(tiny_demo / patient["image"]).affine
    for got, det in zip(back, dets):
        b = det["box"]
        assert got["rect"] == pytest.approx([b[0], b[1], b[3], b[4]], abs=1e-3)
        assert [uid_to_slice[u] for u in got["sop_instance_uids"]] == list(range(int(np.floor(b[2])), int(np.ceil(b[5]))))
        assert got["score"] == pytest.approx(det["probability"], abs=1e-4)  # the SR's certainty: the logit's sigmoid
        # geometry: the app's world box (from DICOM positions) is the NIfTI world box of the same voxels
        ras_box = ras_array_box_to_dicom(b, patient["shape"])  # the mapping is its own inverse
        np.testing.assert_allclose(det["box_world"], voxel_to_world(ras_box, affine)[0], atol=1e-2)


def test_dicom_series_geometry_matches_the_nifti(tiny_demo, tmp_path):
    """Each written slice's position is the NIfTI world position (LPS) of its first pixel."""
    patient = json.loads((tiny_demo / "truth.json").read_text())["patients"][1]
    nii = nib.load(tiny_demo / patient["image"])
    paths = write_mr_series(tiny_demo / patient["image"], tmp_path)
    nx, ny, nz = nii.shape
    vol = np.asarray(nii.dataobj)
    for k in (0, nz // 2, nz - 1):
        ds = pydicom.dcmread(paths[k])
        ras = nii.affine @ np.array([nx - 1, ny - 1, k, 1.0])
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], [-ras[0], -ras[1], ras[2]], atol=1e-3)
        np.testing.assert_array_equal(ds.pixel_array[2, 5], np.clip(vol[nx - 1 - 5, ny - 1 - 2, k], 0, None))


def test_shared_mr_writer_keeps_sign_and_rejects_non_16_bit(tmp_path):
    """bundle/io/dicom_write.py serves the simulator (int16, signed) and Deploy (uint16): the dtype decides PixelRepresentation."""
    from bundle.io import dicom_write as dw

    patient = dw.Patient("Test^Synthetic", "T-1")
    study = dw.Study(generate_uid(), "20240102", "100000", "1", "ACC1", "test study")
    series = dw.Series(generate_uid(), 7, "AX T1", "20240102", "100000", body_part="HEAD")
    acq = dw.MRAcquisition("GR", "SP", repetition_time=8.0, echo_time=3.0)
    pixels = np.array([[-5, 0, 7], [1, 2, 3]], dtype=np.int16)  # 2 rows, 3 columns
    planes = [dw.ImagePlane([0.0, 0.0, float(k)], [1, 0, 0, 0, 1, 0], [1.0, 2.0], 1.0, float(k), "1.2.3") for k in range(2)]
    paths = [tmp_path / f"{k}.dcm" for k in range(2)]
    dw.write_mr_series(
        [pixels, np.abs(pixels).astype(np.uint16)], planes, paths, [generate_uid(), generate_uid()], patient, study, series, acq
    )
    signed, unsigned = (pydicom.dcmread(p) for p in paths)
    assert signed.PixelRepresentation == 1 and unsigned.PixelRepresentation == 0
    np.testing.assert_array_equal(signed.pixel_array, pixels)
    assert (signed.Rows, signed.Columns, signed.InstanceNumber, unsigned.InstanceNumber) == (2, 3, 1, 2)
    assert signed.BodyPartExamined == "HEAD" and signed.ContentDate == "20240102" and "InversionTime" not in signed
    with pytest.raises(ValueError, match="int16 or uint16"):
        dw.write_mr_series([pixels.astype(float)], planes[:1], paths[:1], [generate_uid()], patient, study, series, acq)
