"""A minimal NIfTI -> MR DICOM series writer: demo volumes as DICOM for the Deploy app and the PACS tests.

Why: the Deploy app takes DICOM, the demo data is NIfTI. This writes a standard axial series
(rows along patient posterior, columns along patient left: LPS identity orientation), one
MR Image Storage instance per slice, with generated UIDs and a synthetic patient (no PHI).
It is deliberately small: the header blocks and the series writer are bundle/io/dicom_write.py's,
which the PACS-export simulator (bundle/demo/) writes its studies with too; this module only picks
the geometry and the values a valid source for the app, highdicom and dciodvfy needs.

Geometry: the demo volume is RAS (array axis 0 -> patient right, 1 -> anterior, 2 -> superior).
DICOM column c is array index ``nx - 1 - c`` and row r is ``ny - 1 - r``; slice k stays k.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.uid import generate_uid

from bundle.io import dicom_write as dw

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
PATIENT = dw.Patient(name="Demo^Synthetic", patient_id="DEMO-000")
ACQUISITION = dw.MRAcquisition(
    scanning_sequence="GR",
    sequence_variant="SP",
    repetition_time=8.0,
    echo_time=3.0,
    magnetic_field_strength=3.0,
    contrast_agent="GADOLINIUM",
)


def ras_array_box_to_dicom(box_xyzxyz: list[float], shape: tuple[int, int, int]) -> list[float]:
    """Array box of the RAS volume -> box in the series' (column, row, slice) array coordinates."""
    x0, y0, z0, x1, y1, z1 = box_xyzxyz
    nx, ny, _ = shape
    return [nx - x1, ny - y1, z0, nx - x0, ny - y0, z1]


def _slices_and_planes(vol: np.ndarray, aff: np.ndarray, orientation: str, for_uid: str) -> tuple[list[np.ndarray], list[dw.ImagePlane]]:
    """The volume cut into ``pixel[row, column]`` slices, with each slice's plane in LPS."""
    sp = np.diag(aff)[:3]
    nx, ny, nz = vol.shape
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
    planes = [
        dw.ImagePlane(
            position=[round(float(v), 4) for v in pos],
            orientation=iop,
            pixel_spacing=spacing,
            thickness=thickness,
            slice_location=round(float(pos[2] if orientation == "axial" else pos[0]), 4),
            frame_of_reference_uid=for_uid,
        )
        for pos in positions
    ]
    return slices, planes


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
    slices, planes = _slices_and_planes(vol, aff, orientation, frame_of_reference_uid or generate_uid())
    date, time = "20240102", "100000"
    study = dw.Study(
        uid=study_uid or generate_uid(),
        date=date,
        time=time,
        study_id="1",
        accession="DEMOACC0001",
        description="MRI BRAIN W WO CONTRAST",
    )
    series = dw.Series(
        uid=generate_uid(),
        number=series_number,
        description=series_description,
        date=date,
        time=time,
        body_part="BRAIN",
        manufacturer="brain-mri-tumor-detection demo",
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{series_number:03d}_{k + 1:04d}.dcm" for k in range(len(slices))]
    sop_uids = [generate_uid() for _ in slices]
    dw.write_mr_series(slices, planes, paths, sop_uids, replace(PATIENT, patient_id=patient_id), study, series, ACQUISITION)
    return paths
