"""What the Deploy app checks before it starts its graph: the folder and model the user handed it.

Why before the graph: inside Holoscan an operator's exception prints the executor's error block and a
Python traceback, and the SDK's operators fail far from the cause (an empty folder ends in
``ItemNotExistsError``, a study without the wanted series in "Missing expected input", a truncated
slice in "Failed to apply rescale to DICOM volume"). These checks raise ``InputError`` with one line
naming the folder or file and the problem; deploy/app/app.py runs them (with the SDK's own loader and
selector for the series choice) and its excepthook prints the line, exit code 1. A damaged slice is not
refused: the app's volume step skips and reports it (bundle/serving/series_screening.py ``screen_slices``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from bundle.io.errors import InputError
from bundle.serving.series_screening import SeriesError, screen_slices
from bundle.serving.slices import enhanced_slices, is_enhanced, refuse_split_multiframe


def _is_dicom(path: Path) -> bool:
    """As the SDK's loader decides (``dcmread`` without ``force``), reading the header only."""
    try:
        dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, OSError):
        return False
    return True


def dicom_files(folder: str | os.PathLike) -> list[Path]:
    """The DICOM files under ``folder`` (recursive); raises unless it is a folder holding at least one."""
    root = Path(folder)
    if not root.exists():
        raise InputError(f"{folder}: no such folder")
    if not root.is_dir():
        raise InputError(f"{folder}: is a file, not a folder; give -i the folder that holds the DICOM series")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if not files:
        raise InputError(f"{folder}: is empty; no DICOM files to read")
    found = [p for p in files if _is_dicom(p)]
    if not found:
        raise InputError(f"{folder}: none of its {len(files)} files is DICOM (the first: {files[0].relative_to(root)})")
    return found


def model_file(path: str | os.PathLike) -> Path:
    """``-m``: a model.ts / model.pt file, or a folder holding one (model.ts first)."""
    p = Path(path)
    if p.is_dir():
        for name in ("model.ts", "model.pt"):
            if (p / name).is_file():
                return p / name
        raise InputError(f"{path}: no model.ts or model.pt in this folder")
    if not p.is_file():
        raise InputError(f"{path}: no such model file or folder")
    return p


def no_series_matched(folder: str | os.PathLike, rule_names: Sequence[str], studies: Sequence[Any]) -> InputError:
    """The error for a study where no series matches the selection rules; lists what was there."""
    found = sorted(
        {f"{getattr(s, 'Modality', '?')} '{getattr(s, 'SeriesDescription', '')}'" for st in studies for s in st.get_all_series()}
    )
    rules = ", ".join(repr(n) for n in rule_names) or "the selection rules"
    shown = "; ".join(found[:6]) + (f"; ... ({len(found)} series)" if len(found) > 6 else "")
    return InputError(f"{folder}: no series matches {rules} (SERIES_RULES); found: {shown or 'none'}")


def screen_series(folder: str | os.PathLike, datasets: Sequence[Any], series_uid: str) -> None:
    """The selected series as the app's volume step will screen it (``screen_slices``; an Enhanced MR's frames:
    ``enhanced_slices``): damaged slices are left to that step to skip and report; a series that cannot form a
    volume is refused here, naming the folder."""
    try:
        if len(datasets) == 1 and is_enhanced(datasets[0]):
            enhanced_slices(datasets[0], series_uid)
            return
        refuse_split_multiframe(datasets, series_uid)
        screen_slices(list(datasets), series_uid)
    except SeriesError as exc:
        raise InputError(f"{folder}: {exc}") from exc
