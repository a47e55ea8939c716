"""Header-only fast path for plain images: the raw header bytes -> `ImageInfo`, no pydicom `Dataset`, no pixels read.

Why: mining needs a dozen header fields from each of thousands of images; pydicom parses and converts every
element and the truncation check walks the file a second time, which made mining ~1,000 objects/s and read the
whole pixel data from disk. This walks Explicit VR Little Endian elements with `struct` up to PixelData, checks
that PixelData's declared length ends exactly at the end of the file (the truncation check without reading it)
and converts only the fields `image_info` uses, exactly as pydicom would.

It is deliberately narrow: anything it is not sure about (another transfer syntax, overlays, enhanced
multi-frame, a character set other than ASCII-compatible, an empty or odd value, a short file, trailing
elements) returns None and the object goes through the full pydicom path (`bundle/mining/inspect.py`), so the
output never depends on which path read an object (tests/mining/test_mining_shard.py compares both on every file).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from bundle.io.dicom import GSPS_CLASSES, SR_CLASSES
from bundle.io.records import ImageInfo

EXPLICIT_LE = "1.2.840.10008.1.2.1"
# transfer syntaxes whose data set is explicit VR little endian (not implicit, big endian or deflated)
EXPLICIT_HEADERS = (
    {EXPLICIT_LE} | {f"1.2.840.10008.1.2.4.{n}" for n in (50, 51, 57, 70, 80, 81, 90, 91, 201, 202, 203)} | {"1.2.840.10008.1.2.5"}
)
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
PIXEL_DATA = 0x7FE00010
UNDEFINED = 0xFFFFFFFF
ASCII_SETS = {"", "ISO_IR 6", "ISO_IR 100", "ISO_IR 192"}  # all ASCII-compatible: ASCII bytes decode the same
T = {  # the fields image_info reads (group << 16 | element)
    "SpecificCharacterSet": 0x00080005,
    "ImageType": 0x00080008,
    "SOPClassUID": 0x00080016,
    "SOPInstanceUID": 0x00080018,
    "StudyDate": 0x00080020,
    "Modality": 0x00080060,
    "SeriesDescription": 0x0008103E,
    "PatientID": 0x00100020,
    "SliceThickness": 0x00180050,
    "ContrastBolusAgent": 0x00180010,
    "ScanningSequence": 0x00180020,
    "MRAcquisitionType": 0x00180023,
    "SequenceName": 0x00180024,
    "ProtocolName": 0x00181030,
    "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E,
    "InstanceNumber": 0x00200013,
    "ImagePositionPatient": 0x00200032,
    "ImageOrientationPatient": 0x00200037,
    "FrameOfReferenceUID": 0x00200052,
    "NumberOfFrames": 0x00280008,
    "Rows": 0x00280010,
    "Columns": 0x00280011,
    "PixelSpacing": 0x00280030,
    "BitsAllocated": 0x00280100,
}
WANTED = set(T.values())
# what bundle.io.frames.acquisition_attributes may read from elsewhere: the full path decides
DECLINE = {0x00180012, 0x00189005, 0x00189008}  # ContrastBolusAgentSequence, PulseSequenceName, EchoPulseSequence
HEAD = 4096  # headers of ordinary images are 1-2 KiB; longer ones are read again with BIG_HEAD
BIG_HEAD = 65536


class Unsure(Exception):
    """The fast path declines this object; the full pydicom path reads it."""


def _walk(
    buf: bytes, pos: int, end: int, out: dict[int, bytes] | None, stop_at_pixels: bool, wanted: set[int] = WANTED
) -> tuple[int, int | None]:
    """Walk explicit-VR-LE elements in buf[pos:end]; keep wanted top-level values. Returns (pos, PixelData length)."""
    while pos < end:
        if pos + 8 > end:
            raise Unsure
        group, elem = struct.unpack_from("<HH", buf, pos)
        tag = group << 16 | elem
        if tag == 0xFFFEE00D:  # item delimiter (inside an undefined-length item)
            return pos + 8, None
        vr = buf[pos + 4 : pos + 6]
        if vr in LONG_VRS:
            if pos + 12 > end:
                raise Unsure
            length = struct.unpack_from("<I", buf, pos + 8)[0]
            pos += 12
        else:
            if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
                raise Unsure
            length = struct.unpack_from("<H", buf, pos + 6)[0]
            pos += 8
        if tag == PIXEL_DATA and stop_at_pixels:
            return pos, length
        if group & 0xFF01 == 0x6000 or tag == 0x52009229 or tag in DECLINE:  # overlays, enhanced multi-frame: the full path
            raise Unsure
        if length == UNDEFINED:
            if vr != b"SQ":
                raise Unsure
            pos = _skip_sequence(buf, pos, end)
            continue
        if pos + length > end:
            raise Unsure
        if out is not None and tag in wanted:
            out[tag] = buf[pos : pos + length]
        pos += length
    return pos, None


def _skip_sequence(buf: bytes, pos: int, end: int) -> int:
    """Past an undefined-length sequence: items of defined or undefined length up to the sequence delimiter."""
    while True:
        if pos + 8 > end:
            raise Unsure
        tag, length = struct.unpack_from("<I", buf, pos)[0], struct.unpack_from("<I", buf, pos + 4)[0]
        tag = (tag & 0xFFFF) << 16 | tag >> 16
        pos += 8
        if tag == 0xFFFEE0DD:
            return pos
        if tag != 0xFFFEE000:
            raise Unsure
        if length == UNDEFINED:
            pos, _ = _walk(buf, pos, end, None, False)
        elif pos + length > end:
            raise Unsure
        else:
            pos += length


def _text(v: bytes | None) -> str:
    if v is None:
        return ""
    if max(v, default=0) > 127:
        raise Unsure
    s = v.decode("ascii").rstrip("\0 ")
    if s != s.lstrip() or "\\" in s:
        raise Unsure
    return s


def _multi(v: bytes | None, n: int | None = None) -> list[str] | None:
    """Multi-valued string: None when absent or empty; Unsure when odd (pydicom would give a non-list)."""
    if v is None or not v.rstrip(b"\0 "):
        return None
    if max(v) > 127:
        raise Unsure
    items = v.decode("ascii").rstrip(" \x00").split("\\")
    if len(items) < 2 or (n is not None and len(items) != n) or any(i != i.strip() or not i for i in items):
        raise Unsure
    return items


def _number(v: bytes | None, kind: type) -> float | int | None:
    s = _text(v) if v is not None else ""
    if not s:
        return None
    try:
        return kind(s)
    except ValueError:
        raise Unsure from None


def _us(v: bytes | None) -> int:
    if v is None or len(v) != 2:
        raise Unsure
    return struct.unpack("<H", v)[0]


def _meta(buf: bytes) -> tuple[str, int]:
    """(transfer syntax, offset of the data set) from the file meta group; Unsure when it is not there."""
    if len(buf) < 144 or buf[128:132] != b"DICM":
        raise Unsure
    meta: dict[int, bytes] = {}
    pos = 132
    while pos + 8 <= len(buf) and struct.unpack_from("<H", buf, pos)[0] == 0x0002:
        elem = struct.unpack_from("<H", buf, pos + 2)[0]
        vr = buf[pos + 4 : pos + 6]
        if vr in LONG_VRS:
            length, pos = struct.unpack_from("<I", buf, pos + 8)[0], pos + 12
        else:
            length, pos = struct.unpack_from("<H", buf, pos + 6)[0], pos + 8
        if length == UNDEFINED or pos + length > len(buf):
            raise Unsure
        meta[elem] = buf[pos : pos + length]
        pos += length
    return _text(meta.get(0x0010)), pos


def parse_head(buf: bytes, size: int) -> dict[int, bytes]:
    """Wanted values of a complete, plain Explicit VR LE image whose PixelData ends the file; raises Unsure otherwise."""
    ts, pos = _meta(buf)
    if ts != EXPLICIT_LE:
        raise Unsure
    out: dict[int, bytes] = {}
    pos, pix = _walk(buf, pos, len(buf), out, True)
    if pix is None or pix == UNDEFINED or pos + pix != size:
        raise Unsure  # no pixels, encapsulated, truncated or trailing data: the full path decides
    return out


def info_from_head(v: dict[int, bytes], location: str) -> ImageInfo:
    """`bundle.io.dicom.image_info` on the raw values, field for field; Unsure where the result could differ."""
    if _text(v.get(T["SpecificCharacterSet"])) not in ASCII_SETS:
        raise Unsure
    sop_class, sop = _text(v.get(T["SOPClassUID"])), _text(v.get(T["SOPInstanceUID"]))
    if not sop_class or not sop or sop_class in GSPS_CLASSES | SR_CLASSES or T["BitsAllocated"] not in v:
        raise Unsure
    ps = _multi(v.get(T["PixelSpacing"]), 2)
    spacing = None
    if ps is not None:
        p = [float(x) for x in ps]
        spacing = [p[1], p[0]] if p[0] > 0 and p[1] > 0 else None
    iop, ipp = _multi(v.get(T["ImageOrientationPatient"]), 6), _multi(v.get(T["ImagePositionPatient"]), 3)
    image_type = _multi(v.get(T["ImageType"]))
    return ImageInfo(
        sop_instance_uid=sop,
        sop_class_uid=sop_class,
        series_uid=_text(v.get(T["SeriesInstanceUID"])),
        study_uid=_text(v.get(T["StudyInstanceUID"])),
        patient_id=_text(v.get(T["PatientID"])),
        modality=_text(v.get(T["Modality"])),
        series_description=_text(v.get(T["SeriesDescription"])),
        image_type=image_type or [],
        rows=_us(v.get(T["Rows"])),
        columns=_us(v.get(T["Columns"])),
        frames=int(_number(v.get(T["NumberOfFrames"]), int) or 1),
        spacing=spacing,
        orientation=[float(x) for x in iop] if iop is not None else None,
        position=[float(x) for x in ipp] if ipp is not None else None,
        slice_thickness=_number(v.get(T["SliceThickness"]), float),
        frame_of_reference_uid=_text(v.get(T["FrameOfReferenceUID"])),
        study_date=_text(v.get(T["StudyDate"])),
        instance_number=int(_number(v.get(T["InstanceNumber"]), int) or 0),
        location=location,
        protocol_name=_text(v.get(T["ProtocolName"])),
        sequence_name=_text(v.get(T["SequenceName"])),
        scanning_sequence=_scanning(v.get(T["ScanningSequence"])),
        acquisition_type=_text(v.get(T["MRAcquisitionType"])),
        contrast_agent=_text(v.get(T["ContrastBolusAgent"])),
    )


def _scanning(v: bytes | None) -> list[str]:
    """ScanningSequence as acquisition_attributes gives it: one value or several, always a list."""
    if v is None or not v.rstrip(b"\0 "):
        return []
    if b"\\" in v:
        return _multi(v) or []
    return [_text(v)]


def read_head(path: Path, n: int = HEAD) -> tuple[bytes, int]:
    """The first `n` bytes of a file and its size. Read-ahead is switched off for the file: on a cold cache the
    kernel would otherwise read 128 KiB of pixel data after each header that mining never looks at."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        return os.pread(fd, n, 0), size
    finally:
        os.close(fd)


def fast_image_info(head: bytes, size: int, location: str) -> ImageInfo | None:
    """ImageInfo from the header bytes, or None when the full path must read the object."""
    try:
        return info_from_head(parse_head(head, size), location)
    except (Unsure, struct.error, UnicodeDecodeError, ValueError):
        return None


def study_key(head: bytes) -> str | None:
    """StudyInstanceUID of a DICOM object from its first bytes (sharding by study), None if not found there."""
    out: dict[int, bytes] = {}
    try:
        ts, pos = _meta(head)
        if ts not in EXPLICIT_HEADERS:
            return None
        _walk(head, pos, len(head), out, True)
    except (Unsure, struct.error, UnicodeDecodeError):
        pass  # the walk keeps what it read before it stopped
    try:
        return _text(out.get(T["StudyInstanceUID"])) or None
    except (Unsure, UnicodeDecodeError):
        return None
