"""GSPS reader: GraphicAnnotationSequence -> rulers, RECIST pairs, outlines, circles, ellipses.

Why GSPS: it is where PACS viewers store the rulers radiologists draw (the seed study's 31,150 lines).
DISPLAY units are fractions of the displayed area, so they are resolved through the
DisplayedAreaSelectionSequence item that applies to the referenced image.
"""

from __future__ import annotations

import numpy as np
import pydicom

from bundle.io.records import Measurement
from bundle.mining.rules.boxes import pair_rulers

SIZELESS = {"POINT", "MULTIPOINT"}


def _displayed_areas(ds: pydicom.Dataset) -> tuple[dict[str, tuple], tuple | None]:
    """Per referenced image (or for all images) the displayed area (TLHC col,row; BRHC col,row), 1-based."""
    per_image: dict[str, tuple] = {}
    default = None
    for item in ds.get("DisplayedAreaSelectionSequence", []):
        tl = [int(v) for v in item.DisplayedAreaTopLeftHandCorner]
        br = [int(v) for v in item.DisplayedAreaBottomRightHandCorner]
        refs = item.get("ReferencedImageSequence")
        if refs:
            for r in refs:
                per_image[str(r.ReferencedSOPInstanceUID)] = (tl, br)
        else:
            default = (tl, br)
    return per_image, default


def display_to_pixel(points: np.ndarray, area: tuple) -> np.ndarray:
    """DISPLAY (0..1 of the displayed area) -> PIXEL coordinates (origin at the TLHC of the TLHC pixel)."""
    tl, br = np.asarray(area[0], dtype=np.float64), np.asarray(area[1], dtype=np.float64)
    return (tl - 1) + points * (br - tl + 1)


def _referenced_images(ds: pydicom.Dataset, ann: pydicom.Dataset) -> list[tuple[str, int, str]]:
    """(SOP Instance UID, frame, series UID) the annotation applies to; all referenced images when absent.

    Frame 0 = no ReferencedFrameNumber: every frame of a multi-frame image, frame 1 of a single-frame one.
    """
    series_of: dict[str, str] = {}
    all_refs = []
    for s in ds.get("ReferencedSeriesSequence", []):
        for r in s.get("ReferencedImageSequence", []):
            series_of[str(r.ReferencedSOPInstanceUID)] = str(s.SeriesInstanceUID)
            all_refs.append(r)
    refs = ann.get("ReferencedImageSequence") or all_refs
    out = []
    for r in refs:
        uid = str(r.ReferencedSOPInstanceUID)
        frames = r.get("ReferencedFrameNumber")
        frames = (
            [int(f) for f in (frames if isinstance(frames, list | pydicom.multival.MultiValue) else [frames])]
            if frames not in (None, "")
            else [0]
        )
        for f in frames:
            out.append((uid, f, series_of.get(uid, "")))
    return out


def read_gsps(ds: pydicom.Dataset, source: str) -> list[Measurement]:
    """All measurements of one GSPS, excluded ones included (with their reason)."""
    per_image, default_area = _displayed_areas(ds)
    common = dict(
        reader="gsps",
        source=source,
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        patient_id=str(ds.get("PatientID", "")),
        operator=str(ds.get("ContentCreatorName", "")),
        date=str(ds.get("PresentationCreationDate", ds.get("ContentDate", "")))
        + str(ds.get("PresentationCreationTime", ds.get("ContentTime", ""))),
    )
    out: list[Measurement] = []
    for a_idx, ann in enumerate(ds.get("GraphicAnnotationSequence", []), start=1):
        for sop, frame, series in _referenced_images(ds, ann):
            ref = dict(referenced_sop_instance_uid=sop, referenced_frame=max(frame, 1), referenced_series_uid=series)
            lines, line_items = [], []
            for o_idx, obj in enumerate(ann.get("GraphicObjectSequence", []), start=1):
                item = f"annotation {a_idx} / object {o_idx}"
                gtype = str(obj.get("GraphicType", "")).upper()
                units = str(obj.get("GraphicAnnotationUnits", "PIXEL")).upper()
                data = obj.get("GraphicData")
                m = Measurement(kind="", points=[], item=item, units=units, **common, **ref)
                m.extra["frame_unspecified"] = frame == 0  # the resolver refuses to guess a frame of a multi-frame image
                if data is None or len(data) < 2:
                    out.append(m.exclude("unsupported_graphic", f"{item}: no GraphicData"))
                    continue
                pts = np.asarray([float(v) for v in data], dtype=np.float64).reshape(-1, 2)
                if units == "DISPLAY":
                    area = per_image.get(sop, default_area)
                    if area is None:
                        out.append(m.exclude("unsupported_graphic", f"{item}: DISPLAY units without a displayed area"))
                        continue
                    pts = display_to_pixel(pts, area)
                m.points = np.round(pts, 4).tolist()
                if gtype in SIZELESS:
                    m.kind = gtype.lower()
                    out.append(m.exclude("unsupported_graphic", f"{item}: {gtype} has no size"))
                elif gtype == "POLYLINE" and len(pts) == 2:
                    lines.append(pts)
                    line_items.append(m)
                elif gtype in ("POLYLINE", "INTERPOLATED") and len(pts) > 2:
                    m.kind = "polyline"
                    out.append(m)
                elif gtype == "CIRCLE" and len(pts) == 2:
                    m.kind = "circle"
                    out.append(m)
                elif gtype == "ELLIPSE" and len(pts) == 4:
                    m.kind = "ellipse"
                    out.append(m)
                else:
                    m.kind = gtype.lower()
                    out.append(m.exclude("unsupported_graphic", f"{item}: {gtype} with {len(pts)} points"))
            for group in pair_rulers(lines):
                m = line_items[group[0]]
                if len(group) == 2:
                    m.kind = "recist"
                    m.points = np.round(np.vstack([lines[group[0]], lines[group[1]]]), 4).tolist()
                    m.item = f"{m.item} + {line_items[group[1]].item.split(' / ')[-1]}"
                else:
                    m.kind = "ruler"
                out.append(m)
    if not out:
        out.append(Measurement(kind="", points=[], **common).exclude("unsupported_object", "GSPS without graphic objects"))
    return out
