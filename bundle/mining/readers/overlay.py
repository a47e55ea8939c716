"""Bitmap overlay reader (groups 60xx): closed outlines drawn around a lesion become measurements.

Why: old PACS and modalities burnt reader marks into overlay planes (pydicom-data's
MR-SIEMENS-DICOM-WithOverlays.dcm has a circle around a liver lesion plus the text "Tra" and a framed
"F"). Each 8-connected component is judged: a closed, roundish outline big enough to be a lesion and
with nothing drawn inside it is a measurement; text glyphs, markers and frames around text are rejected
with reason "overlay_glyph".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pydicom

from bundle.io.records import Measurement


@dataclass
class OverlayRules:
    min_outline_mm: float = 5.0  # smaller closed shapes are glyphs (letters such as 'a', 'o')
    min_hole_fraction: float = 0.5  # enclosed area / filled area: an outline, not a filled blob
    max_box_fill: float = 0.95  # filled area / bounding box area: above = an axis-aligned frame


def overlay_groups(ds: pydicom.Dataset) -> list[int]:
    return [
        g
        for g in range(0x6000, 0x6020, 2)
        if (g, 0x3000) in ds and str(ds.get((g, 0x0040), pydicom.DataElement((g, 0x0040), "CS", "G")).value).upper() == "G"
    ]


def read_overlays(ds: pydicom.Dataset, source: str, spacing: list[float] | None, rules: OverlayRules | None = None) -> list[Measurement]:
    """Outlines (kind polyline: the corners of the outline's convex hull, PIXEL coordinates) and rejected glyphs."""
    groups = overlay_groups(ds)
    if not groups:
        return []
    from scipy import ndimage  # only here: most images have no overlay, and scipy was a third of mining's start-up
    from scipy.spatial import ConvexHull

    rules = rules or OverlayRules()
    out: list[Measurement] = []
    sp = np.asarray(spacing if spacing else [1.0, 1.0])
    for group in groups:
        arr = ds.overlay_array(group)
        if arr.ndim == 3:
            arr = arr[0]
        origin = ds.get((group, 0x0050))
        off_r, off_c = (int(origin.value[0]) - 1, int(origin.value[1]) - 1) if origin is not None else (0, 0)
        desc = str(ds.get((group, 0x0022)).value) if (group, 0x0022) in ds else ""
        lab, n = ndimage.label(arr > 0, structure=np.ones((3, 3)))
        filled = [ndimage.binary_fill_holes(lab == i) for i in range(1, n + 1)]
        for i in range(1, n + 1):
            comp = lab == i
            rows, cols = np.nonzero(comp)
            m = Measurement(
                kind="polyline",
                points=[],
                reader="overlay",
                source=source,
                sop_instance_uid=str(ds.SOPInstanceUID),
                referenced_sop_instance_uid=str(ds.SOPInstanceUID),
                referenced_series_uid=str(ds.get("SeriesInstanceUID", "")),
                study_uid=str(ds.get("StudyInstanceUID", "")),
                patient_id=str(ds.get("PatientID", "")),
                operator=desc,
                date=str(ds.get("ContentDate", ds.get("StudyDate", ""))) + str(ds.get("ContentTime", "")),
                item=f"overlay {group:04X} component {i}",
            )
            corners = np.concatenate([np.stack([cols + dc, rows + dr], 1) for dc in (0, 1) for dr in (0, 1)]).astype(np.float64) + [
                off_c,
                off_r,
            ]
            hull = corners[ConvexHull(corners).vertices] if len(np.unique(corners, axis=0)) >= 3 else corners
            m.points = np.round(hull, 3).tolist()
            fill = filled[i - 1]
            area, comp_area = int(fill.sum()), int(comp.sum())
            hole = fill & ~comp
            extent_mm = float(((corners.max(0) - corners.min(0)) * sp).max())
            box_area = (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
            others_inside = bool(np.any(hole & (lab > 0) & (lab != i)))
            reasons = []
            if hole.sum() < rules.min_hole_fraction * area:
                reasons.append("not a closed outline")
            if extent_mm < rules.min_outline_mm:
                reasons.append(f"{extent_mm:.1f} mm glyph-sized")
            if area >= rules.max_box_fill * box_area:
                reasons.append("rectangular frame")
            if others_inside:
                reasons.append("encloses other marks (text)")
            m.extra["overlay"] = {"pixels": comp_area, "filled": area, "extent_mm": round(extent_mm, 2)}
            if reasons:
                m.exclude("overlay_glyph", f"{m.item}: " + ", ".join(reasons))
            out.append(m)
    return out
