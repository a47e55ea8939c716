"""Burned-in text: which images may carry it, and blanking configured regions of Pixel Data.

Handled by policy (exclude, or blank known regions), not OCR: see docs/deidentification.md, `burned_in`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from bundle.deid.options import DeidOptions
from bundle.io.pixels import decode_frame, decompress_in_place


def check_pixels(ds: Dataset) -> None:
    """Decode every frame of an image once, so a damaged stream is reported (UnreadableError) instead of copied on."""
    if "PixelData" not in ds:
        return
    for frame in range(1, int(ds.get("NumberOfFrames", 1) or 1) + 1):
        decode_frame(ds, frame)


SECONDARY_CAPTURE_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
    }
)
# Encapsulated PDF / CDA / STL / OBJ / MTL: the document itself may name the patient, and it cannot be cleaned.
ENCAPSULATED_DOCUMENT_PREFIX = "1.2.840.10008.5.1.4.1.1.104."
ULTRASOUND_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.6.2", "1.2.840.10008.5.1.4.1.1.3.1"})


def burned_in_reason(ds: Dataset, opts: DeidOptions) -> str | None:
    """Why this image may carry burned-in text (the report's exclusion reason), or None."""
    sop = str(ds.get("SOPClassUID", ""))
    if sop.startswith(ENCAPSULATED_DOCUMENT_PREFIX):
        return "encapsulated_document"
    if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        return "burned_in_annotation_yes"
    if sop in SECONDARY_CAPTURE_CLASSES:
        return "secondary_capture"
    if sop in ULTRASOUND_CLASSES:
        return "ultrasound"
    modality = str(ds.get("Modality", "")).upper()
    if modality in {m.upper() for m in opts.burned_in_modalities}:
        return f"modality_{modality.lower()}"
    return None


def blank_rule(ds: Dataset, opts: DeidOptions) -> dict[str, Any] | None:
    """The first `blank_regions` rule whose given keys all match this image (and that has regions), or None."""
    for rule in opts.blank_regions:
        checks = {
            "modality": str(ds.get("Modality", "")).upper() == str(rule.get("modality", "")).upper(),
            "sop_class_uid": str(ds.get("SOPClassUID", "")) == str(rule.get("sop_class_uid", "")),
            "rows": int(ds.get("Rows", -1)) == int(rule.get("rows", -2)),
            "columns": int(ds.get("Columns", -1)) == int(rule.get("columns", -2)),
        }
        if all(checks[k] for k in checks if k in rule) and rule.get("regions"):
            return rule
    return None


def blank_regions(ds: Dataset, regions: list[list[int]]) -> None:
    """Clean Pixel Data: set each [x0, y0, x1, y1] (max exclusive, all frames) to the image minimum."""
    decompress_in_place(ds)  # any transfer syntax; the blanked image is written uncompressed (never re-encoded lossy)
    arr = ds.pixel_array.copy()
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    view = arr if frames > 1 else arr[None]
    fill = view.min()
    for x0, y0, x1, y1 in regions:
        view[:, int(y0) : int(y1), int(x0) : int(x1)] = fill
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    ds.BurnedInAnnotation = "NO"
