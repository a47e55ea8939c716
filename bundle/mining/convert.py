"""Mining's output step: each datalist image converted once, from the source, to the NIfTI slice training reads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bundle.datalist.schema import DatalistItem
from bundle.io.dicom import read_dataset
from bundle.io.nifti import write_dicom_slice, write_png_slice
from bundle.io.png import PNG_IMAGE
from bundle.io.records import ImageInfo
from bundle.pacs.source import Source, progress_bar


def convert_items(
    items: list[DatalistItem], images: dict[str, ImageInfo], source: Source, output_dir: Path, workers: int, progress: bool
) -> None:
    """Threads: decoding releases the GIL in the codecs and a DICOMweb source waits on the network."""

    def one(item: DatalistItem) -> None:
        info = images[item.sop_instance_uid]
        raw = source.read_bytes(info.location)
        if info.sop_class_uid == PNG_IMAGE:
            write_png_slice(raw, output_dir / item.image, info.spacing, info.slice_thickness)
            return
        write_dicom_slice(read_dataset(raw), output_dir / item.image, item.spacing, item.frame)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(progress_bar(pool.map(one, items), len(items), "converting", progress))
