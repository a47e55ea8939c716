"""Pixels of a plain image without pydicom: what `slice_array(read_dataset(raw))` gives, for the volumes step.

Why: a series volume reads every slice of the series (thousands per export, not just the key slices), and
pydicom's parse, the truncation walk and its pixel pipeline were ~70% of the volumes step. A plain image's
pixels are the last rows x columns x 2 bytes of the file, so they are taken with `numpy.frombuffer` after the
`struct` walk of bundle/mining/header.py.

Deliberately narrow, like the header fast path: Explicit VR Little Endian, one frame, one sample,
MONOCHROME2, 8 or 16 bits with all bits stored (no masking or sign extension to get right), PixelData exactly
ending the file (the truncation check), no overlays or functional groups, a plain one-valued rescale. Anything
else returns None and the object goes through the full pydicom path, so the volume's bytes never depend on the
path (tests/mining/test_mining_volumes.py compares both on every image of the test export).
"""

from __future__ import annotations

import struct

import numpy as np

from bundle.mining.header import EXPLICIT_LE, Unsure, _meta, _text, _walk

TAGS = {
    "SOPClassUID": 0x00080016,
    "SOPInstanceUID": 0x00080018,
    "NumberOfFrames": 0x00280008,
    "SamplesPerPixel": 0x00280002,
    "PhotometricInterpretation": 0x00280004,
    "Rows": 0x00280010,
    "Columns": 0x00280011,
    "BitsAllocated": 0x00280100,
    "BitsStored": 0x00280101,
    "PixelRepresentation": 0x00280103,
    "RescaleIntercept": 0x00281052,
    "RescaleSlope": 0x00281053,
}
PER_FRAME_GROUPS = struct.pack("<HH", 0x5200, 0x9230)  # frame_rescale would look there: any such bytes -> the full path
WANTED = set(TAGS.values())
DTYPES = {(8, 0): "u1", (8, 1): "i1", (16, 0): "<u2", (16, 1): "<i2"}


def _us(v: bytes | None) -> int:
    if v is None or len(v) != 2:
        raise Unsure
    return struct.unpack("<H", v)[0]


def _ds(v: bytes | None) -> float | None:
    """A one-valued DS as pydicom gives it to float(); None when absent or empty."""
    text = _text(v).strip()
    if not text:
        return None
    if "\\" in text:
        raise Unsure
    return float(text)


def _rescale(v: dict[int, bytes]) -> tuple[float, float]:
    """bundle.io.frames.frame_rescale for an image without functional groups."""
    slope, intercept = _ds(v.get(TAGS["RescaleSlope"])), _ds(v.get(TAGS["RescaleIntercept"]))
    return float(slope or 1), float(intercept or 0)


def plain_plane(raw: bytes) -> np.ndarray | None:
    """`bundle.io.nifti.slice_array(read_dataset(raw))`, (x, y), for a plain image; None when the full path must decide."""
    try:
        ts, pos = _meta(raw)
        if ts != EXPLICIT_LE:
            return None
        v: dict[int, bytes] = {}
        pos, length = _walk(raw, pos, len(raw), v, True, WANTED)
        if length is None or pos + length != len(raw) or raw[pos - 8 : pos - 6] not in (b"OW", b"OB"):
            return None
        if not _text(v.get(TAGS["SOPClassUID"])) or not _text(v.get(TAGS["SOPInstanceUID"])) or PER_FRAME_GROUPS in raw[:pos]:
            return None
        if _text(v.get(TAGS["PhotometricInterpretation"])) != "MONOCHROME2" or _us(v.get(TAGS["SamplesPerPixel"])) != 1:
            return None
        frames = _text(v.get(TAGS["NumberOfFrames"])).strip()
        bits, stored = _us(v.get(TAGS["BitsAllocated"])), _us(v.get(TAGS["BitsStored"]))
        dtype = DTYPES.get((bits, _us(v.get(TAGS["PixelRepresentation"]))))
        rows, cols = _us(v.get(TAGS["Rows"])), _us(v.get(TAGS["Columns"]))
        if frames not in ("", "1") or dtype is None or stored != bits or rows * cols * bits // 8 != length or not rows * cols:
            return None
        slope, intercept = _rescale(v)
    except (Unsure, struct.error, UnicodeDecodeError, ValueError):
        return None
    arr = np.frombuffer(raw, dtype=dtype, count=rows * cols, offset=pos).reshape(rows, cols)
    arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)
    if slope != 1 or intercept != 0:  # as slice_array: Modality LUT only when it is not identity
        arr = arr.astype(np.float32) * slope + intercept
    return np.ascontiguousarray(arr.T)
