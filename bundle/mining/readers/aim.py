"""AIM 4.0 XML reader: ImageAnnotationCollection markups -> rulers, RECIST pairs, outlines, circles, ellipses.

Why: AIM (Annotation and Image Markup, caBIG/NCI; ePAD, ClearCanvas) is where some reading tools keep
the lines radiologists draw, outside DICOM. Structure used (AIM 4.0, namespace
`gme://caCORE.caCORE/4.4/edu.northwestern.radiology.AIM`, element names are roles, not types):

    ImageAnnotationCollection / user / name@value, dateTime@value, uniqueIdentifier@root
      imageAnnotations / ImageAnnotation / uniqueIdentifier@root, dateTime@value, name@value
        markupEntityCollection / MarkupEntity@xsi:type = TwoDimensionMultiPoint | TwoDimensionPolyline |
                                 TwoDimensionCircle | TwoDimensionEllipse | TwoDimensionPoint ...
          uniqueIdentifier@root, imageReferenceUid@root (SOP Instance UID), referencedFrameNumber@value
          twoDimensionSpatialCoordinateCollection / TwoDimensionSpatialCoordinate /
                                 coordinateIndex@value, x@value, y@value
        imageReferenceEntityCollection / ImageReferenceEntity / imageStudy / startDate@value

x, y are read as DICOM PIXEL coordinates (column, row; 0,0 = top-left corner of the top-left pixel), the
convention of the DICOM SR SCOORD values AIM converters copy into them unchanged. Two-point MultiPoint
markups are rulers; perpendicular crossing rulers of one annotation on one image pair into RECIST (as in
GSPS); more points give an outline. Elements are matched by local name, so a missing or different
namespace prefix does not matter.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

from bundle.io.dicom import UnreadableError
from bundle.io.records import Measurement
from bundle.mining.rules.boxes import pair_rulers

AIM_NS = "gme://caCORE.caCORE/4.4/edu.northwestern.radiology.AIM"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"


def looks_like_xml(raw: bytes) -> bool:
    """An XML document (optionally with a UTF-8 BOM), not a DICOM file: worth handing to the AIM reader."""
    head = raw[:512].lstrip(b"\xef\xbb\xbf").lstrip()
    return head.startswith(b"<") and not (len(raw) >= 132 and raw[128:132] == b"DICM")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(el: ET.Element | None, name: str) -> ET.Element | None:
    if el is None:
        return None
    return next((c for c in el if _local(c.tag) == name), None)


def _children(el: ET.Element | None, name: str) -> list[ET.Element]:
    return [] if el is None else [c for c in el if _local(c.tag) == name]


def _attr(el: ET.Element | None, name: str, attr: str = "value") -> str:
    c = _child(el, name)
    return (c.get(attr) or "").strip() if c is not None else ""


def _date(text: str) -> str:
    """AIM dateTime (xs:dateTime '2021-03-04T10:20:30' or DICOM-style '20210304102030') -> YYYYMMDDHHMMSS."""
    return "".join(ch for ch in text if ch.isdigit())[:14]


def _coords(markup: ET.Element) -> np.ndarray:
    pts = []
    for c in _children(_child(markup, "twoDimensionSpatialCoordinateCollection"), "TwoDimensionSpatialCoordinate"):
        idx = _attr(c, "coordinateIndex")
        pts.append((int(idx) if idx else len(pts), float(_attr(c, "x")), float(_attr(c, "y"))))
    pts.sort(key=lambda t: t[0])
    return np.asarray([[x, y] for _, x, y in pts], dtype=np.float64).reshape(-1, 2)


def read_aim(raw: bytes, source: str) -> list[Measurement]:
    """All measurements of one AIM document; raises UnreadableError for malformed or non-AIM XML."""
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise UnreadableError("malformed_xml", f"XML parse error: {exc}") from exc
    if _local(root.tag) != "ImageAnnotationCollection":
        raise UnreadableError("unsupported_object", f"XML root <{_local(root.tag)}> is not an AIM 4 ImageAnnotationCollection")
    user = _attr(_child(root, "user"), "name") or _attr(_child(root, "user"), "loginName")
    coll_date = _date(_attr(root, "dateTime"))
    collection_uid = _attr(root, "uniqueIdentifier", "root")
    out: list[Measurement] = []
    for a_idx, ann in enumerate(_children(_child(root, "imageAnnotations"), "ImageAnnotation"), start=1):
        ann_uid = _attr(ann, "uniqueIdentifier", "root") or collection_uid
        date = _date(_attr(ann, "dateTime")) or coll_date
        study_date, study_uid = "", ""
        for ref in _children(_child(ann, "imageReferenceEntityCollection"), "ImageReferenceEntity"):
            study = _child(ref, "imageStudy")
            study_date = study_date or _date(_attr(study, "startDate"))[:8]
            study_uid = study_uid or _attr(study, "instanceUid", "root")
        common = dict(reader="aim", source=source, sop_instance_uid=ann_uid, operator=user, date=date, study_uid=study_uid)
        # per referenced image (frame): two-point lines wait for RECIST pairing, the rest go out as they are
        lines: dict[tuple[str, int], list[tuple[np.ndarray, Measurement]]] = {}
        for o_idx, mk in enumerate(_children(_child(ann, "markupEntityCollection"), "MarkupEntity"), start=1):
            xsi = (mk.get(XSI_TYPE) or "").split(":")[-1]
            item = f"annotation {a_idx} / markup {o_idx}"
            frame_txt = _attr(mk, "referencedFrameNumber")
            m = Measurement(
                kind=xsi.removeprefix("TwoDimension").lower() or "unknown",
                points=[],
                item=item,
                referenced_sop_instance_uid=_attr(mk, "imageReferenceUid", "root"),
                referenced_frame=int(frame_txt) if frame_txt else 1,
                **common,
            )
            m.extra = {"study_date": study_date or date[:8], "markup_uid": _attr(mk, "uniqueIdentifier", "root")}
            try:
                pts = _coords(mk)
            except ValueError as exc:
                out.append(m.exclude("no_coordinates", f"{item}: coordinate is not a number ({exc})"))
                continue
            m.points = np.round(pts, 4).tolist()
            if not m.referenced_sop_instance_uid:
                out.append(m.exclude("reference_not_found", f"{item}: {xsi} without imageReferenceUid"))
            elif len(pts) == 0:
                out.append(m.exclude("no_coordinates", f"{item}: {xsi} without twoDimensionSpatialCoordinate"))
            elif xsi == "TwoDimensionMultiPoint" and len(pts) == 2:
                lines.setdefault((m.referenced_sop_instance_uid, m.referenced_frame), []).append((pts, m))
            elif xsi in ("TwoDimensionMultiPoint", "TwoDimensionPolyline") and len(pts) > 2:
                m.kind = "polyline"
                out.append(m)
            elif xsi == "TwoDimensionCircle" and len(pts) == 2:  # centre, a point on the circle
                out.append(m)
            elif xsi == "TwoDimensionEllipse" and len(pts) == 4:  # major axis end points, minor axis end points
                out.append(m)
            else:
                out.append(m.exclude("unsupported_graphic", f"{item}: {xsi or 'MarkupEntity without xsi:type'} with {len(pts)} points"))
        for pairs in lines.values():
            for group in pair_rulers([p for p, _ in pairs]):
                m = pairs[group[0]][1]
                if len(group) == 2:
                    m.kind = "recist"
                    m.points = np.round(np.vstack([pairs[group[0]][0], pairs[group[1]][0]]), 4).tolist()
                    m.item = f"{m.item} + {pairs[group[1]][1].item.split(' / ')[-1]}"
                else:
                    m.kind = "ruler"
                out.append(m)
    if not out:
        raise UnreadableError("unsupported_object", "AIM document without image annotation markups")
    return out
