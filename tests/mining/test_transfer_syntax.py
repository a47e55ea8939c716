"""Mining reads every transfer syntax a clinical archive sends: same boxes, same pixels (exact when lossless).

The tiny demo's simulated PACS export is re-encoded as archives store it: with dcmtk's real encoders
(dcmcjpeg, dcmcjpls, dcmcrle, dcmconv) and, where dcmtk has none (JPEG 2000), pydicom's encoders
(pylibjpeg-openjpeg). Only the referenced MR images and a few others are re-encoded, which is what
the mined datalist depends on; for the uncompressed syntaxes (implicit, big endian, deflated) the
GSPS/SR objects are re-encoded too.

Lossy tolerance (stated once, here and in docs/mining.md): each slice is scaled to [0, 1] by its own
min and max (dcmtk's 8-bit baseline rescales the values), then mean |difference| <= 0.02 and
max |difference| <= 0.10; JPEG-LS near-lossless is checked against its own bound (NEAR = 2: |diff| <= 2).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom import uid as U

from bundle.io.dicom import UnreadableError, read_dataset
from bundle.mining.pipeline import Miner
from bundle.pacs.folder import FolderSource

pytestmark = pytest.mark.skipif(not shutil.which("dcmcjpeg"), reason="dcmtk (dcmcjpeg, dcmcjpls, dcmcrle, dcmconv) must be installed")

# name: (expected transfer syntax, encoder, lossless)
SYNTAXES = {
    "implicit_vr_le": (U.ImplicitVRLittleEndian, ["dcmconv", "+ti"], True),
    "explicit_vr_be": (U.ExplicitVRBigEndian, ["dcmconv", "+tb"], True),
    "deflated": (U.DeflatedExplicitVRLittleEndian, ["dcmconv", "+td"], True),
    "jpeg_baseline": (U.JPEGBaseline8Bit, ["dcmcjpeg", "+eb", "+un"], False),
    "jpeg_extended": (U.JPEGExtended12Bit, ["dcmcjpeg", "+ee", "+un"], False),
    "jpeg_lossless_14": (U.JPEGLossless, ["dcmcjpeg", "+el"], True),
    "jpeg_lossless_14_sv1": (U.JPEGLosslessSV1, ["dcmcjpeg", "+e1"], True),
    "jpeg_ls_lossless": (U.JPEGLSLossless, ["dcmcjpls", "+el"], True),
    "jpeg_ls_near_lossless": (U.JPEGLSNearLossless, ["dcmcjpls", "+en", "+un"], False),
    "jpeg2000_lossless": (U.JPEG2000Lossless, ["pydicom", U.JPEG2000Lossless], True),
    "jpeg2000_lossy": (U.JPEG2000, ["pydicom", U.JPEG2000], False),
    "rle_lossless": (U.RLELossless, ["dcmcrle"], True),
}


def _encode(src: Path, dst: Path, encoder: list) -> None:
    """Re-encode one file with the real tool (dcmtk) or pydicom's encoder where dcmtk has none."""
    if encoder[0] == "pydicom":
        ds = pydicom.dcmread(src)
        lossy = {"j2k_cr": [5]} if encoder[1] == U.JPEG2000 else {}
        ds.compress(encoder[1], generate_instance_uid=False, **lossy)  # an archive keeps the UID, as dcmtk +un does
        ds.save_as(dst, enforce_file_format=True)
        return
    if encoder[:2] == ["dcmcjpls", "+en"]:
        # dcmtk refuses near-lossless on signed pixels; the demo's MR values are >= 0, so declaring them
        # unsigned (dcmodify) keeps every value and lets the real encoder run
        tmp = dst.with_suffix(".unsigned")
        shutil.copy(src, tmp)
        subprocess.run(["dcmodify", "-nb", "-m", "(0028,0103)=0", str(tmp)], check=True, capture_output=True)
        subprocess.run([*encoder, str(tmp), str(dst)], check=True, capture_output=True)
        tmp.unlink()
        return
    subprocess.run([*encoder, str(src), str(dst)], check=True, capture_output=True)


def _mine(dicom_dir: Path, out: Path) -> dict:
    result = Miner(str(out), FolderSource(dicom_dir), workers=1, progress=False).run()
    return result


@pytest.fixture(scope="module")
def reference(pacs_export, tmp_path_factory):
    """The uncompressed export mined once; the files to re-encode (referenced images plus a few others)."""
    out = tmp_path_factory.mktemp("ts_ref")
    root = pacs_export / "dicom"
    result = _mine(root, out / "mined")
    by_sop = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            ds = read_dataset(path, stop_before_pixels=True)
        except UnreadableError:  # the export holds deliberately broken files: left as they are
            continue
        by_sop[str(ds.SOPInstanceUID)] = (path, ds)
    items = [it for v in result["datalist"].values() for it in v]
    images = {by_sop[it["sop_instance_uid"]][0] for it in items}
    others = sorted({p for p, ds in by_sop.values() if "Rows" in ds and str(ds.Modality) == "MR"} - images)[:2]
    annotations = sorted(p for p, ds in by_sop.values() if str(ds.Modality) in ("PR", "SR"))
    assert len(items) >= 5, "the tiny export should give several datalist images"
    return {"root": root, "result": result, "mined": out / "mined", "images": sorted(images) + others, "annotations": annotations}


def _lossy_close(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    def unit(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        return (x - x.min()) / max(float(x.max() - x.min()), 1e-9)

    d = np.abs(unit(a) - unit(b))
    return float(d.mean()), float(d.max())


@pytest.mark.parametrize("name", list(SYNTAXES))
def test_mining_gives_the_same_boxes_and_pixels_in_every_transfer_syntax(name, reference, tmp_path):
    syntax, encoder, lossless = SYNTAXES[name]
    root = tmp_path / "dicom"
    shutil.copytree(reference["root"], root)
    targets = reference["images"] + (reference["annotations"] if encoder[0] == "dcmconv" else [])
    for src in targets:
        dst = root / src.relative_to(reference["root"])
        enc = tmp_path / "enc.dcm"
        _encode(src, enc, encoder)
        assert pydicom.dcmread(enc, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
        shutil.move(enc, dst)

    result = _mine(root, tmp_path / "mined")
    ref = reference["result"]
    assert json.dumps(result["datalist"], sort_keys=True, default=str) == json.dumps(ref["datalist"], sort_keys=True, default=str)
    assert result["report"]["exclusions"] == ref["report"]["exclusions"]
    assert result["report"]["counts"] == ref["report"]["counts"]

    for it in [it for v in ref["datalist"].values() for it in v]:
        want = nib.load(reference["mined"] / it["image"])
        got = nib.load(tmp_path / "mined" / it["image"])
        np.testing.assert_array_equal(got.affine, want.affine)
        a, b = np.asarray(got.dataobj), np.asarray(want.dataobj)
        assert a.shape == b.shape
        if lossless:
            np.testing.assert_array_equal(a, b, err_msg=f"{name}: lossless syntax changed pixels of {it['image']}")
        elif syntax == U.JPEGLSNearLossless:
            assert np.abs(a.astype(np.int32) - b.astype(np.int32)).max() <= 2
        else:
            mean, worst = _lossy_close(a, b)
            assert mean <= 0.02 and worst <= 0.10, f"{name}: {it['image']} mean {mean:.4f} max {worst:.4f}"


def test_deidentification_keeps_every_transfer_syntax_and_its_pixels(reference, tmp_path):
    """One image per syntax through de-identification: written in its own syntax, decoded pixels unchanged."""
    from bundle.deid.deidentify import deidentify_folder
    from bundle.deid.keying import Keyed, load_key

    src, inp = reference["images"][0], tmp_path / "in"
    inp.mkdir()
    sops = {}
    for name, (_, encoder, _) in SYNTAXES.items():
        ds = pydicom.dcmread(src)
        ds.SOPInstanceUID = sops[name] = pydicom.uid.generate_uid()  # one instance per syntax
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(tmp_path / "plain.dcm", enforce_file_format=True)
        _encode(tmp_path / "plain.dcm", inp / name, encoder)
    key = b"transfer-syntax-test-key-0123456789"
    report = deidentify_folder(inp, tmp_path / "out", key, workers=1)
    assert report["files_written"] == len(SYNTAXES) and report["files_failed"] == 0
    keyed = Keyed(load_key(key))
    for name, (syntax, _, _) in SYNTAXES.items():
        (out,) = (tmp_path / "out").rglob(f"{keyed.uid(sops[name])}.dcm")
        got, want = pydicom.dcmread(out), pydicom.dcmread(inp / name)
        assert got.file_meta.TransferSyntaxUID == syntax, name
        np.testing.assert_array_equal(got.pixel_array, want.pixel_array, err_msg=name)


def test_a_syntax_without_a_decoder_is_one_clear_reason(reference):
    """MPEG-2 video (no installed plugin decodes it) is named, not a traceback."""
    from bundle.io.pixels import decode_frame

    ds = pydicom.dcmread(reference["images"][0])
    ds.file_meta.TransferSyntaxUID = U.MPEG2MPML
    with pytest.raises(UnreadableError) as err:
        decode_frame(ds)
    assert err.value.reason == "unsupported_transfer_syntax" and "MPEG2" in err.value.detail and "\n" not in err.value.detail
