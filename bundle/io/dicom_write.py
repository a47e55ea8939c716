"""Write one DICOM object: the header blocks every writer repeats, and the MR image / MR series writer.

Why: the PACS-export simulator (bundle/demo/) and the Deploy tests (bundle/demo/dicom_series.py) write the same
modules (file meta, SOP common, patient, study, series + equipment, image plane, MR acquisition,
pixels, creation dates). They live here once. No policy: callers pass every value (UIDs, dates,
descriptions, geometry), and a value is written with the type it comes in (``3`` and ``3.0`` are
different DS strings), so a caller's files stay byte-for-byte what it asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage


@dataclass(frozen=True)
class Patient:
    """Patient module: who (a synthetic name and id; the writers never see PHI)."""

    name: str
    patient_id: str
    birth_date: str = ""
    sex: str = "O"


@dataclass(frozen=True)
class Study:
    """General Study module."""

    uid: str
    date: str
    time: str
    study_id: str
    accession: str
    description: str
    referring_physician: str = ""


@dataclass(frozen=True)
class Series:
    """General Series + General Equipment modules; ``date``/``time`` also stamp each image's content date."""

    uid: str
    number: int
    description: str
    date: str
    time: str
    modality: str = "MR"
    body_part: str | None = None  # a known, unpaired body part lets Laterality stay absent
    manufacturer: str | None = None


@dataclass(frozen=True)
class Equipment:
    """General Equipment as highdicom's constructors take it (GSPS requires all four, SR only the manufacturer)."""

    manufacturer: str
    model_name: str | None = None
    software_versions: str | None = None
    device_serial_number: str | None = None

    def highdicom_kwargs(self) -> dict[str, str]:
        """Keyword arguments for highdicom SOP classes; unset fields are left out, not written empty."""
        kw = {
            "manufacturer": self.manufacturer,
            "manufacturer_model_name": self.model_name,
            "software_versions": self.software_versions,
            "device_serial_number": self.device_serial_number,
        }
        return {k: v for k, v in kw.items() if v is not None}


@dataclass(frozen=True)
class ImagePlane:
    """Frame of Reference + Image Plane modules of one slice (LPS mm; pixel spacing is row, column)."""

    position: Sequence[float]
    orientation: Sequence[float]
    pixel_spacing: Sequence[float]
    thickness: float  # also written as SpacingBetweenSlices: the writers make contiguous slices
    slice_location: float
    frame_of_reference_uid: str
    patient_position: str = "HFS"


@dataclass(frozen=True)
class MRAcquisition:
    """MR Image module's acquisition attributes; ``None`` leaves an optional one out."""

    scanning_sequence: str | Sequence[str]
    sequence_variant: str | Sequence[str]
    repetition_time: float
    echo_time: float
    echo_train_length: int = 1
    magnetic_field_strength: float = 3
    inversion_time: float | None = None
    imaged_nucleus: str | None = None
    contrast_agent: str | None = None
    scan_options: str = ""
    acquisition_type: str = "3D"


def file_meta(
    sop_class: str, sop_uid: str, implementation_uid: str | None = None, implementation_name: str | None = None
) -> FileMetaDataset:
    """Explicit VR little endian file meta; without an implementation UID pydicom writes its own on save."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if implementation_uid is not None:
        meta.ImplementationClassUID = implementation_uid
    if implementation_name is not None:
        meta.ImplementationVersionName = implementation_name
    return meta


def new_dataset(sop_class: str, sop_uid: str, meta: FileMetaDataset | None = None, charset: str = "ISO_IR 100") -> Dataset:
    """An empty object with its file meta and the SOP Common module."""
    ds = Dataset()
    ds.file_meta = meta if meta is not None else file_meta(sop_class, sop_uid)
    ds.SpecificCharacterSet = charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    return ds


def set_patient_study(ds: Dataset, patient: Patient, study: Study) -> None:
    """Patient and General Study modules: what every object of one study repeats."""
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.StudyInstanceUID = study.uid
    ds.StudyDate = study.date
    ds.StudyTime = study.time
    ds.StudyID = study.study_id
    ds.AccessionNumber = study.accession
    ds.ReferringPhysicianName = study.referring_physician
    ds.StudyDescription = study.description


def set_series(ds: Dataset, series: Series) -> None:
    """General Series and General Equipment modules."""
    ds.Modality = series.modality
    ds.SeriesInstanceUID = series.uid
    ds.SeriesNumber = series.number
    ds.SeriesDescription = series.description
    ds.SeriesDate = series.date
    ds.SeriesTime = series.time
    if series.body_part is not None:
        ds.BodyPartExamined = series.body_part
    if series.manufacturer is not None:
        ds.Manufacturer = series.manufacturer


def set_plane(ds: Dataset, plane: ImagePlane) -> None:
    """Frame of Reference, patient position and Image Plane modules."""
    ds.PatientPosition = plane.patient_position
    ds.FrameOfReferenceUID = plane.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = list(plane.position)
    ds.ImageOrientationPatient = list(plane.orientation)
    ds.PixelSpacing = list(plane.pixel_spacing)
    ds.SliceThickness = plane.thickness
    ds.SpacingBetweenSlices = plane.thickness
    ds.SliceLocation = plane.slice_location


def set_mr_acquisition(ds: Dataset, acq: MRAcquisition) -> None:
    """MR Image module's acquisition attributes."""
    ds.ScanningSequence = acq.scanning_sequence
    ds.SequenceVariant = acq.sequence_variant
    ds.ScanOptions = acq.scan_options
    ds.MRAcquisitionType = acq.acquisition_type
    ds.RepetitionTime = acq.repetition_time
    ds.EchoTime = acq.echo_time
    if acq.inversion_time is not None:
        ds.InversionTime = acq.inversion_time
    ds.EchoTrainLength = acq.echo_train_length
    ds.MagneticFieldStrength = acq.magnetic_field_strength
    if acq.imaged_nucleus is not None:
        ds.ImagedNucleus = acq.imaged_nucleus
    if acq.contrast_agent is not None:
        ds.ContrastBolusAgent = acq.contrast_agent


def set_pixels(ds: Dataset, pixels: np.ndarray) -> None:
    """Image Pixel module: one 16-bit MONOCHROME2 frame, ``pixels[row, column]``; signedness from the dtype."""
    if pixels.ndim != 2 or pixels.dtype not in (np.int16, np.uint16):
        raise ValueError(f"pixels must be a 2D int16 or uint16 array (rows, columns), got {pixels.dtype} {pixels.shape}")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()


def copy_body_part(ds: Dataset, source: Dataset) -> None:
    """General Series needs Laterality unless the body part is known and unpaired (dciodvfy checks it): take the source's."""
    if "BodyPartExamined" in source:
        ds.BodyPartExamined = source.BodyPartExamined


def set_creation_times(ds: Dataset, date: str, time: str) -> None:
    """highdicom stamps 'now'; a deterministic writer overwrites every creation date/time it set."""
    for key in ("ContentDate", "PresentationCreationDate", "InstanceCreationDate", "SeriesDate"):
        if key in ds:
            setattr(ds, key, date)
    for key in ("ContentTime", "PresentationCreationTime", "InstanceCreationTime", "SeriesTime"):
        if key in ds:
            setattr(ds, key, time)
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = date + time


def image(
    sop_class: str,
    sop_uid: str,
    patient: Patient,
    study: Study,
    series: Series,
    instance_number: int,
    pixels: np.ndarray,
    image_type: Sequence[str],
    meta: FileMetaDataset | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Dataset:
    """One single-frame image without geometry (a secondary capture, or the base of an MR image).

    ``extra``: further attributes, set last (e.g. BurnedInAnnotation, ConversionType).
    """
    ds = new_dataset(sop_class, sop_uid, meta)
    set_patient_study(ds, patient, study)
    set_series(ds, series)
    ds.InstanceNumber = instance_number
    ds.ContentDate = series.date
    ds.ContentTime = series.time
    ds.ImageType = list(image_type)
    set_pixels(ds, pixels)
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    return ds


def mr_image(
    sop_uid: str,
    patient: Patient,
    study: Study,
    series: Series,
    instance_number: int,
    pixels: np.ndarray,
    plane: ImagePlane,
    acquisition: MRAcquisition,
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "OTHER"),
    meta: FileMetaDataset | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Dataset:
    """One MR Image Storage slice: header blocks, plane, acquisition and pixels."""
    ds = image(MRImageStorage, sop_uid, patient, study, series, instance_number, pixels, image_type, meta, extra)
    set_plane(ds, plane)
    set_mr_acquisition(ds, acquisition)
    return ds


def save(ds: Dataset, path: str | Path) -> Path:
    """Write as a DICOM file (preamble + file meta), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_mr_series(
    slices: Sequence[np.ndarray],
    planes: Sequence[ImagePlane],
    paths: Sequence[str | Path],
    sop_uids: Sequence[str],
    patient: Patient,
    study: Study,
    series: Series,
    acquisition: MRAcquisition,
    implementation: tuple[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> list[Dataset]:
    """Write slice k (``slices[k][row, column]``, at ``planes[k]``) as instance k + 1 to ``paths[k]``; returns the datasets.

    implementation: (ImplementationClassUID, ImplementationVersionName) for the file meta; None: pydicom's.
    """
    if not len(slices) == len(planes) == len(paths) == len(sop_uids):
        raise ValueError(
            f"slices, planes, paths and sop_uids differ in length: {len(slices)}, {len(planes)}, {len(paths)}, {len(sop_uids)}"
        )
    impl = implementation or (None, None)
    out = []
    for k, (pixels, plane, path, uid) in enumerate(zip(slices, planes, paths, sop_uids)):
        meta = file_meta(MRImageStorage, uid, *impl)
        ds = mr_image(uid, patient, study, series, k + 1, pixels, plane, acquisition, meta=meta, extra=extra)
        save(ds, path)
        out.append(ds)
    return out
