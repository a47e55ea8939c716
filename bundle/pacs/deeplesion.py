"""DeepLesion release as a mining source: DL_info.csv plus Images_png/<patient>_<study>_<series>/<slice:03d>.png."""

from __future__ import annotations

from pathlib import Path

from bundle.io.png import PNG_IMAGE, png_info
from bundle.io.records import ImageInfo, Measurement, ObjectResult
from bundle.pacs.source import Inspector, pool_map


def _check(args: tuple[str, str]) -> tuple[str, dict | None, str, str]:
    root, key = args
    info, reason, detail = png_info(Path(root) / key)
    return key, info, reason, detail


class DeepLesionSource:
    """A DeepLesion release: DL_info.csv + Images_png/<patient>_<study>_<series>/<slice:03d>.png.

    `collect` returns the same per-object results the DICOM sources give: one for the CSV (read by the
    miner's inspector) with every row's measurement, one per key slice PNG with its image summary. A row whose
    PNG is missing or cannot be decoded is excluded with that reason; the other rows are mined.
    """

    kind = "deeplesion"

    def __init__(self, csv_path: str | Path, images_root: str | Path):
        self.csv_path, self.root = Path(csv_path), Path(images_root)
        if not self.csv_path.is_file():
            raise FileNotFoundError(f"DeepLesion CSV {self.csv_path} does not exist")
        if not self.root.is_dir():
            raise FileNotFoundError(f"DeepLesion Images_png folder {self.root} does not exist")

    def read_bytes(self, location: str) -> bytes:
        return (self.root / location).read_bytes()

    def _read_csv(self, inspect: Inspector) -> list[Measurement]:
        res = inspect(self.csv_path.read_bytes(), self.csv_path.name)
        if res.object != "deeplesion_csv":
            detail = res.issue.detail if res.issue else f"read as {res.object}"
            raise ValueError(f"{self.csv_path}: not a DeepLesion DL_info.csv ({detail})")
        return res.measurements

    def collect(self, inspect: Inspector, workers: int = 1, progress: bool = False) -> list[ObjectResult]:
        ms = self._read_csv(inspect)
        keys = sorted({m.referenced_sop_instance_uid for m in ms if m.status == "pending"})
        jobs = [(str(self.root), k) for k in keys]
        checked = pool_map(_check, jobs, workers if len(jobs) > 16 else 1, "key slices", progress, chunksize=32)
        first: dict[str, Measurement] = {}
        for m in ms:
            if m.status == "pending":
                first.setdefault(m.referenced_sop_instance_uid, m)
        results, bad = [], {}
        for key, info, reason, detail in checked:
            if info is None:
                bad[key] = (reason, detail)
                if reason == "image_unreadable":  # seen, not read: counted in files_seen, its rows carry the reason
                    results.append(ObjectResult(location=key))
                continue
            results.append(ObjectResult(location=key, object="png", image=_key_slice_info(key, info, first[key])))
        for m in ms:
            if m.status == "pending" and m.referenced_sop_instance_uid in bad:
                reason, detail = bad[m.referenced_sop_instance_uid]
                m.exclude(reason, f"{m.item}: {m.referenced_sop_instance_uid}: {detail}")
        return [ObjectResult(location=self.csv_path.name, object="deeplesion_csv", measurements=ms), *results]


def _key_slice_info(key: str, info: dict, m: Measurement) -> ImageInfo:
    """A key slice PNG's summary: size from the file, spacing and slice from the first CSV row naming it."""
    series_dir = key.split("/")[0]
    return ImageInfo(
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
