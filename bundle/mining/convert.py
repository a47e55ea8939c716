"""Mining's output step: each datalist image converted once, from the source, to the NIfTI slice training reads.

Why per-item isolation: a run of thousands must not die on one image whose pixel stream is damaged or
whose transfer syntax has no decoder. Such an image is reported (file and reason), its item leaves the
datalist, its measurements are excluded with `image_not_converted`, and everything else is converted.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bundle.datalist.schema import DatalistItem
from bundle.io.dicom import UnreadableError, read_dataset
from bundle.io.nifti import write_dicom_slice, write_png_slice
from bundle.io.png import PNG_IMAGE
from bundle.io.records import FileIssue, ImageInfo, Measurement
from bundle.pacs.source import Source, progress_bar


def _convert_one(item: DatalistItem, info: ImageInfo, source: Source, output_dir: Path) -> FileIssue | None:
    """Convert one item; a failure comes back as the image file's issue, never raised."""
    try:
        raw = source.read_bytes(info.location)
        if info.sop_class_uid == PNG_IMAGE:
            write_png_slice(raw, output_dir / item.image, info.spacing, info.slice_thickness)
        else:
            write_dicom_slice(
                read_dataset(raw), output_dir / item.image, item.spacing or info.spacing, item.frame or 1
            )  # the frame's spacing
    except UnreadableError as exc:
        return FileIssue(info.location, exc.reason, exc.detail, info.sop_instance_uid)
    except OSError as exc:
        return FileIssue(info.location, "conversion_failed", f"{type(exc).__name__}: {exc}", info.sop_instance_uid)
    except Exception as exc:  # noqa: BLE001 - one image never takes the run down
        return FileIssue(info.location, "conversion_failed", f"{type(exc).__name__}: {exc}", info.sop_instance_uid)
    return None


def convert_items(
    items: list[DatalistItem], images: dict[str, ImageInfo], source: Source, output_dir: Path, workers: int, progress: bool
) -> list[tuple[DatalistItem, FileIssue]]:
    """Threads: decoding releases the GIL in the codecs and a DICOMweb source waits on the network.

    Returns the items that could not be converted, each with its issue (in item order).
    """

    def one(item: DatalistItem) -> FileIssue | None:
        return _convert_one(item, images[item.sop_instance_uid], source, output_dir)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        issues = list(progress_bar(pool.map(one, items), len(items), "converting", progress))
    return [(it, issue) for it, issue in zip(items, issues) if issue is not None]


def convert_datalist(
    datalist: dict[str, list[DatalistItem]],
    ms: list[Measurement],
    images: dict[str, ImageInfo],
    source: Source,
    output_dir: Path,
    workers: int,
    progress: bool,
    done: Callable[[Path], bool] | None = None,
) -> list[FileIssue]:
    """Convert every datalist item; drop the ones that failed and exclude their measurements. Returns the issues.

    done(path): True when the item's output already exists (a resumed or merged run), so it is not converted again.
    """
    items = [it for v in datalist.values() for it in v if done is None or not done(output_dir / it.image)]
    failed = convert_items(items, images, source, output_dir, workers, progress)
    if not failed:
        return []
    bad = {(it.sop_instance_uid, it.frame or 1): issue for it, issue in failed}
    for split in datalist:
        datalist[split] = [it for it in datalist[split] if (it.sop_instance_uid, it.frame or 1) not in bad]
    for m in ms:
        issue = bad.get((m.referenced_sop_instance_uid, m.referenced_frame or 1))
        if m.status == "kept" and issue is not None:
            m.exclude("image_not_converted", f"{issue.source}: {issue.reason}: {issue.detail}")
    return [issue for _, issue in failed]
