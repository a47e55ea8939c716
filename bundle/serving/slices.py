"""The Deploy app's selected series as slices: a classic series' instances, or an Enhanced MR's frames.

Why: the SDK's selector, its DICOM -> volume step and the app's own geometry read ImageOrientationPatient,
ImagePositionPatient and PixelSpacing at the top level of each instance, one instance per slice. An Enhanced
(or Legacy Converted Enhanced) MR is one instance whose frames are the slices, and it keeps that geometry in
its functional groups (PlaneOrientationSequence, PlanePositionSequence, PixelMeasuresSequence: read by
bundle/io/frames.py, as mining reads it). Here a slice is a dataset and, for a multi-frame image, its 1-based
frame number; the frames are checked as volume inference checks them (``check_frames``, one line on refusal)
and put in slice order (position along the plane normal), so the app's volume, its boxes and the SR's
references (ReferencedFrameNumber) agree with the classic series' and the NIfTI's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from bundle.datalist.series_rules import normal_of
from bundle.inference.dicom_input import check_frames
from bundle.io.dicom import UnreadableError, image_info
from bundle.io.frames import PER_FRAME, SHARED, frame_plane
from bundle.io.nifti import slice_array
from bundle.serving.series_screening import SeriesError
from bundle.transforms.checks import BadImageError


@dataclass(frozen=True)
class SliceSource:
    """One slice of the volume: the instance holding it and, in a multi-frame image, its frame (1-based)."""

    dataset: Dataset
    frame: int | None = None

    def _plane(self) -> dict[str, Any]:
        if self.frame is None:
            ds = self.dataset
            ps = ds.get("PixelSpacing")
            return {
                "orientation": [float(v) for v in ds.ImageOrientationPatient],
                "position": [float(v) for v in ds.ImagePositionPatient],
                "spacing": [float(ps[1]), float(ps[0])] if ps is not None else None,
                "slice_thickness": float(ds.get("SliceThickness") or 0) or None,
            }
        return frame_plane(self.dataset, self.frame)

    @property
    def position(self) -> np.ndarray:
        return np.asarray(self._plane()["position"], dtype=float)

    @property
    def orientation(self) -> np.ndarray:
        return np.asarray(self._plane()["orientation"], dtype=float)

    @property
    def pixel_spacing(self) -> tuple[float, float]:
        """(row spacing, column spacing) in mm, DICOM's PixelSpacing order."""
        col_sp, row_sp = self._plane()["spacing"]
        return float(row_sp), float(col_sp)

    @property
    def thickness(self) -> float | None:
        return self._plane()["slice_thickness"]


def is_enhanced(ds: Dataset) -> bool:
    """A multi-frame image whose geometry is in functional groups (Enhanced or Legacy Converted Enhanced MR)."""
    return int(ds.get("NumberOfFrames", 1) or 1) > 1 and (PER_FRAME in ds or SHARED in ds)


def refuse_split_multiframe(datasets: Sequence[Dataset], series_uid: str = "") -> None:
    """SeriesError (one line) for a series of several multi-frame files: which frames make the volume is not known.

    Why: some scanners split one acquisition into several Enhanced MR instances (or mix them with single-frame
    ones); stacking them needs the per-frame positions of all of them at once, which volume inference also refuses
    (``volume_files``). Without this the classic screening would call every file a grid mismatch."""
    n = sum(is_enhanced(ds) for ds in datasets)
    if len(datasets) > 1 and n:
        raise SeriesError(
            f"series {series_uid or '?'}: {n} multi-frame files among {len(datasets)}; one Enhanced MR file per series is read"
        )


def enhanced_slices(ds: Dataset, series_uid: str = "") -> list[SliceSource]:
    """An Enhanced MR's frames as slices in slice order; SeriesError (one line) when they are not one volume.

    The rule is volume inference's (``check_frames``: a per-frame position and orientation for every frame, one
    orientation and pixel spacing, even gaps, frames stored one way through the volume) and every frame must decode:
    a frame left out would leave a hole in the volume, so the series is refused rather than stacked around it.
    """
    name = f"series {series_uid or ds.get('SeriesInstanceUID', '?')}"
    info = image_info(ds, name)
    try:
        check_frames(info, name)
    except BadImageError as exc:
        raise SeriesError(str(exc)) from None
    normal = normal_of(info.per_frame[0]["orientation"])  # type: ignore[index]
    along = [float(np.dot(normal, p["position"])) for p in info.per_frame]  # type: ignore[union-attr]
    frames = [int(k) + 1 for k in np.argsort(along, kind="stable")]
    for k in frames:
        try:
            slice_array(ds, k)
        except UnreadableError as exc:
            raise SeriesError(f"{name}: frame {k} of {info.frames}: {exc.reason} ({exc.detail}); not a volume") from None
    return [SliceSource(ds, k) for k in frames]


def frame_volume(slices: Sequence[SliceSource]) -> np.ndarray:
    """The frames' pixels (rescaled by their Pixel Value Transformation) as (slice, row, column), the SDK's order."""
    return np.stack([slice_array(s.dataset, s.frame or 1).T for s in slices])


def series_affine_lps(slices: Sequence[SliceSource]) -> np.ndarray:
    """Voxel (column, row, slice) centre -> LPS mm, from the sorted slices' geometry.

    Computed here rather than taken from the SDK's volume metadata, which scales the row direction
    by the row spacing (PixelSpacing[0]); that is only right for square pixels.
    """
    first, last = slices[0], slices[-1]
    iop = first.orientation
    row_sp, col_sp = first.pixel_spacing
    ipp0 = first.position
    n = len(slices)
    if n > 1:
        step = (last.position - ipp0) / (n - 1)
    else:
        step = np.cross(iop[:3], iop[3:]) * float(first.thickness or 1.0)
    aff = np.eye(4)
    aff[:3, 0] = iop[:3] * col_sp  # along a row: column index
    aff[:3, 1] = iop[3:] * row_sp  # along a column: row index
    aff[:3, 2] = step
    aff[:3, 3] = ipp0
    return aff


def selector_attributes(ds: Dataset, patient_position: str | None) -> dict[str, Any]:
    """What the SDK's series selector reads at the instance's top level, for an Enhanced MR that keeps it in groups.

    ``ImageOrientationPatient`` in the form the selector parses (one string ``"[r1, r2, r3, c1, c2, c3]"``, as
    pydicom's ``repval`` gives it for a classic instance), from frame 1's functional groups; ``PatientPosition``
    (the selector refuses an orientation rule without one, though it computes the orientation from the cosines
    alone) as the series has it, else HFS, the head-first supine position of a brain MR. Empty for a classic image.
    """
    if not is_enhanced(ds) or ds.get("ImageOrientationPatient") is not None:
        return {}
    orientation = frame_plane(ds, 1)["orientation"]
    if orientation is None:
        return {}
    out: dict[str, Any] = {"ImageOrientationPatient": [str([float(v) for v in orientation])]}
    if not patient_position:
        out["PatientPosition"] = "HFS"
    return out
