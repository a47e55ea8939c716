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
READERS = ("Reader^Alpha", "Reader^Bravo", "Reader^Charlie", "Reader^Delta")  # Delta: the second reader of a study
MANUFACTURER = "SYNTHETIC"
IMPLEMENTATION = ("1.2.826.0.1.3680043.8.498.1", "BMTD_SIM_0_1")  # file meta of the images the clinic writes itself


@dataclass
class ExportConfig:
    """Knobs of the simulated clinic. The defaults make readers as untidy as a clinic's; 0 turns a difficulty off."""

    max_measured: int = 3  # a reader measures 1..max_measured lesions per study, the largest first unless...
    p_not_largest: float = 0.2  # ...per pick, the reader takes another lesion than the largest one left
    p_near_slice: float = 0.3  # the ruler sits on a slice near (not at) the lesion's largest cross-section...
    near_slices: int = 2  # ...at most this many slices away (a slice that still shows the lesion)
    p_recist_pair: float = 0.6  # long + short axis; otherwise a single ruler
    p_sr: float = 0.5  # measurement stored as SR TID 1500 instead of GSPS
    p_display_units: float = 0.3  # GSPS in DISPLAY units (with a zoomed displayed area)
    p_scoord3d: float = 0.3  # SR ruler as SCOORD3D
    noise_fraction: float = 0.10  # reader noise: endpoint jitter, sd as a fraction of the line length (clipped at 2 sd)
    p_second_reader: float = 0.3  # share of studies a second reader (READERS[3]) also measures, on a later day
    second_reader_days: int = 1  # how many days after the study the second reader (and the duplicate incident) reads
    first_study_date: str = "20210104"
    # share of studies no reader measured (a patient without an incident): contrast series with no measurement, as a
    # PACS holds many; mining lists them as unlabelled data (bundle/mining/unlabelled.py). Its own random stream
    p_unread: float = 0.0


def uid(*parts) -> str:
    """Deterministic UID: the same export twice gives byte-identical files."""
    return generate_uid(entropy_srcs=["brain-mri-tumor-detection-demo-pacs", *map(str, parts)])
