"""Each mined series converted once, as a volume with its mined boxes on their slices (the whole-series datalist).

Why: the model is used on whole volumes (MONAI Label, the Deploy app), so it must also learn from the slices
nobody measured: training samples any slice of the series, the measured ones carrying their boxes. A mined
box on key slice k becomes the 3D box [x0, y0, k, x1, y1, k + 1] (array coordinates, max exclusive) of the
series volume; its `z_half_extent_slices` says how far the lesion reaches beyond the key slice (training
treats that reach as an ignore region, not as background).

The volume's array axes are those of the key-slice files (x = DICOM column, y = row, z = slice order along
the plane normal), so a key-slice box keeps its x, y coordinates.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
from functools import lru_cache, partial
from pathlib import Path

import nibabel as nib
import numpy as np

from bundle.datalist.schema import PER_BOX, DatalistItem
from bundle.io.dicom import read_dataset
from bundle.io.frames import frame_view
from bundle.io.nifti import save_nifti, slice_array
from bundle.io.records import FileIssue, ImageInfo
from bundle.mining.fast_pixels import plain_plane
from bundle.mining.items import safe_name
from bundle.pacs.source import Source, pool_map

log = logging.getLogger("bundle.mining")
LOCAL_KINDS = frozenset({"folder", "dimse"})  # sources that read files on this machine: volumes in worker processes


class NotAVolume(ValueError):
    """A series whose images do not stack into one volume (mixed sizes, orientations, spacings or frames)."""


def _normal(info: ImageInfo) -> np.ndarray | None:
    if not info.orientation or len(info.orientation) != 6:
        return None
    return _cross(tuple(info.orientation))


@lru_cache(maxsize=4096)
def _cross(orientation: tuple[float, ...]) -> np.ndarray:
    """The plane normal, once per distinct orientation (a series shares one): read-only, as it is shared."""
    n = np.cross(np.asarray(orientation[:3]), np.asarray(orientation[3:]))
    n.flags.writeable = False
    return n


def frame_views(info: ImageInfo) -> list[ImageInfo]:
    """An Enhanced (multi-frame) image as one view per frame, each with its functional groups' plane (bundle/io/frames.py)."""
    planes = info.per_frame or []
    missing = [k + 1 for k, p in enumerate(planes) if p.get("position") is None or p.get("orientation") is None]
    if len(planes) != info.frames or missing:
        raise NotAVolume(f"multi-frame image without a per-frame position and orientation (frames {missing[:5] or 'all'})")
    return [frame_view(info, k) for k in range(1, info.frames + 1)]  # type: ignore[misc]


def order_series(infos: list[ImageInfo]) -> tuple[list[ImageInfo], float]:
    """The series' images in slice order (position along the plane normal, else instance number) and the slice spacing.

    An Enhanced MR series (one multi-frame file) is ordered frame by frame: its frames are the slices."""
    if len(infos) == 1 and infos[0].frames > 1:
        infos = frame_views(infos[0])
    elif any(i.frames > 1 for i in infos):
        raise NotAVolume(f"{len(infos)} images, some multi-frame: each frame is mined as its own slice, the series is not stacked")
    shapes = {(i.rows, i.columns) for i in infos}
    spacings = {tuple(round(v, 4) for v in i.spacing) if i.spacing else None for i in infos}
    if len(shapes) > 1 or len(spacings) > 1 or None in spacings:
        raise NotAVolume(f"images differ in size {sorted(shapes)} or pixel spacing {sorted(map(str, spacings))}")
    normal = _normal(infos[0])
    if normal is not None and all(i.position and _normal(i) is not None and np.allclose(_normal(i), normal, atol=1e-3) for i in infos):
        pos = {(i.sop_instance_uid, i.frame): float(np.dot(normal, i.position)) for i in infos}
        ordered = sorted(infos, key=lambda i: (pos[(i.sop_instance_uid, i.frame)], i.instance_number, i.sop_instance_uid))
        gaps = np.diff([pos[(i.sop_instance_uid, i.frame)] for i in ordered])
        if len(gaps) and (np.any(gaps < 1e-3) or gaps.max() - gaps.min() > 0.01 * max(abs(gaps.mean()), 1e-6) + 1e-3):
            raise NotAVolume(f"slice positions are not evenly spaced (gaps {gaps.min():.3f} to {gaps.max():.3f} mm)")
        return ordered, float(gaps.mean()) if len(gaps) else float(infos[0].slice_thickness or 1.0)
    ordered = sorted(infos, key=lambda i: (i.instance_number, i.sop_instance_uid))
    return ordered, float(infos[0].slice_thickness or 1.0)


def series_path(patient: str, series_uid: str) -> str:
    return f"volumes/{safe_name(patient)}/{safe_name(series_uid)}.nii.gz"


def series_item(items: list[DatalistItem], ordered: list[ImageInfo], dz: float) -> DatalistItem:
    """The key-slice items of one series -> one volume item; per-box fields carried over, boxes on their slices."""
    index = {(i.sop_instance_uid, i.frame or 1): k for k, i in enumerate(ordered)}  # a frame of an Enhanced MR is its slice
    boxes, per_box = [], {name: [] for name in PER_BOX}
    key_slices = []
    for it in items:
        k = index[(it.sop_instance_uid, it.frame or 1)]
        key_slices.append(k)
        for j, b in enumerate(it.box or []):
            boxes.append([b[0], b[1], k, b[2], b[3], k + 1])
            for name in PER_BOX:
                v = getattr(it, name)
                per_box[name].append(v[j] if v is not None else None)
    first = items[0]
    spacing = list(first.spacing or ordered[0].spacing or [1.0, 1.0])[:2] + [round(dz, 4)]
    kept = {n: v for n, v in per_box.items() if any(x is not None for x in v)}
    return DatalistItem(
        image=series_path(first.patient or "", first.series_instance_uid or ""),
        box=boxes,
        label=[lab for it in items for lab in (it.label or [])],
        patient=first.patient,
        split_source=first.split_source,
        study_instance_uid=first.study_instance_uid,
        series_instance_uid=first.series_instance_uid,
        spacing=spacing,
        **kept,
        extra={"key_slices": sorted(set(key_slices)), "n_slices": len(ordered)},
    )


def _plane(raw: bytes) -> np.ndarray:
    """One slice as the key-slice files hold it: the plain-image path (bundle/mining/fast_pixels.py), else pydicom."""
    plane = plain_plane(raw)
    return plane if plane is not None else slice_array(read_dataset(raw))


def write_volume(ordered: list[ImageInfo], source: Source, path: Path, spacing: list[float]) -> None:
    """Stack the slices (same array layout as the key-slice NIfTI files) and write them with a diagonal affine."""
    multi: dict[str, object] = {}  # a multi-frame file is read once for all its frames
    planes = []
    for i in ordered:
        if i.frame:
            ds = multi.get(i.location) or multi.setdefault(i.location, read_dataset(source.read_bytes(i.location)))
            planes.append(slice_array(ds, i.frame))  # type: ignore[arg-type]
        else:
            planes.append(_plane(source.read_bytes(i.location)))
    vol = np.stack(planes, axis=-1)
    aff = np.diag([spacing[0], spacing[1], spacing[2], 1.0])
    if ordered[0].position is not None:
        aff[:3, 3] = ordered[0].position
    path.parent.mkdir(parents=True, exist_ok=True)
    save_nifti(nib.Nifti1Image(vol, aff), path)


def _convert(source: Source, job: tuple[list[ImageInfo], Path, list[float]]) -> FileIssue | None:
    """One series volume; a series that cannot be decoded or written is its issue, never raised (it never stops the others)."""
    try:
        write_volume(job[0], source, job[1], job[2])
    except Exception as exc:  # noqa: BLE001
        return FileIssue(str(job[1]), "series_not_a_volume", f"cannot convert: {type(exc).__name__}: {exc}")
    return None


def _in_processes(source: Source) -> bool:
    """Worker processes for a local source (decoding and compressing are CPU-bound); threads for a network one."""
    if getattr(source, "kind", None) not in LOCAL_KINDS:
        return False
    try:
        pickle.dumps(source)
    except Exception:  # noqa: BLE001 - a source that does not pickle runs in threads
        return False
    return True


def series_volumes(
    datalist: dict[str, list[DatalistItem]],
    images: dict[str, ImageInfo],
    source: Source,
    output_dir: Path,
    workers: int,
    progress: bool,
    convert: bool = True,
    done: Callable[[Path], bool] | None = None,
) -> tuple[dict[str, list[DatalistItem]], list[FileIssue]]:
    """One volume item per mined series, in the key-slice datalist's sections and order; series that do not stack are reported.

    `done(path)` True: the volume is already there (reused by a merge or a resumed run), not converted again."""
    by_series: dict[str, list[ImageInfo]] = {}
    for info in images.values():
        by_series.setdefault(info.series_uid, []).append(info)
    out: dict[str, list[DatalistItem]] = {s: [] for s in datalist}
    issues: list[FileIssue] = []
    jobs: list[tuple[list[ImageInfo], Path, list[float]]] = []
    for section, items in datalist.items():
        groups: dict[str, list[DatalistItem]] = {}
        for it in items:
            groups.setdefault(it.series_instance_uid or "", []).append(it)
        for series_uid, group in groups.items():
            try:
                ordered, dz = order_series(by_series.get(series_uid, []) or [images[group[0].sop_instance_uid]])
            except NotAVolume as exc:
                issues.append(FileIssue(group[0].image, "series_not_a_volume", f"series {series_uid}: {exc}"))
                continue
            item = series_item(group, ordered, dz)
            out[section].append(item)
            jobs.append((ordered, output_dir / item.image, item.spacing or [1.0, 1.0, 1.0]))
    if convert:  # the `workers` pool (0: one per core), one series per task: a series is ~0.1 s of work
        todo = [job for job in jobs if done is None or not done(job[1])]
        processes = _in_processes(source)
        results = pool_map(partial(_convert, source), todo, workers, "series volumes", progress, processes=processes, chunksize=1)
        failed = [i for i in results if i is not None]
        bad = {i.source for i in failed}
        for section in out:
            out[section] = [it for it in out[section] if str(output_dir / it.image) not in bad]
        issues.extend(failed)
    for issue in issues:
        log.warning("not converted to a volume: %s (%s)", issue.source, issue.detail)
    return out, issues
