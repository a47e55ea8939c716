"""A PHI-planted DICOM corpus for the de-identification tests.

Every identifying value here is invented; they are planted on purpose in the places PHI hides in real
exports (top-level tags, nested sequences, GSPS text, SR text and person-name items, private tags,
OtherPatientIDs, UIDs) so the tests can prove none of them leaves the de-identifier.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, SecondaryCaptureImageStorage

ROOT = "1.2.826.0.1.3680043.10.99977"  # planted "hospital" UID root: nothing outside the corpus uses it
PATIENT_NAME = "Hargreaves^Ophelia^Quincy"
PATIENT_ID = "MRN7734221"
OTHER_ID = "OTHMRN5519083"
BIRTH_DATE = "19580317"
ADDRESS = "742 Evergreen Terrace, Springfield"
PHONE = "+1-555-014-7781"
ACCESSION = "ACC99812734"
INSTITUTION = "Saint Quillon Memorial Hospital"
INST_ADDRESS = "99 Bramblewood Avenue, Quillon"
REFERRING = "Thistlewood^Cornelius"
PERFORMING = "Pemberton^Winifred"
OPERATOR = "Okonkwo^Alasdair"
READER = "Radcliffe^Bartholomew"
STUDY_ID = "STU44817"
STATION = "QUILLONMR07"
SERIAL = "SN88112233"

STUDY_UID = f"{ROOT}.1.20240102"
SERIES_UID = f"{ROOT}.2.3001"
FOR_UID = f"{ROOT}.3.4001"
SOP_UIDS = [f"{ROOT}.4.500{i}" for i in range(3)]
BURNED_UID = f"{ROOT}.4.6001"
SC_UID = f"{ROOT}.4.7001"
GSPS_SERIES_UID = f"{ROOT}.2.8001"
GSPS_UID = f"{ROOT}.4.8002"
SR_SERIES_UID = f"{ROOT}.2.9001"
SR_UID = f"{ROOT}.4.9002"
TRACKING_UID = f"{ROOT}.5.1"

# Strings that must not survive anywhere in the output bytes. Name parts are listed one by one
# (a PN is stored as "Hargreaves^Ophelia", a text item may hold "Ophelia Hargreaves").
PLANTED = [
    "Hargreaves",
    "Ophelia",
    "Quincy",
    PATIENT_ID,
    OTHER_ID,
    BIRTH_DATE,
    "Evergreen Terrace",
    "555-014-7781",
    ACCESSION,
    "Quillon",
    "Bramblewood",
    "Thistlewood",
    "Cornelius",
    "Pemberton",
    "Winifred",
    "Okonkwo",
    "Alasdair",
    "Radcliffe",
    "Bartholomew",
    STUDY_ID,
    STATION,
    SERIAL,
    ROOT,
]


def _meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourceApplicationEntityTitle = "QUILLON_PACS"
    return meta


def _patient_study(ds: Dataset) -> None:
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.IssuerOfPatientID = "QUILLON"
    ds.PatientBirthDate = BIRTH_DATE
    ds.PatientSex = "F"
    ds.PatientAge = "065Y"
    ds.PatientWeight = "61"
    ds.PatientAddress = ADDRESS
    ds.PatientTelephoneNumbers = PHONE
    ds.OtherPatientIDs = OTHER_ID
    other = Dataset()
    other.PatientID = OTHER_ID
    other.IssuerOfPatientID = "Quillon County Registry"
    other.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.StudyInstanceUID = STUDY_UID
    ds.StudyDate = "20240102"
    ds.StudyTime = "101500"
    ds.AccessionNumber = ACCESSION
    ds.StudyID = STUDY_ID
    ds.ReferringPhysicianName = REFERRING
    ds.StudyDescription = "MRI brain for Ophelia Hargreaves 555-014-7781"
    ds.InstitutionName = INSTITUTION
    ds.InstitutionAddress = INST_ADDRESS
    ds.StationName = STATION
    ds.DeviceSerialNumber = SERIAL
    ds.Manufacturer = "Synthetic"
    ds.ManufacturerModelName = "Phantom MR"
    ds.SoftwareVersions = "1"
    ds.PerformingPhysicianName = PERFORMING
    ds.OperatorsName = OPERATOR
    request = Dataset()
    request.AccessionNumber = ACCESSION
    request.RequestedProcedureID = "RP" + ACCESSION
    request.ScheduledProcedureStepID = "SPS" + STUDY_ID
    request.RequestedProcedureDescription = "Brain MRI Hargreaves"
    ds.RequestAttributesSequence = Sequence([request])


def mr_slice(index: int, sop_uid: str, *, burned_in: str = "NO") -> Dataset:
    """One 32x32 axial T1 post-contrast MR slice carrying planted PHI, including private tags."""
    ds = Dataset()
    ds.file_meta = _meta(MRImageStorage, sop_uid)
    _patient_study(ds)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "MR"
    ds.SeriesInstanceUID = SERIES_UID
    ds.SeriesNumber = 3
    ds.SeriesDescription = "AX T1 POST GD"
    ds.SeriesDate = "20240102"
    ds.ContentDate = "20240102"
    ds.ContentTime = "102000"
    ds.AcquisitionDateTime = "20240102102000"
    ds.InstanceNumber = index + 1
    ds.FrameOfReferenceUID = FOR_UID
    ds.PositionReferenceIndicator = ""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageComments = f"call {PHONE} re Ophelia"
    ds.BurnedInAnnotation = burned_in
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.EchoTime = "10"
    ds.RepetitionTime = "500"
    ds.EchoTrainLength = "1"
    ds.SliceThickness = "4"
    ds.PixelSpacing = ["1.5", "1.5"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-24, -24, 4.0 * index]
    ds.SliceLocation = 4.0 * index
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 32
    ds.Columns = 32
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    arr = np.zeros((32, 32), dtype=np.int16)
    arr[10:20, 12:22] = 400 + 10 * index
    ds.PixelData = arr.tobytes()
    # private tags: one block with PHI, one block on the safe-list (a numeric acquisition parameter)
    phi_block = ds.private_block(0x0029, "QUILLON PRIVATE", create=True)
    phi_block.add_new(0x10, "LO", PATIENT_NAME.replace("^", " "))
    phi_block.add_new(0x11, "LO", PATIENT_ID)
    safe_block = ds.private_block(0x0031, "SYNTH SAFE", create=True)
    safe_block.add_new(0x10, "DS", "1000")
    return ds


def secondary_capture(sop_uid: str) -> Dataset:
    """A screen capture: the kind of object that usually carries burned-in text."""
    ds = mr_slice(0, sop_uid)
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.SeriesInstanceUID = f"{ROOT}.2.7000"
    return ds


def gsps(images: list[Dataset]) -> Dataset:
    """A GSPS with a ruler (POLYLINE) on the second image and a text object that repeats the patient name."""
    layer = hd.pr.GraphicLayer(layer_name="MEASUREMENTS", order=1, description="rulers by Radcliffe")
    ann = hd.pr.GraphicAnnotation(
        referenced_images=[images[1]],
        graphic_layer=layer,
        graphic_objects=[hd.pr.GraphicObject(graphic_type="POLYLINE", graphic_data=np.array([[12.0, 15.0], [22.0, 15.0]]), units="PIXEL")],
        text_objects=[hd.pr.TextObject(text_value="Ophelia Hargreaves 14 mm", units="PIXEL", anchor_point=(12.0, 13.0))],
    )
    pr = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=images,
        series_instance_uid=GSPS_SERIES_UID,
        series_number=90,
        sop_instance_uid=GSPS_UID,
        instance_number=1,
        manufacturer="Synthetic",
        manufacturer_model_name="Viewer",
        software_versions="1",
        device_serial_number=SERIAL,
        content_label="RULERS",
        content_description="Rulers for Hargreaves",
        graphic_annotations=[ann],
        graphic_layers=[layer],
        institution_name=INSTITUTION,
        institutional_department_name="Quillon Neuroradiology",
        content_creator_name=READER,
    )
    pr.ReferringPhysicianName = REFERRING  # copied from the images by a real viewer
    pr.file_meta.SourceApplicationEntityTitle = "QUILLON_PACS"
    return pr


def sr(images: list[Dataset]) -> Dataset:
    """A TID 1500 measurement report with a SCOORD ruler, the reader's name and free-text items."""
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=READER, organization_name=INSTITUTION),
    )
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.array([[12.0, 15.0], [22.0, 15.0]]),
        source_image=hd.sr.SourceImageForRegion.from_source_image(images[2]),
    )
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=TRACKING_UID, identifier="lesion 1"),
        referenced_region=region,
        finding_type=codes.SCT.Neoplasm,
        measurements=[hd.sr.Measurement(name=codes.SCT.Diameter, value=15.0, unit=codes.UCUM.Millimeter)],
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=observer),
        procedure_reported=codes.LN.MRIOfHead if hasattr(codes.LN, "MRIOfHead") else codes.SCT.ImagingProcedure,
        imaging_measurements=[group],
    )
    doc = hd.sr.Comprehensive3DSR(
        evidence=images,
        content=report,
        series_instance_uid=SR_SERIES_UID,
        series_number=91,
        sop_instance_uid=SR_UID,
        instance_number=1,
        manufacturer="Synthetic",
        institution_name=INSTITUTION,
        institutional_department_name="Quillon Neuroradiology",
        is_complete=True,
        is_final=True,
        is_verified=True,
        verifying_observer_name=READER,
        verifying_organization=INSTITUTION,
    )
    comment = hd.sr.TextContentItem(
        name=codes.DCM.Comment if hasattr(codes.DCM, "Comment") else hd.sr.CodedConcept("121106", "DCM", "Comment"),
        value=f"Discussed with Dr Thistlewood; patient Ophelia Hargreaves {PHONE}, lives at {ADDRESS}",
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    doc.ContentSequence.append(comment)
    doc.ReferringPhysicianName = REFERRING
    doc.file_meta.SourceApplicationEntityTitle = "QUILLON_PACS"
    return doc


def write_corpus(folder: Path) -> dict[str, Path]:
    """Write the whole corpus (file names themselves carry PHI, as real exports sometimes do)."""
    folder = Path(folder)
    (folder / "Hargreaves_Ophelia").mkdir(parents=True, exist_ok=True)
    images = [mr_slice(i, uid) for i, uid in enumerate(SOP_UIDS)]
    paths: dict[str, Path] = {}
    for i, ds in enumerate(images):
        paths[f"mr{i}"] = folder / "Hargreaves_Ophelia" / f"{PATIENT_ID}_mr{i}.dcm"
        ds.save_as(paths[f"mr{i}"], enforce_file_format=True)
    objects = {
        "burned": mr_slice(3, BURNED_UID, burned_in="YES"),
        "sc": secondary_capture(SC_UID),
        "gsps": gsps(images),
        "sr": sr(images),
    }
    for name, ds in objects.items():
        paths[name] = folder / "Hargreaves_Ophelia" / f"{PATIENT_ID}_{name}.dcm"
        ds.save_as(paths[name], enforce_file_format=True)
    paths["corrupt"] = folder / "Hargreaves_Ophelia" / "broken.dcm"
    paths["corrupt"].write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff garbage")
    paths["text"] = folder / "notes.txt"
    paths["text"].write_text("not a DICOM file\n")
    return paths
