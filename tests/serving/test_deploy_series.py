"""The Deploy app's series loading: a damaged slice is skipped and reported; a series that cannot form a volume is refused in one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from pathlib import Path

import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames

from bundle.demo.dicom_series import write_mr_series
from bundle.serving.series_screening import SeriesError, screen_slices

pytestmark = pytest.mark.skipif(not shutil.which("dcmcjpeg"), reason="dcmtk must be installed")


def _damage(path: Path) -> None:
    """Compressed (dcmtk's JPEG lossless SV1 unless it already is), then the frame cut in half (a broken transfer)."""
    if not pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID.is_compressed:
        subprocess.run(["dcmcjpeg", "+e1", str(path), str(path) + ".j"], check=True, capture_output=True)
        shutil.move(str(path) + ".j", path)
    ds = pydicom.dcmread(path)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) // 2]])
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture
def series(tiny_demo, tmp_path) -> list[Path]:
    paths = write_mr_series(tiny_demo / "demo-000" / "t1c.nii.gz", tmp_path / "series")
    for p in paths[1:4]:  # the others stay uncompressed: a series may mix transfer syntaxes
        subprocess.run(["dcmcjpls", str(p), str(p) + ".ls"], check=True, capture_output=True)
        shutil.move(str(p) + ".ls", p)
    return paths


def test_a_damaged_slice_is_skipped_with_its_reason(series):
    _damage(series[5])
    keep, skipped = screen_slices([pydicom.dcmread(p) for p in series], "S1")
    assert keep == [i for i in range(len(series)) if i != 5]
    assert [(s.sop_instance_uid, s.reason) for s in skipped] == [(str(pydicom.dcmread(series[5]).SOPInstanceUID), "undecodable_pixels")]
    assert "EOI" in skipped[0].detail


def test_a_slice_off_the_grid_is_skipped_and_a_series_without_a_volume_is_refused_in_one_line(series):
    dss = [pydicom.dcmread(p) for p in series]
    dss[2].PixelSpacing = [9.0, 9.0]
    keep, skipped = screen_slices(dss, "S1")
    assert 2 not in keep and [s.reason for s in skipped] == ["grid_mismatch"]

    for p in series[1:]:
        _damage(p)
    with pytest.raises(SeriesError) as err:
        screen_slices([pydicom.dcmread(p) for p in series], "S1")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("series S1: cannot form a volume: 1 of") and "undecodable_pixels" in msg


@pytest.mark.slow
def test_the_app_operator_builds_the_volume_without_the_damaged_slice(series, repo_root, tmp_path):
    """The app's own operator (the SDK's DICOM -> volume after screening), in the app's venv."""
    deploy_python = repo_root / ".venv-deploy" / "bin" / "python"
    if not deploy_python.exists():
        pytest.skip("the app's venv (.venv-deploy) is built by tests/serving/test_deploy.py (scripts/make_venv.py)")
    _damage(series[5])
    probe = tmp_path / "probe.py"
    probe.write_text(
        textwrap.dedent(
            f"""
            import json, sys, pydicom
            sys.path.insert(0, {str(repo_root / "deploy" / "app")!r})
            import app
            from monai.deploy.core.domain.dicom_series import DICOMSeries
            dss = [pydicom.dcmread(p) for p in {[str(p) for p in series]!r}]
            s = DICOMSeries(str(dss[0].SeriesInstanceUID))
            for ds in dss:
                s.add_sop_instance(ds)
            op = app.ScreenedSeriesToVolumeOperator.__new__(app.ScreenedSeriesToVolumeOperator)  # no Holoscan fragment needed
            op.prepare_series(s)
            print(json.dumps({{"shape": list(op.generate_voxel_data(s).shape), "skipped": s.skipped_slices}}))
            """
        )
    )
    proc = subprocess.run([str(deploy_python), str(probe)], capture_output=True, text=True, timeout=300, cwd=repo_root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["shape"][0] == len(series) - 1
    assert [s["reason"] for s in out["skipped"]] == ["undecodable_pixels"]
