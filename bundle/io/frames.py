"""Per-frame geometry and acquisition attributes of multi-frame (enhanced) images, from their functional groups.

Why: an Enhanced (or Legacy Converted Enhanced) MR keeps PixelSpacing, SliceThickness, orientation and
position in the Shared and Per-Frame Functional Groups, not at the top level, and the standard lets them
differ per frame. A measurement on frame k must use frame k's spacing (its size in mm) and orientation
(the axial check). The per-frame item wins over the shared one, as PS3.3 C.7.6.16 says.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pydicom

from bundle.io.records import ImageInfo

PER_FRAME = "PerFrameFunctionalGroupsSequence"
SHARED = "SharedFunctionalGroupsSequence"


def _in_group(group: pydicom.Dataset, keyword: str) -> Any:
    """A keyword inside one functional-groups item: each macro is a one-item sequence (PixelMeasuresSequence[0] ...)."""
    if keyword in group:
        return group.get(keyword)
    for elem in group:
        if elem.VR == "SQ" and len(elem.value) and keyword in elem.value[0]:
            return elem.value[0].get(keyword)
    return None


def group_value(ds: pydicom.Dataset, keyword: str, frame: int = 1) -> Any:
    """`keyword` for a 1-based frame: the per-frame functional group, else the shared one, else None."""
    per_frame = ds.get(PER_FRAME)
    if per_frame is not None and 1 <= frame <= len(per_frame):
        value = _in_group(per_frame[frame - 1], keyword)
        if value not in (None, ""):
            return value
    shared = ds.get(SHARED)
    if shared:
        value = _in_group(shared[0], keyword)
        if value not in (None, ""):
            return value
    return None


def _floats(value: Any, n: int) -> list[float] | None:
    if value is None or len(value) != n:
        return None
    return [float(v) for v in value]


def frame_plane(ds: pydicom.Dataset, frame: int) -> dict[str, Any]:
    """Geometry of one frame from the functional groups: spacing (column mm, row mm), orientation, position, thickness.

    Keys are ImageInfo's field names; a value the groups do not carry is None.
    """
    ps = _floats(group_value(ds, "PixelSpacing", frame), 2)
    thick = group_value(ds, "SliceThickness", frame)
    return {
        "spacing": [ps[1], ps[0]] if ps and ps[0] > 0 and ps[1] > 0 else None,
        "orientation": _floats(group_value(ds, "ImageOrientationPatient", frame), 6),
        "position": _floats(group_value(ds, "ImagePositionPatient", frame), 3),
        "slice_thickness": float(thick) if thick not in (None, "") and float(thick) > 0 else None,
    }


def frame_planes(ds: pydicom.Dataset) -> list[dict[str, Any]] | None:
    """Every frame's plane, or None for an image without functional groups (classic single- or multi-frame)."""
    if PER_FRAME not in ds and SHARED not in ds:
        return None
    n = int(ds.get("NumberOfFrames", 1) or 1)
    return [frame_plane(ds, k) for k in range(1, n + 1)]


def frame_rescale(ds: pydicom.Dataset, frame: int) -> tuple[float, float]:
    """(slope, intercept): top level, else the frame's Pixel Value Transformation functional group; identity when absent."""
    slope = ds.get("RescaleSlope") or group_value(ds, "RescaleSlope", frame)
    intercept = ds.get("RescaleIntercept")
    intercept = intercept if intercept not in (None, "") else group_value(ds, "RescaleIntercept", frame)
    return float(slope or 1), float(intercept or 0)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value)


def _agent(ds: pydicom.Dataset) -> str:
    """ContrastBolusAgent (MR Image), else the Enhanced Contrast/Bolus module's agent code meanings."""
    agent = _text(ds.get("ContrastBolusAgent") or group_value(ds, "ContrastBolusAgent"))
    if agent:
        return agent
    seq = ds.get("ContrastBolusAgentSequence") or []
    return "\\".join(str(item.get("CodeMeaning", "")) for item in seq if item.get("CodeMeaning"))


def acquisition_attributes(ds: pydicom.Dataset) -> dict[str, Any]:
    """What the series rules read besides the description, as real headers carry it (ImageInfo field names).

    Classic MR: ProtocolName, SequenceName, ScanningSequence, MRAcquisitionType, ContrastBolusAgent at the top
    level. Enhanced MR: PulseSequenceName and EchoPulseSequence (SPIN/GRADIENT/BOTH -> SE/GR) in the MR Pulse
    Sequence module; Legacy Converted: the classic attributes in the unassigned converted-attributes groups.
    """

    def get(keyword: str) -> Any:
        value = ds.get(keyword)
        return value if value not in (None, "") else group_value(ds, keyword)

    raw = get("ScanningSequence")
    scanning = [raw] if isinstance(raw, str) else [str(v) for v in (raw or [])]
    if not scanning and get("EchoPulseSequence"):
        scanning = {"SPIN": ["SE"], "GRADIENT": ["GR"], "BOTH": ["SE", "GR"]}.get(str(get("EchoPulseSequence")), [])
    return {
        "protocol_name": _text(get("ProtocolName")),
        "sequence_name": _text(get("SequenceName") or get("PulseSequenceName")),
        "scanning_sequence": scanning,
        "acquisition_type": _text(get("MRAcquisitionType")),
        "contrast_agent": _agent(ds),
    }


def frame_view(info: ImageInfo, frame: int) -> ImageInfo | None:
    """The image as seen from one frame: its spacing, orientation, position and thickness; None when out of range.

    Values the frame's functional groups lack keep the image's (top-level) ones.
    """
    if not 1 <= frame <= max(1, info.frames):
        return None
    if not info.per_frame:
        return info
    plane = {k: v for k, v in info.per_frame[frame - 1].items() if v is not None}
    return replace(info, **plane, frame=frame)
