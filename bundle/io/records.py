"""Records of what one object holds: an image header summary, reader measurements, a file issue, and the
per-object result every source returns (`ObjectResult`). Plain data, shared by sources, readers and mining."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Exclusion reasons (report keys). One place, so the report, the simulator and the tests agree.
REASONS = {
    "not_dicom": "file is not DICOM (no preamble/DICM prefix and no parseable header)",
    "corrupt": "DICOM file is truncated or cannot be parsed",
    "missing_sop_uids": "DICOM data set without SOP Class/Instance UID: not a stored object (a fragment, a bare sequence)",
    "invalid_attribute": "DICOM object with an attribute value its readers need that cannot be interpreted (names the attribute)",
    "duplicate_same_pixels": "another copy of a SOP Instance UID already read, with the same pixels (or, without pixels, the same content)",
    "duplicate_differing_copy": "another copy of a SOP Instance UID already read, whose pixels or content differ (detail: which copy was kept, why)",
    "internal_error": "a reader failed on an object it handles: a bug in this bundle (the detail names the exception); please report it",
    "empty_file": "zero-byte file",
    "dicomdir": "DICOMDIR media directory (an index of the export, not an image or annotation)",
    "undecodable_pixels": "image whose Pixel Data cannot be decoded (damaged or truncated stream)",
    "unsupported_transfer_syntax": "image in a transfer syntax no installed decoder handles",
    "conversion_failed": "image decoded but its NIfTI slice could not be made or written",
    "image_not_converted": "measurement whose referenced image could not be decoded, converted or written (see file_issues)",
    "malformed_xml": "XML file (AIM) that is not well-formed and cannot be parsed",
    "unsupported_object": "object of a class no reader handles (e.g. KOS, XML that is not AIM) or without annotations",
    "unsupported_graphic": "graphic type that carries no size (POINT, MULTIPOINT, TEXT, INTERPOLATED)",
    "segmentation_reference": "SR measurement group references a segmentation, not coordinates: not convertible",
    "no_coordinates": "measurement without usable coordinates (SR group without SCOORD/SCOORD3D/segmentation, AIM markup or CSV row without points)",
    "reference_not_found": "referenced image is not in the source",
    "no_image_plane": "SCOORD3D points lie on no image plane of the frame of reference",
    "missing_pixel_spacing": "no pixel spacing (image PixelSpacing, CSV Spacing_mm_px_): size unknown, never guessed",
    "series_description": "referenced series description fails the series rules",
    "image_type": "referenced image type fails the series rules",
    "modality": "referenced image modality fails the series rules",
    "not_axial": "referenced image plane is not axial",
    "out_of_date_range": "study date outside the requested date range",
    "too_small": "long axis below the minimum length",
    "too_large": "long axis above the maximum length",
    "duplicate": "second measurement of a lesion already measured on the same image (merged)",
    "invalid_row": "CSV row with a missing or unparseable required field (file name, key slice index)",
    "image_missing": "the image file a CSV row names does not exist",
    "image_unreadable": "the image file a CSV row names cannot be decoded as a single grey plane",
    "series_not_a_volume": "mined series whose images do not stack into one volume (its key slices are still mined)",
    "overlay_glyph": "overlay component is text, a marker or a frame, not a lesion outline",
    "retrieve_failed": "object the archive listed but did not deliver (WADO-RS error, C-GET/C-MOVE sub-operation failed)",
}


@dataclass
class Measurement:
    """One reader mark on one image, in PIXEL coordinates (col, row) of the referenced image.

    Why PIXEL: array index i covers [i, i+1) in both the DICOM PIXEL convention and the datalist's
    max-exclusive voxel boxes, so a point (col, row) is directly a box corner (x, y) on `pixel_array.T`.
    `kind` says how `points` is read: ruler (2 points), recist (long p1, p2, short p1, p2), polyline
    (outline vertices), circle (centre, perimeter point), ellipse (major p1, p2, minor p1, p2).
    """

    kind: str
    points: list[list[float]]
    reader: str  # gsps, sr, overlay, deeplesion, aim
    source: str  # file path or DICOMweb URL of the annotation object
    sop_instance_uid: str = ""  # of the annotation object
    referenced_sop_instance_uid: str = ""
    referenced_frame: int = 1
    referenced_series_uid: str = ""
    study_uid: str = ""
    patient_id: str = ""
    operator: str = ""
    date: str = ""  # YYYYMMDD[HHMMSS] content date/time: first reader wins a duplicate
    item: str = ""  # where inside the object (e.g. "annotation 2 / object 1")
    units: str = "PIXEL"
    points_3d: list[list[float]] | None = None  # SCOORD3D, patient mm, resolved to an image later
    frame_of_reference_uid: str = ""
    spacing: list[float] | None = None  # (col mm, row mm); filled from the referenced image
    long_mm: float | None = None
    box: list[float] | None = None  # [x0, y0, x1, y1] array coordinates, max exclusive
    status: str = "pending"  # pending, kept, or an exclusion reason from REASONS
    rule: str = ""  # the rule that accepted or excluded it, in words
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def exclude(self, reason: str, detail: str = "") -> Measurement:
        assert reason in REASONS, reason
        self.status = reason
        self.rule = REASONS[reason]
        self.detail = detail
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FileIssue:
    """A file (or object) that yielded nothing usable, with the reason; counted in the report."""

    source: str
    reason: str
    detail: str = ""
    sop_instance_uid: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ImageInfo:
    """What mining needs from an image header (no pixels): geometry, series attributes, where it lives."""

    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str
    study_uid: str
    patient_id: str
    modality: str
    series_description: str
    image_type: list[str]
    rows: int
    columns: int
    frames: int
    spacing: list[float] | None  # (column mm, row mm) = (x, y) of pixel_array.T
    orientation: list[float] | None
    position: list[float] | None
    slice_thickness: float | None
    frame_of_reference_uid: str
    study_date: str
    instance_number: int
    location: str
    # series-rule inputs besides the description (bundle/io/frames.py reads them from classic and enhanced headers)
    protocol_name: str = ""
    sequence_name: str = ""
    scanning_sequence: list[str] = field(default_factory=list)
    acquisition_type: str = ""
    contrast_agent: str = ""
    # multi-frame images with functional groups: each frame's spacing/orientation/position/slice_thickness
    per_frame: list[dict] | None = None
    frame: int = 0  # a view of one frame of a multi-frame image (bundle/io/frames.py frame_view): its 1-based number; 0 = the image

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ObjectResult:
    """What one object of a source yielded: every source returns these, one per object, in a stable order.

    `object` is the kind read (image, gsps, sr, aim, overlay, png, deeplesion_csv, other) or None when the
    object could not be read at all; `issue` says why it yielded nothing usable.
    """

    location: str
    object: str | None = None
    image: ImageInfo | None = None
    measurements: list[Measurement] = field(default_factory=list)
    issue: FileIssue | None = None
