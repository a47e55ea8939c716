"""Whole-series mining: each mined series becomes one volume, its mined boxes on their key slices."""

from __future__ import annotations

import io
import json

import nibabel as nib
import numpy as np
import pytest

from bundle.io.dicom import read_dataset
from bundle.io.nifti import slice_array
from bundle.io.records import ImageInfo
from bundle.mining.fast_pixels import plain_plane
from bundle.mining.pipeline import Miner
from bundle.mining.volumes import NotAVolume, _in_processes, order_series
from bundle.pacs.folder import FolderSource


def _info(sop: str, z: float, n: int, rows: int = 8, spacing=(1.0, 1.0), frames: int = 1) -> ImageInfo:
    return ImageInfo(
        sop_instance_uid=sop, sop_class_uid="1.2.840.10008.5.1.4.1.1.4", series_uid="s", study_uid="t", patient_id="p",
        modality="MR", series_description="T1 POST", image_type=[], rows=rows, columns=8, frames=frames, spacing=list(spacing),
        orientation=[1, 0, 0, 0, 1, 0], position=[0.0, 0.0, z], slice_thickness=4.0, frame_of_reference_uid="f",
        study_date="20200101", instance_number=n, location=sop,
    )  # fmt: skip


def test_series_is_ordered_along_the_plane_normal_not_by_instance_number():
    infos = [_info("a", 8.0, 1), _info("b", 0.0, 3), _info("c", 4.0, 2)]
    ordered, dz = order_series(infos)
    assert [i.sop_instance_uid for i in ordered] == ["b", "c", "a"]
    assert dz == pytest.approx(4.0)


@pytest.mark.parametrize(
    "infos, why",
    [
        ([_info("a", 0.0, 1), _info("b", 4.0, 2, rows=9)], "differ in size"),
        ([_info("a", 0.0, 1), _info("b", 4.0, 2, spacing=(0.5, 0.5))], "differ in size"),
        ([_info("a", 0.0, 1), _info("b", 4.0, 2), _info("c", 12.0, 3)], "not evenly spaced"),
        ([_info("a", 0.0, 1), _info("b", 0.0, 2)], "not evenly spaced"),
        ([_info("a", 0.0, 1, frames=5)], "multi-frame"),
    ],
)
def test_series_that_do_not_stack_are_refused_with_the_reason(infos, why):
    with pytest.raises(NotAVolume, match=why):
        order_series(infos)


def test_mined_series_volumes_hold_the_key_slices_and_their_boxes(pacs_export, tiny_demo, tmp_path):
    out = tmp_path / "mined"
    result = Miner(str(out), FolderSource(str(pacs_export / "dicom")), progress=False, workers=1).run()
    vols = json.loads((out / "datalist_volumes.json").read_text())
    keys = json.loads((out / "datalist.json").read_text())
    summary = result["report"]["series_volumes"]
    assert summary["not_converted"] == []
    # one volume per mined series, in the same split as its key slices
    for section in ("training", "validation", "test"):
        assert summary["series"][section] == len({it["series_instance_uid"] for it in keys[section]}) == len(vols[section])
    truth = json.loads((tiny_demo / "truth.json").read_text())
    demo_volumes = {p["patient_id"]: np.asarray(nib.load(tiny_demo / p["image"]).dataobj) for p in truth["patients"]}
    n_boxes = 0
    for section in vols:
        for vi in vols[section]:
            vol = np.asarray(nib.load(out / vi["image"]).dataobj)
            # no de-identification here: the patient is the demo patient and the volume is its volume, voxel for voxel
            assert np.array_equal(vol, demo_volumes[vi["patient"]])
            assert len(vi["spacing"]) == 3 and vi["spacing"][2] > 0
            for ki in (k for k in keys[section] if k["series_instance_uid"] == vi["series_instance_uid"]):
                key = np.asarray(nib.load(out / ki["image"]).dataobj)
                z = ki["instance_number"] - 1
                assert np.array_equal(vol[..., z], key)
                for b in ki["box"]:
                    assert [b[0], b[1], z, b[2], b[3], z + 1] in vi["box"]
            assert len(vi["long_mm"]) == len(vi["box"]) == len(vi["label"])
            n_boxes += len(vi["box"])
    assert n_boxes == sum(len(k["box"]) for s in keys.values() for k in s)


def test_volumes_of_a_local_source_are_written_in_worker_processes(pacs_export, tmp_path):
    """Decoding and compressing are CPU-bound: a folder (or DIMSE cache) source gets processes, a network one threads."""
    assert _in_processes(FolderSource(str(pacs_export / "dicom")))

    class Remote:
        kind = "dicomweb"

    assert not _in_processes(Remote())
    one, two = tmp_path / "w1", tmp_path / "w2"
    for out, workers in ((one, 1), (two, 2)):  # in-line and the process pool write the same bytes
        Miner(str(out), FolderSource(str(pacs_export / "dicom")), progress=False, workers=workers, convert=True).run()
    files = sorted(p.relative_to(one) for p in one.rglob("*.nii.gz") if p.parts[len(one.parts)] == "volumes")
    assert files and all((one / f).read_bytes() == (two / f).read_bytes() for f in files)
    assert (one / "datalist_volumes.json").read_bytes() == (two / "datalist_volumes.json").read_bytes()


def _same(plane: np.ndarray, raw: bytes) -> bool:
    ref = slice_array(read_dataset(raw))
    return plane.dtype == ref.dtype and plane.shape == ref.shape and plane.tobytes() == ref.tobytes()


def test_plain_image_pixels_are_the_pydicom_pixels(pacs_export):
    """The volumes step's fast path gives every plain image's slice exactly as pydicom + slice_array do, else None."""
    import pydicom

    files = sorted(p for p in (pacs_export / "dicom").rglob("*") if p.is_file())
    fast = [p for p in files if plain_plane(p.read_bytes()) is not None]
    assert len(fast) > 20 and all(_same(plain_plane(p.read_bytes()), p.read_bytes()) for p in fast)
    ds = pydicom.dcmread(fast[0])

    def variant(**kw) -> bytes:
        d = ds.copy()
        for k, v in kw.items():
            setattr(d, k, v)
        buf = io.BytesIO()
        d.save_as(buf, enforce_file_format=True)
        return buf.getvalue()

    scaled = variant(RescaleSlope="2.5", RescaleIntercept="-3")
    assert plain_plane(scaled).dtype == np.float32 and _same(plain_plane(scaled), scaled)
    for declined in (variant(BitsStored=12), variant(PhotometricInterpretation="MONOCHROME1"), variant(RescaleSlope="1\\2")):
        assert plain_plane(declined) is None  # the full pydicom path decides
    raw = fast[0].read_bytes()
    assert plain_plane(raw[:-2]) is None and plain_plane(raw + b"\0\0") is None  # truncated, trailing bytes


def test_gzip_nifti_writer_gives_nibabels_image_and_the_same_bytes_every_time(tmp_path):
    """save_nifti's ISA-L gzip: a standard .nii.gz nibabel reads back exactly; no mtime, so shards merge byte for byte."""
    import gzip

    from bundle.io.nifti import save_nifti

    rng = np.random.default_rng(0)
    vol = rng.integers(-1000, 3000, size=(31, 27, 5), dtype=np.int16)
    aff = np.diag([0.7, 0.8, 3.0, 1.0])
    aff[:3, 3] = [-10.5, 20.25, 3.0]
    a = save_nifti(nib.Nifti1Image(vol, aff), tmp_path / "a.nii.gz")
    b = save_nifti(nib.Nifti1Image(vol.copy(), aff), tmp_path / "b.nii.gz")
    ref = tmp_path / "ref.nii.gz"
    nib.save(nib.Nifti1Image(vol, aff), ref)
    back = nib.load(a)
    assert np.array_equal(np.asanyarray(back.dataobj), vol) and back.get_data_dtype() == np.int16
    assert np.allclose(back.affine, aff)
    assert a.read_bytes() == b.read_bytes()
    assert gzip.decompress(a.read_bytes()) == gzip.decompress(ref.read_bytes())  # nibabel's own file, compressed otherwise
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["a.nii.gz", "b.nii.gz", "ref.nii.gz"]  # no partial left
