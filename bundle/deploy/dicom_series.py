"""A minimal NIfTI -> MR DICOM series writer, for feeding the Deploy app and PACS tests with demo volumes.

Why: the Deploy app takes DICOM, the demo data is NIfTI. This writes a standard axial series
(rows along patient posterior, columns along patient left: LPS identity orientation), one
MR Image Storage instance per slice, with generated UIDs and a synthetic patient (no PHI).
It is deliberately small: the full PACS-export simulator lives elsewhere (bundle/demo/); this one
only needs to be a valid source for the app, highdicom and dciodvfy.

Geometry: the demo volume is RAS (array axis 0 -> patient right, 1 -> anterior, 2 -> superior).
DICOM column c is array index ``nx - 1 - c`` and row r is ``ny - 1 - r``; slice k stays k.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def ras_array_box_to_dicom(box_xyzxyz: list[float], shape: tuple[int, int, int]) -> list[float]:
    """Array box of the RAS volume -> box in the series' (column, row, slice) array coordinates."""
    x0, y0, z0, x1, y1, z1 = box_xyzxyz
    nx, ny, _ = shape
    return [nx - x1, ny - y1, z0, nx - x0, ny - y0, z1]


def write_mr_series(
    nifti: str | Path,
    out_dir: str | Path,
    series_description: str = "AX T1 POST GAD",
    series_number: int = 1,
    patient_id: str = "DEMO-000",
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    orientation: str = "axial",
) -> list[Path]:
    """Write one DICOM file per slice of an axis-aligned RAS NIfTI volume; returns the paths.

    ``orientation="sagittal"`` writes the same voxels as sagittal slices (for selector tests).
    """
    img = nib.load(str(nifti))
    aff = np.asarray(img.affine, dtype=float)
    if not np.allclose(aff[:3, :3], np.diag(np.diag(aff[:3, :3]))) or np.any(np.diag(aff)[:3] <= 0):
        raise ValueError(f"{nifti}: affine must be diagonal RAS (demo volumes are); got {aff[:3, :3].tolist()}")
    vol = np.asarray(img.dataobj)
    if vol.ndim != 3:
        raise ValueError(f"{nifti}: expected a 3D volume, got shape {vol.shape}")
    vol = np.clip(vol, 0, None).astype(np.uint16)
    sp = np.diag(aff)[:3]
    nx, ny, nz = vol.shape
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    for_uid = frame_of_reference_uid or generate_uid()
    now = datetime.datetime(2024, 1, 2, 10, 0, 0)
    if orientation == "axial":
        # pixel[r, c] = vol[nx-1-c, ny-1-r, k]
        slices = [np.ascontiguousarray(vol[::-1, ::-1, k].T) for k in range(nz)]
        iop = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        spacing = [float(sp[1]), float(sp[0])]  # row spacing, column spacing
        thickness = float(sp[2])
        positions = [(RAS_TO_LPS @ aff @ np.array([nx - 1, ny - 1, k, 1.0]))[:3] for k in range(nz)]
    elif orientation == "sagittal":
        # rows along -z (superior to inferior), columns along posterior (-y RAS): pixel[r, c] = vol[i, ny-1-c, nz-1-r]
        slices = [np.ascontiguousarray(vol[i, ::-1, ::-1].T) for i in range(nx)]
        iop = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
        spacing = [float(sp[2]), float(sp[1])]
        thickness = float(sp[0])
        positions = [(RAS_TO_LPS @ aff @ np.array([i, ny - 1, nz - 1, 1.0]))[:3] for i in range(nx)]
    else:
        raise ValueError(f"orientation must be 'axial' or 'sagittal', got {orientation!r}")
    paths = []
    for k, (pix, pos) in enumerate(zip(slices, positions)):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.AccessionNumber = "DEMOACC0001"
        ds.Modality = "MR"
        ds.Manufacturer = "brain-mri-tumor-detection demo"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "MRI BRAIN W WO CONTRAST"
        ds.SeriesDescription = series_description
        ds.PatientName = "Demo^Synthetic"
        ds.PatientID = patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.PatientPosition = "HFS"
        ds.BodyPartExamined = "BRAIN"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.InstanceNumber = k + 1
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [round(float(v), 4) for v in pos]
        ds.ImageOrientationPatient = iop
        ds.PixelSpacing = spacing
        ds.SliceThickness = thickness
        ds.SpacingBetweenSlices = thickness
        ds.SliceLocation = round(float(pos[2] if orientation == "axial" else pos[0]), 4)
        ds.ScanningSequence = "GR"
        ds.SequenceVariant = "SP"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "3D"
        ds.RepetitionTime = 8.0
        ds.EchoTime = 3.0
        ds.EchoTrainLength = 1
        ds.MagneticFieldStrength = 3.0
        ds.ContrastBolusAgent = "GADOLINIUM"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(pix.shape[0]), int(pix.shape[1])
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.PixelData = pix.astype("<u2").tobytes()
        path = out / f"{series_number:03d}_{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
