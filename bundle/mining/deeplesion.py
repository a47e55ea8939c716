"""DeepLesion `DL_info.csv` reader: RECIST diameters with spacing -> measurements with provenance.

Why: DeepLesion (32,735 CT lesions) is the public example of a vendor/CSV export of reader
measurements. Coordinates in the CSV are 0-based pixel indices of the key slice PNG (pixel centres
at integers), so +0.5 maps them to PIXEL coordinates. Its own Bounding_boxes are the box enclosing
both diameters padded by 5 px: BoxRules(recist_rule="segments", margin_px=5) reproduces them.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from bundle.mining.measurement import Measurement

SPLITS = {"1": "training", "2": "validation", "3": "test"}


def _floats(text: str) -> list[float]:
    return [float(v) for v in str(text).replace(" ", "").split(",") if v != ""]


def key_slice_png(file_name: str, key_slice: int) -> str:
    """DeepLesion's Images_png layout: <patient>_<study>_<series>/<slice:03d>.png."""
    return f"Images_png/{file_name.rsplit('_', 1)[0]}/{int(key_slice):03d}.png"


def read_deeplesion(csv_path: str | Path) -> list[Measurement]:
    out = []
    with open(csv_path, newline="") as fh:
        for row_no, row in enumerate(csv.DictReader(fh), start=2):
            item = f"row {row_no}"
            coords = _floats(row.get("Measurement_coordinates", ""))
            spacing = _floats(row.get("Spacing_mm_px_", ""))
            image = key_slice_png(row["File_name"], int(row["Key_slice_index"]))
            m = Measurement(
                kind="recist",
                points=(np.asarray(coords, dtype=np.float64).reshape(-1, 2) + 0.5).tolist() if len(coords) == 8 else [],
                reader="deeplesion",
                source=f"{Path(csv_path).name}:{row_no}",
                referenced_sop_instance_uid=image,
                patient_id=str(row.get("Patient_index", "")),
                study_uid=str(row.get("Study_index", "")),
                referenced_series_uid=str(row.get("Series_ID", "")),
                item=item,
                spacing=spacing[:2] if len(spacing) >= 2 and min(spacing[:2]) > 0 else None,
            )
            m.extra = {
                "split": SPLITS.get(str(row.get("Train_Val_Test", "")).strip(), ""),
                "csv_box": _floats(row.get("Bounding_boxes", "")),
                "key_slice": int(row["Key_slice_index"]),
                "slice_spacing_mm": spacing[2] if len(spacing) > 2 else None,
                "lesion_type": row.get("Coarse_lesion_type", ""),
                "possibly_noisy": row.get("Possibly_noisy", ""),
            }
            if len(coords) != 8:
                m.exclude("no_coordinates", f"{item}: Measurement_coordinates has {len(coords)} values, expected 8")
            elif m.spacing is None:
                m.exclude("missing_pixel_spacing", f"{item}: Spacing_mm_px_ = {row.get('Spacing_mm_px_')!r}")
            out.append(m)
    return out
