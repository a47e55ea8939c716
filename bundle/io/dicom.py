"""Reading one object safely: classify it, detect truncation, summarise image headers.

Why: a PACS export holds anything; one broken file must be reported with its reason, never raise
through the pool and take the good files down.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.filereader import data_element_generator

from bundle.io.frames import acquisition_attributes, frame_planes
from bundle.io.records import ImageInfo

DICOMDIR_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
GSPS_CLASSES = {"1.2.840.10008.5.1.4.1.1.11.1"}
SR_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
}


class UnreadableError(Exception):
    """A file that is not DICOM or is damaged; `reason` is a REASONS key."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _check_complete(raw: bytes, implicit_vr: bool, little_endian: bool) -> None:
    """pydicom reads truncated files silently; walk the raw elements and demand every declared length.

    The walk yields two kinds of element. A `RawDataElement` (defined length, or an undefined-length
    value such as encapsulated pixel data) is checked against its declared length. An undefined-length
    sequence comes back already parsed as a `DataElement` with no `length` (pydicom 3): its items were
    read to their delimiters, and a stream that ends inside one raises while it is parsed, so there is
    nothing left to compare. Real Siemens and Philips files hold such sequences; treating the missing
    attribute as damage called every one of them corrupt.
    """
    fp = io.BytesIO(raw)
    try:
        if raw[128:132] == b"DICM":  # a headerless file (no preamble, no meta) is walked from its first byte
            pydicom.filereader.read_preamble(fp, force=False)
            pydicom.filereader._read_file_meta_info(fp)
        for elem in data_element_generator(fp, is_implicit_VR=implicit_vr, is_little_endian=little_endian, defer_size=None):
            if not isinstance(elem, RawDataElement):
                continue  # an undefined-length sequence, parsed whole (truncation inside it raised above)
            if elem.value is None:
                continue
            if elem.length != 0xFFFFFFFF and len(elem.value) < elem.length:
                raise UnreadableError("corrupt", f"element {elem.tag} declares {elem.length} bytes, file has {len(elem.value)}")
            if elem.length == 0xFFFFFFFF:  # encapsulated pixel data: its delimiter item must be there whole
                end = elem.value_tell + len(elem.value)
                delimiter = (b"\xfe\xff\xdd\xe0" if little_endian else b"\xff\xfe\xe0\xdd") + b"\0\0\0\0"
                if raw[end : end + 8] != delimiter:
                    raise UnreadableError("corrupt", f"element {elem.tag} (undefined length) ends without its sequence delimiter")
    except UnreadableError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure of the raw stream means damage
        raise UnreadableError("corrupt", f"{type(exc).__name__}: {exc}") from exc


def _syntax_layout(ds: pydicom.Dataset) -> tuple[bool, bool] | None:
    """(implicit VR, little endian) of the dataset's raw stream; None for deflated streams (no raw walk possible).

    A File Meta transfer syntax that is no transfer syntax (damaged meta) is `corrupt`: nothing after it can be read."""
    uid = pydicom.uid.UID(str(ds.file_meta.get("TransferSyntaxUID", pydicom.uid.ExplicitVRLittleEndian)))
    if not uid.is_transfer_syntax:
        raise UnreadableError("corrupt", f"(0002,0010) TransferSyntaxUID {str(uid)!r} is not a transfer syntax")
    if uid.is_deflated:
        return None
    return uid.is_implicit_VR, uid.is_little_endian


def read_dataset(data: bytes | str | Path, stop_before_pixels: bool = False) -> pydicom.Dataset:
    """Parse a DICOM Part 10 object in any transfer syntax or raise UnreadableError(REASONS key, why).

    Reasons: empty_file, not_dicom, dicomdir (an index, not an object to mine), corrupt (truncated or unparseable),
    missing_sop_uids (a data set but no stored object), invalid_attribute (a value the readers need cannot be interpreted).
    A file without preamble and meta header (written by old or DIMSE-side tools) is read when its first bytes are
    a data element and it holds SOP Class and Instance UIDs; its transfer syntax is the one pydicom found.
    The text elements are decoded with the object's SpecificCharacterSet (pydicom), so names and
    descriptions in ISO_IR 100 / 192 / ISO 2022 arrive as proper str.
    """
    raw = Path(data).read_bytes() if not isinstance(data, bytes | bytearray) else bytes(data)
    if not raw:
        raise UnreadableError("empty_file", "zero-byte file")
    if len(raw) < 132 or raw[128:132] != b"DICM":
        ds = _read_headerless(raw, stop_before_pixels)
    else:
        try:
            ds = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=stop_before_pixels)
        except Exception as exc:  # noqa: BLE001 - InvalidDicomError, EOFError, zlib.error (deflated), ...: all mean damage
            raise UnreadableError("corrupt", f"{type(exc).__name__}: {exc}") from exc
    if str(ds.file_meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_CLASS or "DirectoryRecordSequence" in ds:
        raise UnreadableError("dicomdir", "DICOMDIR (Media Storage Directory): an index of the export, its objects are read on their own")
    layout = _syntax_layout(ds)
    if layout is not None:
        _check_complete(raw, *layout)
    if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
        raise UnreadableError("missing_sop_uids", "no SOPClassUID/SOPInstanceUID: a DICOM data set, but not a stored object")
    bad = invalid_value(ds)
    if bad:
        raise UnreadableError("invalid_attribute", bad)
    if layout == (False, False) and "PixelData" not in ds:
        ds = _as_little_endian(ds)
    return ds


_DATA_START = {b"\x08\x00", b"\x00\x08", b"\x02\x00", b"\x00\x02"}  # group 0008 or 0002, little or big endian
_ENCODINGS = {
    (True, True): pydicom.uid.ImplicitVRLittleEndian,
    (False, True): pydicom.uid.ExplicitVRLittleEndian,
    (False, False): pydicom.uid.ExplicitVRBigEndian,
}


def _read_headerless(raw: bytes, stop_before_pixels: bool) -> pydicom.Dataset:
    """A data set without preamble and File Meta header, or not_dicom. Why: real archives hold such files; they are readable."""
    if raw[:2] not in _DATA_START:
        raise UnreadableError("not_dicom", "no DICM prefix at byte 128")
    try:
        ds = pydicom.dcmread(io.BytesIO(raw), force=True, stop_before_pixels=stop_before_pixels)
    except Exception as exc:  # noqa: BLE001 - whatever it is, it is not a data set we can read
        raise UnreadableError("not_dicom", f"no DICM prefix at byte 128, and no data set from byte 0 ({type(exc).__name__})") from exc
    if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds or ds.original_encoding not in _ENCODINGS:
        raise UnreadableError("not_dicom", "no DICM prefix at byte 128, and no SOP Class/Instance UID in a data set from byte 0")
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = _ENCODINGS[ds.original_encoding]
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


# Numbers the readers and writers compute with: a value pydicom kept as text (it is not a valid IS/DS) stops them.
_NUMERIC_KEYWORDS = (
    "NumberOfFrames", "Rows", "Columns", "BitsAllocated", "BitsStored", "SamplesPerPixel", "PixelRepresentation",
    "PixelSpacing", "SliceThickness", "ImagePositionPatient", "ImageOrientationPatient", "InstanceNumber",
    "RescaleSlope", "RescaleIntercept", "SpacingBetweenSlices",
)  # fmt: skip


def invalid_value(ds: pydicom.Dataset) -> str:
    """'' or one line naming the first attribute whose value cannot be read as its VR's number (e.g. IS '1A')."""
    for keyword in _NUMERIC_KEYWORDS:
        elem = ds.data_element(keyword) if keyword in ds else None
        if elem is None or elem.VR not in ("IS", "DS") or elem.value in (None, ""):
            continue
        values = elem.value if isinstance(elem.value, pydicom.multival.MultiValue | list) else [elem.value]
        if any(isinstance(v, str) for v in values):  # valid IS/DS values are pydicom's int/float types
            return f"{elem.tag} {keyword} {str(elem.value)!r} is not a valid {elem.VR} number"
    return ""


_WORD_VRS = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def _as_little_endian(ds: pydicom.Dataset) -> pydicom.Dataset:
    """A big endian annotation object (GSPS, SR) re-encoded in memory as Explicit VR Little Endian.

    Why: highdicom's SR parsing (and other tools) accept little endian only; values are the same, the
    word-sized binary values (OW, OL, OF, OD, OV) are byte-swapped by hand as pydicom asks.
    """
    for elem in ds.iterall():
        size = _WORD_VRS.get(elem.VR)
        if size and isinstance(elem.value, bytes) and len(elem.value) % size == 0:
            elem.value = np.frombuffer(elem.value, dtype=f">u{size}").astype(f"<u{size}").tobytes()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def image_info(ds: pydicom.Dataset, location: str) -> ImageInfo:
    """Summarise an image header. PixelSpacing is (row, column) in DICOM; we store (column, row)."""
    ps = ds.get("PixelSpacing")
    planes = frame_planes(ds)  # enhanced multi-frame: geometry per frame; the top level falls back to frame 1's
    first = planes[0] if planes else {}
    spacing = [float(ps[1]), float(ps[0])] if ps is not None and len(ps) == 2 and float(ps[0]) > 0 and float(ps[1]) > 0 else None
    iop = ds.get("ImageOrientationPatient")
    ipp = ds.get("ImagePositionPatient")
    return ImageInfo(
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        patient_id=str(ds.get("PatientID", "")),
        modality=str(ds.get("Modality", "")),
        series_description=str(ds.get("SeriesDescription", "")),
        image_type=[str(v) for v in (ds.get("ImageType") or [])],
        rows=int(ds.get("Rows", 0)),
        columns=int(ds.get("Columns", 0)),
        frames=int(ds.get("NumberOfFrames", 1) or 1),
        spacing=spacing or first.get("spacing"),
        orientation=[float(v) for v in iop] if iop is not None else first.get("orientation"),
        position=[float(v) for v in ipp] if ipp is not None else first.get("position"),
        slice_thickness=float(ds.SliceThickness) if ds.get("SliceThickness") not in (None, "") else first.get("slice_thickness"),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
        study_date=str(ds.get("StudyDate", "")),
        instance_number=int(ds.get("InstanceNumber", 0) or 0),
        location=location,
        **acquisition_attributes(ds),
        per_frame=planes,
    )


def is_image(ds: pydicom.Dataset) -> bool:
    return "Rows" in ds and "Columns" in ds and "BitsAllocated" in ds and str(ds.SOPClassUID) not in GSPS_CLASSES | SR_CLASSES
