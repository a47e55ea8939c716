"""DeepLesion `DL_info.csv` reader: RECIST diameters with spacing -> measurements with provenance.

Why: DeepLesion (32,735 CT lesions) is the public example of a vendor/CSV export of reader
measurements. Coordinates in the CSV are 0-based pixel indices of the key slice PNG (pixel centres
at integers), so +0.5 maps them to PIXEL coordinates. Its own Bounding_boxes are the box enclosing
both diameters padded by 5 px: BoxRules(recist_rule="segments", margin_px=5) reproduces them.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from bundle.io.records import Measurement

SPLITS = {"1": "training", "2": "validation", "3": "test"}


def _floats(text: str) -> list[float]:
    return [float(v) for v in str(text).replace(" ", "").split(",") if v != ""]


REQUIRED = ("File_name", "Key_slice_index", "Measurement_coordinates", "Spacing_mm_px_")


def key_slice_png(file_name: str, key_slice: int) -> str:
    """DeepLesion's Images_png layout, relative to the Images_png root: <patient>_<study>_<series>/<slice:03d>.png."""
    series_dir = file_name.strip().rsplit("_", 1)[0]
    if not series_dir or series_dir == file_name.strip():
        raise ValueError(f"File_name {file_name!r} is not <patient>_<study>_<series>_<slice>.png")
    return f"{series_dir}/{int(key_slice):03d}.png"


def looks_like_deeplesion_csv(raw: bytes) -> bool:
    """A CSV whose header names DeepLesion's file and key-slice columns (the rest is checked by the reader)."""
    head = raw[:4096].split(b"\n", 1)[0]
    return b"File_name" in head and b"Key_slice_index" in head


def read_deeplesion(data: bytes | str | Path, name: str | None = None) -> list[Measurement]:
    """Every row as a RECIST measurement; bad rows come back excluded with their reason, never raised.

    `data` is the CSV's bytes (then `name` is its file name, used in provenance) or a path to it.
    """
    if not isinstance(data, bytes | bytearray):
        name = name or Path(data).name
        data = Path(data).read_bytes()
    name = name or "DL_info.csv"
    out: list[Measurement] = []
    with io.StringIO(bytes(data).decode("utf-8"), newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{name}: not a DeepLesion DL_info.csv, columns {missing} missing")
        for row_no, row in enumerate(reader, start=2):
            item = f"row {row_no}"
            m = Measurement(
                kind="recist",
                points=[],
                reader="deeplesion",
                source=f"{name}:{row_no}",
                patient_id=str(row.get("Patient_index") or "").strip(),
                study_uid=str(row.get("Study_index") or "").strip(),
                referenced_series_uid=str(row.get("Series_ID") or "").strip(),
                item=item,
            )
            m.extra = {
                "row": row_no,
                "split": SPLITS.get(str(row.get("Train_Val_Test") or "").strip(), ""),
                "provenance": {
                    "csv_file": name,
                    "csv_row": row_no,
                    "file_name": str(row.get("File_name") or ""),
                    "patient_index": m.patient_id,
                    "study_index": m.study_uid,
                    "series_id": m.referenced_series_uid,
                    "key_slice": None,
                    "lesion_type": str(row.get("Coarse_lesion_type") or ""),
                    "possibly_noisy": str(row.get("Possibly_noisy") or ""),
                },
            }
            out.append(m)
            try:
                key_slice = int(str(row.get("Key_slice_index") or "").strip())
                m.referenced_sop_instance_uid = key_slice_png(str(row.get("File_name") or ""), key_slice)
                if not m.patient_id:
                    raise ValueError("Patient_index is empty")
            except ValueError as exc:
                m.exclude("invalid_row", f"{item}: {exc}")
                continue
            m.extra["key_slice"] = m.extra["provenance"]["key_slice"] = key_slice
            try:
                coords = _floats(row.get("Measurement_coordinates") or "")
            except ValueError:
                coords = []
            try:
                spacing = _floats(row.get("Spacing_mm_px_") or "")
            except ValueError:
                spacing = []
            try:
                m.extra["csv_box"] = _floats(row.get("Bounding_boxes") or "")
            except ValueError:
                m.extra["csv_box"] = []
            m.extra["slice_spacing_mm"] = spacing[2] if len(spacing) > 2 and spacing[2] > 0 else None
            if len(coords) != 8 or not np.all(np.isfinite(coords)):
                m.exclude("no_coordinates", f"{item}: Measurement_coordinates = {row.get('Measurement_coordinates')!r}, expected 8 numbers")
                continue
            # 0-based pixel centres -> PIXEL coordinates (corner of the first pixel at 0, 0)
            m.points = (np.asarray(coords, dtype=np.float64).reshape(-1, 2) + 0.5).tolist()
            if len(spacing) < 2 or not np.all(np.isfinite(spacing[:2])) or min(spacing[:2]) <= 0:
                m.exclude("missing_pixel_spacing", f"{item}: Spacing_mm_px_ = {row.get('Spacing_mm_px_')!r}")
                continue
            m.spacing = spacing[:2]
    return out
