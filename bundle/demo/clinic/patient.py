"""One patient's export in progress: its images, its readers' marks and the status a correct miner must give each.

Why a separate state object: the GSPS, SR and incident writers all add to the same record (marks,
files, object counters); the record is what makes the export a test with complete truth.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from bundle.demo.clinic.config import ExportConfig
from bundle.demo.clinic.study import ClinicStudy
from bundle.io import dicom_write as dw
from bundle.io.records import Measurement
from bundle.mining.rules.boxes import BoxRules, measurement_box, size_rule


class PatientExport:
    """Writes one patient's export and the record of what each mark must become."""

    def __init__(self, out: Path, study: ClinicStudy, mask: np.ndarray, cfg: ExportConfig, rng: np.random.Generator, rules: BoxRules):
        self.out, self.study, self.mask, self.cfg, self.rng, self.rules = out, study, mask, cfg, rng, rules
        self.images: dict[tuple[str, int], Dataset] = {}
        self.marks: list[dict] = []
        self.files: list[dict] = []
        self.pr_count = 0
        self.sr_count = 0

    def later_date(self) -> str:
        """The day a second reader reads the study: ``cfg.second_reader_days`` after the study date."""
        d = _dt.date.fromisoformat(f"{self.study.date[:4]}-{self.study.date[4:6]}-{self.study.date[6:]}")
        return (d + _dt.timedelta(days=self.cfg.second_reader_days)).strftime("%Y%m%d")

    def write_series(self, series: str) -> None:
        self.images.update(self.study.write_series(series, self.out))

    def save(self, ds: Dataset, path: Path, kind: str, **record) -> Path:
        """Write an object of this patient and list it in the record (``record``: expected status, SOP UID)."""
        dw.save(ds, path)
        self.files.append({"file": str(path.relative_to(self.out)), "kind": kind, **record})
        return path

    def expect(self, kind: str, points_px: np.ndarray, series: str, z: int) -> dict:
        """The status and box a correct miner must give this mark under the default rules."""
        cols, rows = self.study.vol.shape[0], self.study.vol.shape[1]
        m = Measurement(kind=kind, points=np.asarray(points_px).tolist(), reader="sim", source="", spacing=self.study.spacing[:2])
        box, length = measurement_box(m, self.rules, shape=(cols, rows))
        status = "series_description" if series == "flair" else (size_rule(length, self.rules) or "kept")
        return {"status": status, "box": box, "long_mm": round(length, 3)}

    def mark(self, lesion: int | None, series: str, z: int, kind: str, lines: list[np.ndarray], fmt: str, note: str, **extra) -> dict:
        """Record a reader's mark (not yet in any object) with its expected status and the lesion's true box."""
        pts = np.vstack(lines)
        rec = {
            "patient": self.study.pid,
            "lesion": lesion,
            "slice": int(z),
            "series": series,
            "kind": kind,
            "format": fmt,
            "points": np.round(pts, 3).tolist(),
            "note": note,
            **self.expect(kind, pts, series, z),
            **extra,
        }
        if lesion is not None:
            where = np.argwhere(self.mask[:, :, z] == lesion)
            rec["true_box"] = [int(v) for v in where.min(0)] + [int(v) + 1 for v in where.max(0)]
        self.marks.append(rec)
        return rec
