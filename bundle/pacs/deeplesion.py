"""DeepLesion release as a mining source: DL_info.csv plus Images_png/<patient>_<study>_<series>/<slice:03d>.png."""

from __future__ import annotations

from pathlib import Path

from bundle.io.png import PNG_IMAGE, png_info
from bundle.mining.readers.deeplesion import read_deeplesion


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

        from bundle.io.records import ImageInfo

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
