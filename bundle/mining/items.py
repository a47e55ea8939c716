"""Where kept measurements become datalist items: one item per referenced image (frame), boxes in a stable order."""

from __future__ import annotations

import re

from bundle.datalist.schema import DatalistItem
from bundle.io.frames import frame_view
from bundle.io.png import PNG_IMAGE
from bundle.io.records import ImageInfo, Measurement


def safe_name(name: str) -> str:
    """A path component from a UID or pseudonym."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "unknown"


def image_path(info: ImageInfo, frame: int) -> str:
    """Where the converted slice of an image (frame) goes, relative to the datalist."""
    sop = info.sop_instance_uid
    stem = safe_name(sop.removesuffix(".png")) if info.sop_class_uid == PNG_IMAGE else safe_name(sop)
    return f"images/{safe_name(info.patient_id)}/{stem}" + (f"_f{frame}" if info.frames > 1 else "") + ".nii.gz"


def provenance(m: Measurement) -> dict:
    """Everything DESIGN.md §4 asks a box to remember: source object, reader, date, the rule that kept it."""
    return {
        "source": m.source,
        "sop_instance_uid": m.sop_instance_uid,
        "referenced_sop_instance_uid": m.referenced_sop_instance_uid,
        "referenced_frame": m.referenced_frame,
        "reader": m.reader,
        "operator": m.operator,
        "date": m.date,
        "kind": m.kind,
        "item": m.item,
        "points": m.points,
        "rule": m.rule,
        "merged": m.extra.get("merged", []),
        **m.extra.get("provenance", {}),
    }


def group_by_image(kept: list[Measurement]) -> dict[tuple[str, int], list[Measurement]]:
    per_image: dict[tuple[str, int], list[Measurement]] = {}
    for m in kept:
        per_image.setdefault((m.referenced_sop_instance_uid, m.referenced_frame), []).append(m)
    return per_image


def build_item(info: ImageInfo, frame: int, group: list[Measurement], split_source: str) -> DatalistItem:
    group.sort(key=lambda x: (x.box[0], x.box[1], x.source, x.item))
    return DatalistItem(
        image=image_path(info, frame),
        box=[m.box for m in group],
        label=[0 for _ in group],
        patient=info.patient_id,
        split_source=split_source,
        study_instance_uid=info.study_uid,
        series_instance_uid=info.series_uid,
        sop_instance_uid=info.sop_instance_uid,
        frame=frame,
        instance_number=info.instance_number,
        spacing=info.spacing,
        long_mm=[m.long_mm for m in group],
        z_half_extent_slices=[round(m.long_mm / 2 / info.slice_thickness, 3) if info.slice_thickness else None for m in group],
        provenance=[provenance(m) for m in group],
    )


def build_items(
    per_image: dict[tuple[str, int], list[Measurement]], images: dict[str, ImageInfo], origin: dict[str, str]
) -> list[DatalistItem]:
    """Items sorted by patient, series, instance number, SOP instance, frame: the same order on every run."""
    items = []
    for (sop, frame), group in per_image.items():
        info = frame_view(images[sop], frame) or images[sop]  # the frame's own spacing and thickness
        items.append(build_item(info, frame, group, origin[info.patient_id]))
    items.sort(key=lambda it: (it.patient, it.series_instance_uid, it.instance_number, it.sop_instance_uid, it.frame))
    return items
