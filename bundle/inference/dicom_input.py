"""DICOM in: a series folder, a study folder (the series rules pick the series) or an Enhanced MR file, as a volume.

Why: a radiology user has DICOM, not NIfTI. The volume is read through MONAI's `LoadImage` with its ITK reader
(`ITKReader.get_data` builds the affine from ITK's origin, spacing and direction, so boxes come back in world
LPS like a NIfTI's); ITK's GDCM reader takes an Enhanced MR's frame positions from its functional groups.
What this module adds is the choice of files: the DICOM files of a folder, grouped by series; one series is taken
as it is, several are put to the mining series rules (bundle/datalist/series_rules.py) and the picked one is
named in the log; and the checks that the files stack into one volume (even slice gaps, one orientation;
for a multi-frame file, the per-frame positions of bundle/io/frames.py). Every refusal is one line naming the
folder or file and the field (`BadImageError`, docs/bad_inputs.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ITKReader
from monai.transforms import LoadImage, LoadImaged

from bundle.datalist.rules import from_config
from bundle.datalist.series_rules import SeriesRules, check_series, normal_of
from bundle.io.dicom import UnreadableError, image_info, is_image, read_dataset
from bundle.io.errors import find_input_error
from bundle.io.records import ImageInfo
from bundle.transforms.checks import CheckImaged, bad_image, check_array

logger = logging.getLogger(__name__)
GAP_TOLERANCE = 0.01  # slice gaps may differ by 1 % (and 1 micrometre) and still be one volume


def is_dicom_input(path: Any) -> bool:
    """A folder, or a file with the DICM prefix: what this module reads (NIfTI and other files go to MONAI's readers)."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    p = Path(path)
    if p.is_dir():
        return True
    if not p.is_file() or p.stat().st_size < 132:
        return False
    with open(p, "rb") as fh:
        return fh.read(132)[128:] == b"DICM"


@dataclass(frozen=True)
class Series:
    """The DICOM image files of one series under a folder, with their headers."""

    uid: str
    infos: tuple[ImageInfo, ...]

    @property
    def label(self) -> str:
        first = self.infos[0]
        frames = sum(i.frames for i in self.infos)
        return f"{first.modality} {first.series_description!r} ({len(self.infos)} files, {frames} frames)"


def find_series(folder: Path) -> list[Series]:
    """Every image series under folder (recursive); non-DICOM, damaged and non-image files are passed over."""
    groups: dict[str, list[ImageInfo]] = {}
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        try:
            ds = read_dataset(p, stop_before_pixels=True)
        except UnreadableError:
            continue
        if is_image(ds):
            groups.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(image_info(ds, str(p)))
    return [Series(uid, tuple(infos)) for uid, infos in sorted(groups.items())]


def _why(verdict: tuple[str, str] | None) -> str:
    """A series rule's verdict in a few words: the reason and the step (`series_description: flair`)."""
    return "selected" if verdict is None else f"{verdict[0]} ({verdict[1].split(':')[0]})"


def pick_series(folder: Path, rules: SeriesRules) -> Series:
    """The one series of a series folder, else the series the rules select (the most images among several)."""
    found = find_series(folder)
    if not found:
        raise bad_image(folder, "holds no DICOM image files")
    if len(found) == 1:
        return found[0]
    verdicts = {s.uid: check_series(s.infos[0], rules) for s in found}
    chosen = [s for s in found if verdicts[s.uid] is None]
    if not chosen:
        seen = "; ".join(f"{s.label}: {_why(verdicts[s.uid])}" for s in found)
        raise bad_image(folder, f"no series matches the series rules (axial T1 post-contrast); found: {seen}")
    best = max(chosen, key=lambda s: (sum(i.frames for i in s.infos), s.uid))
    others = "; ".join(f"{s.label}: {_why(verdicts[s.uid])}" for s in found if s is not best)
    logger.info("%s: picked series %s %s by the series rules, of %d series (also: %s)", folder, best.uid, best.label, len(found), others)
    return best


def _even(positions: np.ndarray, what: str, name: Any) -> None:
    gaps = np.diff(np.sort(positions))
    if len(gaps) == 0:
        raise bad_image(name, f"{what}: one slice, not a volume")
    if np.any(gaps < 1e-3) or gaps.max() - gaps.min() > GAP_TOLERANCE * abs(gaps.mean()) + 1e-3:
        raise bad_image(name, f"{what}: slices are not evenly spaced (gaps {gaps.min():.3f} to {gaps.max():.3f} mm); not one volume")


def volume_files(series: Series, name: Any) -> list[str]:
    """The series' files in slice order (position along the plane normal); refused when they do not form one volume."""
    infos = list(series.infos)
    if len(infos) == 1 and infos[0].frames > 1:
        check_frames(infos[0], name)
        return [infos[0].location]
    if any(i.frames > 1 for i in infos):
        raise bad_image(name, f"series {series.uid}: {len(infos)} multi-frame files; give one of them")
    if len({(i.rows, i.columns) for i in infos}) > 1:
        raise bad_image(name, f"series {series.uid}: images differ in Rows/Columns")
    orientations = {tuple(np.round(i.orientation, 3)) if i.orientation else None for i in infos}
    if None in orientations or len(orientations) > 1 or any(i.position is None for i in infos):
        raise bad_image(name, f"series {series.uid}: ImageOrientationPatient differs or is missing, or ImagePositionPatient is missing")
    normal = normal_of(infos[0].orientation)  # type: ignore[arg-type]
    pos = np.array([float(np.dot(normal, i.position)) for i in infos])  # type: ignore[arg-type]
    _even(pos, f"series {series.uid}", name)
    return [infos[k].location for k in np.argsort(pos, kind="stable")]


def check_frames(info: ImageInfo, name: Any) -> None:
    """A multi-frame image is one volume when its frames share one orientation and pixel spacing and are evenly spaced
    in stored order (functional groups). The Deploy app applies the same rule (bundle/serving/slices.py)."""
    planes = info.per_frame or []
    if len(planes) != info.frames or any(p.get("position") is None or p.get("orientation") is None for p in planes):
        raise bad_image(name, f"{info.frames} frames without per-frame PlanePositionSequence / PlaneOrientationSequence; not a volume")
    if len({tuple(np.round(p["orientation"], 3)) for p in planes}) > 1:
        raise bad_image(name, "frames differ in ImageOrientationPatient (PlaneOrientationSequence); not one volume")
    spacings = {tuple(np.round(p["spacing"], 4)) if p.get("spacing") else None for p in planes}
    if None in spacings or len(spacings) > 1:
        raise bad_image(name, "frames lack PixelSpacing (PixelMeasuresSequence) or differ in it; not one volume")
    normal = normal_of(planes[0]["orientation"])
    pos = np.array([float(np.dot(normal, p["position"])) for p in planes])
    _even(pos, "frames (PlanePositionSequence)", name)
    steps = np.diff(pos)
    if not (np.all(steps > 0) or np.all(steps < 0)):  # ITK stacks frames as stored: they must go one way through the volume
        raise bad_image(name, "frames are not stored in slice order (PlanePositionSequence goes back and forth); not read as a volume")


class DicomVolumeReader(ITKReader):
    """MONAI's ITK reader, given the files of one volume: a series folder, a study folder, an Enhanced MR file."""

    def __init__(self, series_rules: SeriesRules | dict | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.series_rules = from_config(SeriesRules, series_rules)

    def verify_suffix(self, filename: Sequence[os.PathLike | str] | os.PathLike | str) -> bool:
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        return len(names) == 1 and is_dicom_input(names[0])

    def files(self, path: os.PathLike | str) -> list[str]:
        p = Path(path)
        if p.is_dir():
            return volume_files(pick_series(p, self.series_rules), p)
        ds = read_dataset(p, stop_before_pixels=True)
        info = image_info(ds, str(p))
        if info.frames > 1:
            check_frames(info, p)
            return [str(p)]
        raise bad_image(p, "is a single-frame DICOM image, not a volume; give the folder of its series")

    def read(self, data: Sequence[os.PathLike | str] | os.PathLike | str, **kwargs: Any) -> Any:
        names = [data] if isinstance(data, (str, os.PathLike)) else list(data)
        try:
            files = self.files(names[0])
        except UnreadableError as exc:
            raise bad_image(names[0], f"{exc.reason}: {exc.detail}") from exc
        import itk

        return itk.imread(files if len(files) > 1 else files[0], **{**self.kwargs, **kwargs})


class LoadVolumed(LoadImaged):
    """`LoadImaged` that also reads DICOM (DicomVolumeReader first for folders and DICM files; NIfTI as before)."""

    def __init__(self, keys: Any, series_rules: SeriesRules | dict | None = None, **kwargs: Any) -> None:
        super().__init__(keys, **kwargs)
        self.register(DicomVolumeReader(series_rules))


class CheckVolumed(CheckImaged):
    """`CheckImaged` that takes a DICOM folder or file too: it is read as LoadVolumed reads it, then checked as an array."""

    def __init__(self, keys: Any = "image", spatial_ndim: int = 3, series_rules: SeriesRules | dict | None = None, **kwargs: Any) -> None:
        super().__init__(keys, spatial_ndim, **kwargs)
        self.series_rules = series_rules

    def check(self, path: Any) -> None:
        if not is_dicom_input(path):
            super().check(path)
            return
        reader = DicomVolumeReader(self.series_rules)
        try:
            img = LoadImage(image_only=True, dtype=None)(path, reader=reader)
        except Exception as exc:
            found = find_input_error(exc)
            if found is not None:
                raise found from None
            raise bad_image(path, f"cannot be read as a DICOM volume ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from exc
        check_array(img, str(path), self.spatial_ndim)
