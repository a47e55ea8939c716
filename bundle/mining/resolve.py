"""Where a measurement meets its image: date range, reference, spacing, series rules, box, size rule, duplicates.

Order of checks for a measurement (the first failing one is its reason): date range, reference found
(and its frame: a multi-frame image is seen through the referenced frame's own geometry), PixelSpacing
present, series rules, size rule, duplicate. Duplicates: on one image (frame) the earliest measurement wins
and later ones overlapping it are merged into its provenance.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from bundle.io.frames import frame_view
from bundle.io.png import PNG_IMAGE
from bundle.io.records import ImageInfo, Measurement
from bundle.mining.rules.boxes import BoxRules, iou, measurement_box, size_rule
from bundle.mining.rules.series import SeriesRules, check_series, normal_of


def _planes(images: dict[str, ImageInfo]) -> Iterator[tuple[ImageInfo, int]]:
    """Every image plane: each frame of a multi-frame image with its own geometry, (image, 1) otherwise."""
    for info in images.values():
        for frame in range(1, (info.frames if info.per_frame else 1) + 1):
            view = frame_view(info, frame)
            if view is not None:
                yield view, frame


class Resolver:
    """Keeps or excludes each measurement against the images the source indexed."""

    def __init__(self, series_rules: SeriesRules, box_rules: BoxRules, date_from: str | None = None, date_to: str | None = None):
        self.series_rules, self.box_rules = series_rules, box_rules
        self.date_from, self.date_to = date_from, date_to

    def _in_date_range(self, date: str) -> bool:
        d = date[:8]
        if not d:
            return self.date_from is None and self.date_to is None
        return (self.date_from is None or d >= self.date_from) and (self.date_to is None or d <= self.date_to)

    def _plane_image(self, m: Measurement, images: dict[str, ImageInfo]) -> ImageInfo | None:
        """SCOORD3D: the image of the frame of reference whose plane holds the points (selected series first)."""
        pts = np.asarray(m.points_3d, dtype=np.float64)
        best = []
        for info, frame in _planes(images):
            if (
                info.frame_of_reference_uid != m.frame_of_reference_uid
                or info.orientation is None
                or info.position is None
                or info.spacing is None
            ):
                continue
            n = normal_of(info.orientation)
            dist = np.abs((pts - np.asarray(info.position)) @ n)
            tol = (info.slice_thickness or 1.0) / 2
            if dist.max() <= tol:
                best.append((check_series(info, self.series_rules) is not None, float(dist.max()), info.location, frame, info))
        if not best:
            return None
        *_, frame, info = sorted(best, key=lambda t: t[:4])[0]
        o = np.asarray(info.orientation)
        rel = pts - np.asarray(info.position)
        col = rel @ o[:3] / info.spacing[0] + 0.5
        row = rel @ o[3:] / info.spacing[1] + 0.5
        m.points = np.round(np.stack([col, row], 1), 4).tolist()
        m.referenced_sop_instance_uid = info.sop_instance_uid
        m.referenced_frame = frame
        return info

    def resolve(self, ms: list[Measurement], images: dict[str, ImageInfo]) -> None:
        """Every pending measurement kept or excluded with its reason; then duplicates merged."""
        for m in ms:
            if m.status == "pending":
                self._resolve_one(m, images)
        self._merge_duplicates(ms)

    def _resolve_one(self, m: Measurement, images: dict[str, ImageInfo]) -> None:
        """The checks in order; the first that fails is the measurement's reason."""
        if not self._in_date_range(m.extra.get("study_date", "") or m.date):
            m.exclude("out_of_date_range", f"study date {m.extra.get('study_date')}")
            return
        if m.units == "SCOORD3D":
            info = self._plane_image(m, images)
            if info is None:
                m.exclude("no_image_plane", f"{m.item}: frame of reference {m.frame_of_reference_uid}")
                return
        info = images.get(m.referenced_sop_instance_uid)
        if info is None:
            m.exclude("reference_not_found", f"{m.item}: image {m.referenced_sop_instance_uid}")
            return
        if info.frames > 1 and m.extra.get("frame_unspecified"):
            m.exclude("reference_not_found", f"{m.item}: no frame number for {info.location} ({info.frames} frames): frame never guessed")
            return
        image, info = info, frame_view(info, m.referenced_frame)  # multi-frame: the frame's own spacing and plane
        if info is None:
            m.exclude("reference_not_found", f"{m.item}: frame {m.referenced_frame} of {image.location} ({image.frames} frames)")
            return
        m.referenced_series_uid = info.series_uid
        if info.spacing is None:
            m.exclude("missing_pixel_spacing", f"{m.item}: image {info.location} has no PixelSpacing")
            return
        m.spacing = info.spacing
        # DeepLesion key slices carry no series attributes (modality, description, orientation): no series rules
        failed = None if info.sop_class_uid == PNG_IMAGE else check_series(info, self.series_rules)
        if failed:
            m.exclude(failed[0], f"{m.item}: {failed[1]}")
            return
        m.box, length = measurement_box(m, self.box_rules, shape=(info.columns, info.rows))
        m.long_mm = round(length, 3)
        reason = size_rule(length, self.box_rules)
        if reason:
            m.exclude(reason, f"{m.item}: long axis {length:.1f} mm outside [{self.box_rules.min_long_mm}, {self.box_rules.max_long_mm}]")
            return
        m.status = "kept"
        m.rule = f"{m.kind} -> box ({self.box_rules.recist_rule if m.kind == 'recist' else m.kind} rule), {self.box_rules.min_long_mm} <= {length:.1f} mm <= {self.box_rules.max_long_mm}"

    def _merge_duplicates(self, ms: list[Measurement]) -> None:
        """On one image, the earliest measurement wins; later ones overlapping it are merged away."""
        by_image: dict[tuple[str, int], list[Measurement]] = {}
        for m in ms:
            if m.status == "kept":
                by_image.setdefault((m.referenced_sop_instance_uid, m.referenced_frame), []).append(m)
        for group in by_image.values():
            kept: list[Measurement] = []
            for m in sorted(group, key=lambda x: (x.date, x.sop_instance_uid, x.extra.get("row", 0), x.item)):
                twin = next((k for k in kept if iou(k.box, m.box) >= self.box_rules.duplicate_iou), None)
                if twin is not None:
                    m.exclude("duplicate", f"{m.item}: IoU {iou(twin.box, m.box):.2f} with {twin.source} {twin.item} (earlier)")
                    twin.extra.setdefault("merged", []).append(
                        {"source": m.source, "sop_instance_uid": m.sop_instance_uid, "operator": m.operator, "date": m.date}
                    )
                else:
                    kept.append(m)
