"""DICOM SR TID 1500 reader (through highdicom): planar/volumetric measurement groups -> measurements.

Why highdicom: it knows the template tree (TID 1500 -> 1410/1411 -> SCOORD/SCOORD3D) so we read
content, not raw nesting. Groups that point at a segmentation are reported as not convertible.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from bundle.io.records import Measurement

TID1500 = "126000"  # Imaging Measurement Report
_KIND = {"POLYLINE": "polyline", "ELLIPSE": "ellipse", "CIRCLE": "circle", "POINT": "point", "MULTIPOINT": "multipoint"}


def is_measurement_report(ds: pydicom.Dataset) -> bool:
    seq = ds.get("ConceptNameCodeSequence")
    return bool(seq) and str(seq[0].CodeValue) == TID1500


def _observer(report) -> str:
    try:
        for ctx in report.get_observer_contexts():
            attrs = ctx.observer_identifying_attributes
            if hasattr(attrs, "name"):
                return str(attrs.name)
    except Exception:  # noqa: BLE001 - provenance is best effort, geometry is not
        return ""
    return ""


def _geometry(m: Measurement, roi) -> Measurement:
    gtype = str(roi.graphic_type.value if hasattr(roi.graphic_type, "value") else roi.graphic_type).upper()
    pts = np.asarray(roi.value, dtype=np.float64)
    kind = _KIND.get(gtype, gtype.lower())
    if isinstance(roi, hd.sr.ImageRegion3D):
        m.points_3d = np.round(pts, 4).tolist()
        m.units = "SCOORD3D"
        m.frame_of_reference_uid = str(roi.frame_of_reference_uid)
    else:
        m.points = np.round(pts, 4).tolist()
        src = roi.ContentSequence[0]
        m.referenced_sop_instance_uid = str(src.referenced_sop_instance_uid)
        frames = getattr(src, "referenced_frame_numbers", None)
        m.referenced_frame = int(frames[0]) if frames else 1
        m.extra["frame_unspecified"] = not frames  # the resolver refuses to guess a frame of a multi-frame image
    if kind == "polyline" and len(pts) == 2:
        kind = "ruler"
    m.kind = kind
    if kind in ("point", "multipoint") or (kind == "ellipse" and len(pts) != 4) or (kind == "circle" and len(pts) != 2):
        return m.exclude("unsupported_graphic", f"{m.item}: {gtype} with {len(pts)} points")
    return m


def read_sr(ds: pydicom.Dataset, source: str) -> list[Measurement]:
    """Every measurement group of a TID 1500 report, as measurements or reported exclusions."""
    common = dict(
        reader="sr",
        source=source,
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        patient_id=str(ds.get("PatientID", "")),
        date=str(ds.get("ContentDate", "")) + str(ds.get("ContentTime", "")),
    )
    if not is_measurement_report(ds):
        return [Measurement(kind="", points=[], **common).exclude("unsupported_object", "SR is not a TID 1500 measurement report")]
    sr = (
        hd.sr.Comprehensive3DSR.from_dataset(ds, copy=False)
        if ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
        else hd.sr.ComprehensiveSR.from_dataset(ds, copy=False)
    )
    report = sr.content
    common["operator"] = _observer(report)
    out: list[Measurement] = []
    for g_idx, group in enumerate(report.get_planar_roi_measurement_groups(), start=1):
        m = Measurement(kind="", points=[], item=f"planar group {g_idx}", **common)
        m.extra["measurements"] = {str(x.name.meaning): float(x.value) for x in group.get_measurements()}
        if group.reference_type == codes.DCM.ReferencedSegmentationFrame:
            out.append(m.exclude("segmentation_reference", f"{m.item}: references a segmentation frame"))
        elif group.roi is None:
            out.append(m.exclude("no_coordinates", f"{m.item}: no image region"))
        else:
            out.append(_geometry(m, group.roi))
    for g_idx, group in enumerate(report.get_volumetric_roi_measurement_groups(), start=1):
        m = Measurement(kind="", points=[], item=f"volumetric group {g_idx}", **common)
        m.extra["measurements"] = {str(x.name.meaning): float(x.value) for x in group.get_measurements()}
        if group.reference_type == codes.DCM.ReferencedSegment:
            out.append(m.exclude("segmentation_reference", f"{m.item}: references a segment"))
            continue
        regions = group.roi if isinstance(group.roi, list) else ([group.roi] if group.roi is not None else [])
        if not regions:
            out.append(m.exclude("no_coordinates", f"{m.item}: no image regions"))
        for r_idx, roi in enumerate(regions, start=1):
            mm = Measurement(kind="", points=[], item=f"{m.item} / region {r_idx}", **common)
            out.append(_geometry(mm, roi))
    return out
