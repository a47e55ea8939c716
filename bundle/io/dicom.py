"""Reading one object safely: classify it, detect truncation, summarise image headers.

Why: a PACS export holds anything; one broken file must be reported with its reason, never raise
through the pool and take the good files down.
"""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.filereader import data_element_generator

from bundle.io.frames import acquisition_attributes, frame_planes
from bundle.io.records import ImageInfo

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


def _check_complete(raw: bytes) -> None:
    """pydicom reads truncated files silently; walk the raw elements and demand every declared length."""
    fp = io.BytesIO(raw)
    try:
        pydicom.filereader.read_preamble(fp, force=False)
        pydicom.filereader._read_file_meta_info(fp)
        for elem in data_element_generator(fp, is_implicit_VR=False, is_little_endian=True, defer_size=None):
            if elem.length != 0xFFFFFFFF and elem.value is not None and len(elem.value) < elem.length:
                raise UnreadableError("corrupt", f"element {elem.tag} declares {elem.length} bytes, file has {len(elem.value)}")
    except UnreadableError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure of the raw stream means damage
        raise UnreadableError("corrupt", f"{type(exc).__name__}: {exc}") from exc


def read_dataset(data: bytes | str | Path, stop_before_pixels: bool = False) -> pydicom.Dataset:
    """Parse a DICOM Part 10 object or raise UnreadableError('not_dicom' | 'corrupt', why)."""
    raw = Path(data).read_bytes() if not isinstance(data, bytes | bytearray) else bytes(data)
    if len(raw) < 132 or raw[128:132] != b"DICM":
        raise UnreadableError("not_dicom", "no DICM prefix at byte 128")
    try:
        ds = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise UnreadableError("corrupt", f"{type(exc).__name__}: {exc}") from exc
    if ds.file_meta.get("TransferSyntaxUID") == pydicom.uid.ExplicitVRLittleEndian:
        _check_complete(raw)
    if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
        raise UnreadableError("corrupt", "missing SOPClassUID/SOPInstanceUID")
    return ds


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
