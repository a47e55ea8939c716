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


REQUIRED = ("File_name", "Key_slice_index", "Measurement_coordinates", "Spacing_mm_px_")
PNG_IMAGE = "deeplesion-png"  # ImageInfo.sop_class_uid of a DeepLesion key slice: no DICOM series rules apply


def key_slice_png(file_name: str, key_slice: int) -> str:
    """DeepLesion's Images_png layout, relative to the Images_png root: <patient>_<study>_<series>/<slice:03d>.png."""
    series_dir = file_name.strip().rsplit("_", 1)[0]
    if not series_dir or series_dir == file_name.strip():
        raise ValueError(f"File_name {file_name!r} is not <patient>_<study>_<series>_<slice>.png")
    return f"{series_dir}/{int(key_slice):03d}.png"


def read_deeplesion(csv_path: str | Path) -> list[Measurement]:
    """Every row as a RECIST measurement; bad rows come back excluded with their reason, never raised."""
    out = []
    name = Path(csv_path).name
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path}: not a DeepLesion DL_info.csv, columns {missing} missing")
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


def png_info(path: Path) -> tuple[dict | None, str, str]:
    """(width, height) of a 16-bit key slice PNG, decoded fully so a truncated file is caught here, not later."""
    from PIL import Image

    if not path.is_file():
        return None, "image_missing", f"{path.name} not found"
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)
    except Exception as exc:  # noqa: BLE001 - any decoder failure means the slice is unusable
        return None, "image_unreadable", f"{path.name}: {type(exc).__name__}: {exc}"
    if arr.ndim != 2:
        return None, "image_unreadable", f"{path.name}: not a single grey plane (shape {arr.shape})"
    return {"columns": int(arr.shape[1]), "rows": int(arr.shape[0]), "dtype": str(arr.dtype)}, "", ""


def png_hu(path: str | Path) -> np.ndarray:
    """DeepLesion PNG -> HU as int16 in (row, column) order: stored value - 32768."""
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im).astype(np.int32) - 32768
    return np.clip(arr, -32768, 32767).astype(np.int16)


def _check(args: tuple[str, str]) -> tuple[str, dict | None, str, str]:
    root, key = args
    info, reason, detail = png_info(Path(root) / key)
    return key, info, reason, detail


class DeepLesionSource:
    """A DeepLesion release: DL_info.csv + Images_png/<patient>_<study>_<series>/<slice:03d>.png.

    `collect` returns the same per-object results the DICOM sources give (`Miner.run` consumes them):
    one for the CSV with every row's measurement, one per key slice PNG with its image summary. A row whose
    PNG is missing or cannot be decoded is excluded with that reason; the other rows are mined.
    """

    kind = "deeplesion"

    def __init__(self, csv_path: str | Path, images_root: str | Path):
        self.csv_path, self.root = Path(csv_path), Path(images_root)
        if not self.csv_path.is_file():
            raise FileNotFoundError(f"DeepLesion CSV {self.csv_path} does not exist")
        if not self.root.is_dir():
            raise FileNotFoundError(f"DeepLesion Images_png folder {self.root} does not exist")

    def collect(self, workers: int = 1, progress: bool = False) -> list[dict]:
        from concurrent.futures import ProcessPoolExecutor

        from bundle.mining.dicomio import ImageInfo

        ms = read_deeplesion(self.csv_path)
        keys = sorted({m.referenced_sop_instance_uid for m in ms if m.status == "pending"})
        jobs = [(str(self.root), k) for k in keys]
        if workers > 1 and len(jobs) > 16:
            with ProcessPoolExecutor(workers) as pool:
                checked = list(pool.map(_check, jobs, chunksize=32))
        else:
            checked = [_check(j) for j in jobs]
        first = {}
        for m in ms:
            if m.status == "pending":
                first.setdefault(m.referenced_sop_instance_uid, m)
        results, bad = [], {}
        for key, info, reason, detail in checked:
            if info is None:
                bad[key] = (reason, detail)
                if reason == "image_unreadable":  # seen, not read: counted in files_seen, its rows carry the reason
                    results.append({"location": key, "issue": None, "image": None, "measurements": [], "object": None})
                continue
            m = first[key]
            series_dir = key.split("/")[0]
            img = ImageInfo(
                sop_instance_uid=key,
                sop_class_uid=PNG_IMAGE,
                series_uid=series_dir,
                study_uid=series_dir.rsplit("_", 1)[0],
                patient_id=m.patient_id,
                modality="CT",
                series_description="",
                image_type=[],
                rows=info["rows"],
                columns=info["columns"],
                frames=1,
                spacing=m.spacing,
                orientation=None,
                position=None,
                slice_thickness=m.extra.get("slice_spacing_mm"),
                frame_of_reference_uid="",
                study_date="",
                instance_number=m.extra["key_slice"],
                location=key,
            )
            results.append({"location": key, "issue": None, "image": img.to_dict(), "measurements": [], "object": "png"})
        for m in ms:
            if m.status == "pending" and m.referenced_sop_instance_uid in bad:
                reason, detail = bad[m.referenced_sop_instance_uid]
                m.exclude(reason, f"{m.item}: {m.referenced_sop_instance_uid}: {detail}")
        csv_res = {
            "location": self.csv_path.name,
            "issue": None,
            "image": None,
            "measurements": [m.to_dict() for m in ms],
            "object": "deeplesion_csv",
        }
        return [csv_res, *results]
