"""Screening a DICOM series read back (the Deploy app's input): damaged slices skipped and reported, or the series refused.

Why before the SDK builds the volume: its DICOM -> volume step stops at the first slice whose pixels
cannot be decoded; here each slice is decoded once and checked against the series' grid.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from pydicom.dataset import Dataset

from bundle.io.dicom import UnreadableError
from bundle.io.pixels import decode_frame


class SeriesError(ValueError):
    """A series that cannot form a volume; the message is the one line the user sees."""


@dataclass
class SkippedSlice:
    """A slice left out of the volume, and why (a bundle.io.records REASONS key or `grid_mismatch`)."""

    sop_instance_uid: str
    reason: str
    detail: str


def _grid(ds: Dataset) -> tuple:
    """What every slice of one volume must share: matrix, pixel spacing, orientation (rounded against float noise)."""
    iop = tuple(round(float(v), 4) for v in ds.get("ImageOrientationPatient") or ())
    ps = tuple(round(float(v), 4) for v in ds.get("PixelSpacing") or ())
    return int(ds.get("Rows", 0)), int(ds.get("Columns", 0)), ps, iop


def screen_slices(datasets: list[Dataset], series_uid: str = "", min_slices: int = 2) -> tuple[list[int], list[SkippedSlice]]:
    """Indices of the slices that decode and share the series' grid; the others with their reasons.

    Why before the SDK builds the volume: its DICOM -> volume step stops at the first slice whose pixels
    cannot be decoded. A damaged slice is skipped and reported; a series with fewer than `min_slices`
    usable slices is refused with one SeriesError line instead.
    """
    usable: list[int] = []
    skipped: list[SkippedSlice] = []
    for i, ds in enumerate(datasets):
        sop = str(ds.get("SOPInstanceUID", f"slice {i + 1}"))
        try:
            decode_frame(ds)
        except UnreadableError as exc:
            skipped.append(SkippedSlice(sop, exc.reason, exc.detail))
            continue
        if "ImagePositionPatient" not in ds:
            skipped.append(SkippedSlice(sop, "grid_mismatch", "no ImagePositionPatient"))
            continue
        usable.append(i)
    grids = Counter(_grid(datasets[i]) for i in usable)
    if grids:
        grid = grids.most_common(1)[0][0]
        for i in [i for i in usable if _grid(datasets[i]) != grid]:
            skipped.append(SkippedSlice(str(datasets[i].SOPInstanceUID), "grid_mismatch", f"{_grid(datasets[i])} != series {grid}"))
        usable = [i for i in usable if _grid(datasets[i]) == grid]
    if len(usable) < min_slices:
        why = ", ".join(f"{r} {n}" for r, n in sorted(Counter(s.reason for s in skipped).items())) or "none skipped"
        raise SeriesError(
            f"series {series_uid or '?'}: cannot form a volume: {len(usable)} of {len(datasets)} slices usable "
            f"(need {min_slices}; skipped: {why})"
        )
    return usable, sorted(skipped, key=lambda s: s.sop_instance_uid)
