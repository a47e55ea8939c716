"""Check that files downstream of de-identification (NIfTI, datalists, reports, logs) carry no PHI.

Why byte scans: a parsed view only shows the fields a reader knows about; PHI left in a NIfTI header's
descrip/aux_file/intent_name, a JSON path or a log line is found by searching the raw (and gunzipped)
bytes for the identifying values of the original export.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from bundle.deid.scrub import collect_identity_tokens

_NIFTI_TEXT_FIELDS = ("descrip", "aux_file", "intent_name", "db_name")
_UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")


def collect_phi_strings(dicom_dir: str | os.PathLike, min_length: int = 5) -> set[str]:
    """Identifying values of an original (identified) DICOM export: names, IDs, dates of birth, UIDs.

    Short fragments are dropped (min_length) so that a two-letter name part cannot match random bytes.
    """
    found: set[str] = set()
    for path in sorted(Path(dicom_dir).rglob("*")):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, Exception):  # non-DICOM files in an export are not our concern here
            continue
        found |= collect_identity_tokens(ds)
        for kw in _UID_KEYWORDS:
            if kw in ds:
                found.add(str(ds[kw].value))
    return {s for s in found if len(s) >= min_length}


def _nifti_header_hits(path: Path, needles: dict[str, bytes]) -> list[dict[str, Any]]:
    import nibabel as nib

    hits = []
    try:
        header = nib.load(str(path)).header
    except Exception:
        return hits
    for name in _NIFTI_TEXT_FIELDS:
        if name not in header:
            continue
        value = bytes(header[name].tobytes()).lower()
        for text, needle in needles.items():
            if needle in value:
                hits.append({"file": str(path), "string": text, "where": f"nifti header {name}"})
    return hits


def find_phi(folder: str | os.PathLike, strings: set[str] | list[str]) -> list[dict[str, Any]]:
    """Every (file, string) where a PHI string occurs in a file under folder (case-insensitive).

    Files are read raw; .gz files are also searched decompressed; NIfTI headers say which field holds it.
    """
    needles = {s: s.lower().encode() for s in strings if s}
    hits: list[dict[str, Any]] = []
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file():
            continue
        for text, needle in needles.items():
            if needle.decode(errors="ignore") in path.relative_to(folder).as_posix().lower():
                hits.append({"file": str(path), "string": text, "where": "path"})
        data = path.read_bytes()
        blobs = [("raw", data)]
        if path.suffix == ".gz":
            try:
                blobs.append(("gunzipped", gzip.decompress(data)))
            except (OSError, EOFError):
                pass
        for where, blob in blobs:
            low = blob.lower()
            for text, needle in needles.items():
                if needle in low:
                    hits.append({"file": str(path), "string": text, "where": where})
        if path.name.endswith((".nii", ".nii.gz")):
            hits.extend(_nifti_header_hits(path, needles))
    return hits
