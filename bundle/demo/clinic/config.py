"""Knobs of the simulated clinic, its readers and the incidents every export contains (one home for each name)."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import generate_uid

INCIDENTS = (
    "series_description",
    "too_large",
    "too_small",
    "duplicate",
    "corrupt",
    "not_dicom",
    "segmentation_reference",
    "reference_not_found",
    "missing_pixel_spacing",
    "unsupported_graphic",
    "unsupported_object",
)
READERS = ("Reader^Alpha", "Reader^Bravo", "Reader^Charlie")
MANUFACTURER = "SYNTHETIC"
IMPLEMENTATION = ("1.2.826.0.1.3680043.8.498.1", "BMTD_SIM_0_1")  # file meta of the images the clinic writes itself


@dataclass
class ExportConfig:
    """Knobs of the simulated clinic."""

    max_measured: int = 3  # a reader measures 1..max_measured of the largest lesions per study
    p_recist_pair: float = 0.6  # long + short axis; otherwise a single ruler
    p_sr: float = 0.5  # measurement stored as SR TID 1500 instead of GSPS
    p_display_units: float = 0.3  # GSPS in DISPLAY units (with a zoomed displayed area)
    p_scoord3d: float = 0.3  # SR ruler as SCOORD3D
    noise_fraction: float = 0.02  # reader noise: endpoint jitter, sd as a fraction of the line length
    first_study_date: str = "20210104"


def uid(*parts) -> str:
    """Deterministic UID: the same export twice gives byte-identical files."""
    return generate_uid(entropy_srcs=["brain-mri-tumor-detection-demo-pacs", *map(str, parts)])
