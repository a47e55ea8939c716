"""DICOM SR TID 1500 reader (through highdicom): planar/volumetric measurement groups -> measurements.

Why highdicom: it knows the template tree (TID 1500 -> 1410/1411 -> SCOORD/SCOORD3D) so we read
content, not raw nesting. Groups that point at a segmentation are reported as not convertible.
Why a direct walk first: highdicom builds and deep-copies the whole content tree, which made the demo
export's 52 reports the largest single cost of a mining run's read phase. The common shape (a person observer, TID 1410 planar groups
with one SCOORD or SCOORD3D image region, NUM measurements) is read straight from the pydicom tree; a report
with anything else in it (volumetric groups, segmentation references, groups without a template id, device
observers, unknown items) goes through highdicom, whose reading the walk must equal (tests/mining/test_sr_reader.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pydicom

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


@dataclass
class Region:
    """One image region as both readers see it: graphic type, points, and what they are on."""

    graphic_type: str
    points: np.ndarray
    frame_of_reference_uid: str | None = None  # SCOORD3D: world coordinates in this frame of reference
    sop_instance_uid: str = ""  # SCOORD: the image the points are on
    frames: list[int] | None = None

    @classmethod
    def of(cls, roi) -> Region:
        """highdicom's ImageRegion / ImageRegion3D."""
        import highdicom as hd

        gtype = str(roi.graphic_type.value if hasattr(roi.graphic_type, "value") else roi.graphic_type).upper()
        pts = np.asarray(roi.value, dtype=np.float64)
        if isinstance(roi, hd.sr.ImageRegion3D):
            return cls(gtype, pts, frame_of_reference_uid=str(roi.frame_of_reference_uid))
        src = roi.ContentSequence[0]
        frames = getattr(src, "referenced_frame_numbers", None)
        return cls(gtype, pts, sop_instance_uid=str(src.referenced_sop_instance_uid), frames=[int(f) for f in frames] if frames else None)


def _geometry(m: Measurement, region: Region) -> Measurement:
    gtype, pts = region.graphic_type, region.points
    kind = _KIND.get(gtype, gtype.lower())
    if region.frame_of_reference_uid is not None:
        m.points_3d = np.round(pts, 4).tolist()
        m.units = "SCOORD3D"
        m.frame_of_reference_uid = region.frame_of_reference_uid
    else:
        m.points = np.round(pts, 4).tolist()
        m.referenced_sop_instance_uid = region.sop_instance_uid
        frames = region.frames
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
    walked = walk_report(ds)
    if walked is not None:
        common["operator"], groups = walked
        out = []
        for g_idx, (measurements, region) in enumerate(groups, start=1):
            m = Measurement(kind="", points=[], item=f"planar group {g_idx}", **common)
            m.extra["measurements"] = measurements
            out.append(_geometry(m, region))
        return out
    return _read_with_highdicom(ds, common)


def _read_with_highdicom(ds: pydicom.Dataset, common: dict) -> list[Measurement]:
    """Every report the direct walk leaves alone (highdicom and its code dictionaries are imported here, when one comes)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

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
            out.append(_geometry(m, Region.of(group.roi)))
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
            out.append(_geometry(mm, Region.of(roi)))
    return out


# The direct walk. Codes (DCM unless said): the structure TID 1500 -> 126010 -> 125007 (TID 1410) groups.
_OBS_TYPE, _PERSON, _PERSON_NAME = "121005", "121006", "121008"
_IMAGING_MEASUREMENTS, _MEASUREMENT_GROUP, _IMAGE_REGION = "126010", "125007", "111030"
# Group items the walk knows carry no geometry: tracking identifier and UID, finding, finding site (SCT)
_PLAIN_GROUP_ITEMS = {("DCM", "112039"), ("DCM", "112040"), ("DCM", "121071"), ("SCT", "363698007"), ("SRT", "G-C0E3")}


_GRAPHIC_TYPES = {
    "SCOORD": ("POINT", "MULTIPOINT", "POLYLINE", "CIRCLE", "ELLIPSE"),
    "SCOORD3D": ("POINT", "MULTIPOINT", "POLYLINE", "POLYGON", "ELLIPSE", "ELLIPSOID"),
}
_WALKED_CLASSES = ("1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.34")  # Comprehensive SR, Comprehensive 3D SR


class _Unusual(Exception):
    """Something the walk does not read; highdicom reads the report instead."""


def _concept(item: pydicom.Dataset) -> tuple[str, str]:
    seq = item.get("ConceptNameCodeSequence")
    if not seq or len(seq) != 1:
        raise _Unusual
    return str(seq[0].get("CodingSchemeDesignator", "")), str(seq[0].get("CodeValue", ""))


def _observer_name(root: pydicom.Dataset) -> str:
    """The first person observer's name, as ``_observer`` reads it; other observer kinds are unusual."""
    name = ""
    for item in root.get("ContentSequence", []):
        if item.get("RelationshipType") != "HAS OBS CONTEXT":
            continue
        scheme, code = _concept(item)
        if (scheme, code) == ("DCM", _OBS_TYPE):
            if item.get("ValueType") != "CODE" or str(item.ConceptCodeSequence[0].CodeValue) != _PERSON:
                raise _Unusual
        elif (scheme, code) == ("DCM", _PERSON_NAME) and not name:
            name = str(item.PersonName)
    return name


def _region(item: pydicom.Dataset) -> Region:
    if str(item.get("GraphicType", "")) not in _GRAPHIC_TYPES.get(item.get("ValueType"), ()):
        raise _Unusual  # highdicom refuses a graphic type its enums lack
    if item.ValueType == "SCOORD3D":
        return Region(
            str(item.GraphicType),
            np.asarray(item.GraphicData, dtype=np.float64).reshape(-1, 3),
            str(item.ReferencedFrameOfReferenceUID),
        )
    if item.ValueType != "SCOORD" or len(item.get("ContentSequence", [])) != 1:
        raise _Unusual
    src = item.ContentSequence[0]
    if src.get("ValueType") != "IMAGE" or src.get("RelationshipType") != "SELECTED FROM" or len(src.get("ReferencedSOPSequence", [])) != 1:
        raise _Unusual
    ref = src.ReferencedSOPSequence[0]
    frames = ref.get("ReferencedFrameNumber")
    if frames is not None:  # as highdicom reads it: "" is an error there, and here (int(""))
        frames = [int(f) for f in frames] if isinstance(frames, pydicom.multival.MultiValue) else [int(frames)]
    return Region(
        str(item.GraphicType),  # already one of _GRAPHIC_TYPES, upper case
        np.asarray(item.GraphicData, dtype=np.float64).reshape(-1, 2),
        sop_instance_uid=str(ref.ReferencedSOPInstanceUID),
        frames=frames,
    )


def _planar_group(group: pydicom.Dataset) -> tuple[dict[str, float], Region]:
    templates = group.get("ContentTemplateSequence")
    if not templates or str(templates[0].get("TemplateIdentifier", "")) != "1410":
        raise _Unusual
    measurements: dict[str, float] = {}
    regions = []
    for item in group.get("ContentSequence", []):
        concept, vtype = _concept(item), item.get("ValueType")
        if vtype == "NUM" and item.get("RelationshipType") == "CONTAINS" and len(item.get("MeasuredValueSequence", [])) == 1:
            measurements[str(item.ConceptNameCodeSequence[0].CodeMeaning)] = float(item.MeasuredValueSequence[0].NumericValue)
        elif concept == ("DCM", _IMAGE_REGION):
            regions.append(_region(item))
        elif concept not in _PLAIN_GROUP_ITEMS:
            raise _Unusual
    if len(regions) != 1:
        raise _Unusual
    return measurements, regions[0]


def walk_report(ds: pydicom.Dataset) -> tuple[str, list[tuple[dict[str, float], Region]]] | None:
    """(observer name, planar groups) straight from the tree, or None where highdicom must read the report."""
    if str(ds.get("SOPClassUID", "")) not in _WALKED_CLASSES:
        return None
    try:
        containers = [
            it
            for it in ds.get("ContentSequence", [])
            if it.get("ValueType") == "CONTAINER" and _concept(it) == ("DCM", _IMAGING_MEASUREMENTS)
        ]
        if len(containers) != 1:
            return None
        groups = []
        for item in containers[0].get("ContentSequence", []):
            if item.get("ValueType") != "CONTAINER" or _concept(item) != ("DCM", _MEASUREMENT_GROUP):
                raise _Unusual
            groups.append(_planar_group(item))
        return _observer_name(ds), groups
    except (_Unusual, AttributeError, KeyError, IndexError, TypeError, ValueError):
        return None
