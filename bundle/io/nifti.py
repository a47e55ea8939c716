"""DICOM image (or DeepLesion PNG) -> the 2D NIfTI slice the trainer reads (the layout of every datalist slice, demo slices included).

Why one code path: mined boxes are in array coordinates of exactly this file. Array axis 0 = DICOM
column (x), axis 1 = row (y), i.e. `pixel_array.T`, so a GSPS point (col, row) is a box corner (x, y).
Stored values are kept as they are (no rescale) when the rescale is identity, so a simulated export
converts back to arrays identical to the demo slices.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

from bundle.io.frames import frame_plane, frame_rescale
from bundle.io.pixels import decode_frame


def slice_array(ds: pydicom.Dataset, frame: int = 1) -> np.ndarray:
    """Pixel data of one frame as (x, y), in any transfer syntax; applies Modality LUT rescale only when it is not identity.

    Raises UnreadableError ('undecodable_pixels' / 'unsupported_transfer_syntax') with a one-line reason.
    """
    arr = decode_frame(ds, frame)
    slope, intercept = frame_rescale(ds, frame)  # enhanced images keep it in the frame's functional groups
    if slope != 1 or intercept != 0:
        arr = arr.astype(np.float32) * slope + intercept
    return np.ascontiguousarray(arr.T)


def slice_affine(spacing: list[float], thickness: float | None, position: list[float] | None) -> np.ndarray:
    """Diagonal affine with the in-plane spacing (what the trainer uses); translation = ImagePositionPatient."""
    aff = np.diag([spacing[0], spacing[1], float(thickness or 1.0), 1.0])
    if position is not None:
        aff[:3, 3] = position
    return aff


def write_dicom_slice(ds: pydicom.Dataset, path: str | Path, spacing: list[float], frame: int = 1) -> Path:
    """Convert one referenced image (frame) to the 2D NIfTI at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ipp = ds.get("ImagePositionPatient")
    thick = ds.get("SliceThickness")
    plane = frame_plane(ds, frame)  # enhanced multi-frame: this frame's position and thickness
    thick = float(thick) if thick not in (None, "") else plane["slice_thickness"]
    aff = slice_affine(spacing, thick, [float(v) for v in ipp] if ipp is not None else plane["position"])
    save_nifti(nib.Nifti1Image(slice_array(ds, frame), aff), path)
    return path


def save_nifti(img: nib.Nifti1Image, path: str | Path) -> Path:
    """Write beside the target, then rename: a killed or failed write never leaves a half file under the final name.

    A ``.nii.gz`` is compressed by ISA-L's gzip (``isal.igzip``, level 1 as nibabel's own default) instead of
    zlib, whose compression was most of the mining command's series-volumes step (docs/mining.md). Header
    mtime 0, so one image always gives the same bytes (merged shards equal a single run byte for byte)."""
    path = Path(path)
    tmp = path.with_name(f".partial-{os.getpid()}-{threading.get_ident()}-{path.name}")
    try:
        if path.name.endswith(".gz"):
            from isal import igzip

            tmp.write_bytes(igzip.compress(img.to_bytes(), compresslevel=1, mtime=0))
        else:
            nib.save(img, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_png_slice(png: bytes | str | Path, path: str | Path, spacing: list[float], thickness: float | None = None) -> Path:
    """DeepLesion key slice PNG (value - 32768 = HU) -> the same 2D NIfTI layout: array (x = column, y = row)."""
    from bundle.io.png import png_hu

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_nifti(nib.Nifti1Image(np.ascontiguousarray(png_hu(png).T), slice_affine(spacing, thickness, None)), path)
    return path
