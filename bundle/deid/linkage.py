"""The linkage (re-identification) tables: written only on request, never beside the data, mode 0600."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path

from bundle.deid.patients import Patient


def write_linkage(path: Path, patients: Iterable[Patient], file_map: list[tuple[str, str]]) -> None:
    """The re-identification key: stays in the hospital, readable by its owner only.

    `path` gets one row per patient; `<stem>_files.csv` beside it maps every input file to its output or status.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["pseudonym", "patient_id", "issuer_of_patient_id", "patient_name", "date_shift_days", "files_written"])
        for p in sorted(patients, key=lambda p: p.pseudonym):
            writer.writerow([p.pseudonym, p.patient_id, p.issuer, p.name, -p.shift, p.files])
    os.chmod(path, 0o600)
    files_path = path.with_name(path.stem + "_files.csv")
    with open(files_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["input", "output_or_status"])
        writer.writerows(file_map)
    os.chmod(files_path, 0o600)
