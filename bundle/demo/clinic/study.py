"""One demo patient's MR study: an axial T1 post-contrast and an axial FLAIR series whose pixels are the demo volume.

Why: mining must see real MR headers (geometry, series descriptions) over pixels it can compare
with the demo truth: ``pixel_array.T == vol[:, :, z]``. The header blocks and the series writer
are the shared ones in bundle/io/dicom_write.py; this module only chooses the clinic's values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import MRImageStorage, SecondaryCaptureImageStorage

from bundle.demo.clinic.config import IMPLEMENTATION, MANUFACTURER, uid
from bundle.io import dicom_write as dw

T1_DESCRIPTION = "AX T1 POST GAD"
FLAIR_DESCRIPTION = "AX T2 FLAIR"
SERIES = {  # series key -> (description, series number); "deleted" is a T1 image the PACS lost before export
    "t1c": (T1_DESCRIPTION, 3),
    "flair": (FLAIR_DESCRIPTION, 2),
    "key": ("KEY IMAGES " + T1_DESCRIPTION, 90),
    "deleted": (T1_DESCRIPTION, 3),
}
SERIES_TIME = "091000"
IMAGE_EXTRA = {"BurnedInAnnotation": "NO"}


class ClinicStudy:
    """One patient's study: builds image datasets that share patient/study/frame-of-reference attributes."""

    def __init__(self, patient: dict, vol: np.ndarray, affine: np.ndarray, date: str, number: int):
        self.pid = patient["patient_id"]
        self.vol = vol
        self.spacing = [float(s) for s in patient["spacing"]]
        self.affine = affine
        self.date = date
        self.number = number
        self.study_uid = uid(self.pid, "study")
        self.for_uid = uid(self.pid, "for")
        self.patient = dw.Patient(name=f"SYNTHETIC^DEMO{number:03d}", patient_id=self.pid)
        self.study = dw.Study(
            uid=self.study_uid,
            date=date,
            time="090000",
            study_id=f"S{number:04d}",
            accession=f"SIM{number:06d}",
            description="MRI BRAIN W WO CONTRAST (SYNTHETIC)",
        )

    def patient_module(self, ds: Dataset) -> None:
        """Patient and study attributes, for objects this study's writers build by hand."""
        dw.set_patient_study(ds, self.patient, self.study)

    def position(self, z: int) -> list[float]:
        """LPS position of voxel (0, 0, z): the NIfTI affine is RAS, so x and y flip sign."""
        ras = self.affine @ np.array([0.0, 0.0, float(z), 1.0])
        return [round(-float(ras[0]), 4), round(-float(ras[1]), 4), round(float(ras[2]), 4)]

    def world(self, points_px: np.ndarray, z: int) -> np.ndarray:
        """PIXEL coordinates (col, row) on slice z -> LPS mm (for SCOORD3D)."""
        ipp = np.asarray(self.position(z))
        row_dir, col_dir = np.array([-1.0, 0, 0]), np.array([0, -1.0, 0])
        p = np.asarray(points_px, dtype=np.float64)
        return ipp + (p[:, :1] - 0.5) * self.spacing[0] * row_dir + (p[:, 1:2] - 0.5) * self.spacing[1] * col_dir

    def series(self, series: str) -> dw.Series:
        desc, number = SERIES[series]
        return dw.Series(
            uid=uid(self.pid, "series", "t1c" if series == "deleted" else series),
            number=number,
            description=desc,
            date=self.date,
            time=SERIES_TIME,
            body_part="HEAD",  # unpaired: Laterality must then be absent
            manufacturer=MANUFACTURER,
        )

    def plane(self, z: int) -> dw.ImagePlane:
        """Axial slice z: rows along -y, columns along -x (the RAS volume's array axes seen from LPS)."""
        return dw.ImagePlane(
            position=self.position(z),
            orientation=[-1, 0, 0, 0, -1, 0],
            pixel_spacing=[self.spacing[1], self.spacing[0]],  # row spacing (y), column spacing (x)
            thickness=self.spacing[2],
            slice_location=self.position(z)[2],
            frame_of_reference_uid=self.for_uid,
        )

    @staticmethod
    def acquisition(series: str) -> dw.MRAcquisition:
        flair = series == "flair"
        return dw.MRAcquisition(
            scanning_sequence=["GR", "IR"],
            sequence_variant=["SP", "MP"],
            repetition_time=9000 if flair else 1900,
            echo_time=90 if flair else 2.5,
            inversion_time=2500 if flair else 900,
            magnetic_field_strength=3,
            imaged_nucleus="1H",
            contrast_agent=None if flair else "GADOLINIUM (SYNTHETIC)",
        )

    def image(self, series: str, z: int, pixels: np.ndarray, *, spacing: bool = True, sop_uid: str | None = None) -> Dataset:
        """One slice (``pixels[col, row]``) as MR Image Storage, or as Secondary Capture without PixelSpacing."""
        sop_class = MRImageStorage if spacing else SecondaryCaptureImageStorage
        sop_uid = sop_uid or uid(self.pid, series, z)
        meta = dw.file_meta(sop_class, sop_uid, *IMPLEMENTATION)
        rc = pixels.T.astype(np.int16)
        if spacing:
            return dw.mr_image(
                sop_uid,
                self.patient,
                self.study,
                self.series(series),
                z + 1,
                rc,
                self.plane(z),
                self.acquisition(series),
                meta=meta,
                extra=IMAGE_EXTRA,
            )
        extra = IMAGE_EXTRA | {"ConversionType": "WSD", "PatientOrientation": ["L", "P"]}
        return dw.image(sop_class, sop_uid, self.patient, self.study, self.series(series), z + 1, rc, ["DERIVED", "SECONDARY"], meta, extra)

    def write_series(self, series: str, out: Path) -> dict[tuple[str, int], Dataset]:
        """Every slice of the volume as ``out/<patient>/<series>/IM0001..`` (no extension, as PACS exports often are)."""
        vol = self.vol
        if series == "flair":  # a different contrast of the same anatomy: what matters is the header
            vol = (np.max(vol) - vol).astype(np.int16)
        zs = range(vol.shape[2])
        datasets = dw.write_mr_series(
            [vol[:, :, z].T.astype(np.int16) for z in zs],
            [self.plane(z) for z in zs],
            [out / self.pid / series / f"IM{z + 1:04d}" for z in zs],
            [uid(self.pid, series, z) for z in zs],
            self.patient,
            self.study,
            self.series(series),
            self.acquisition(series),
            implementation=IMPLEMENTATION,
            extra=IMAGE_EXTRA,
        )
        return {(series, z): ds for z, ds in zip(zs, datasets)}
