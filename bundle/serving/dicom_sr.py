"""Detections -> DICOM objects any PACS keeps: Comprehensive 3D SR (TID 1500) and a GSPS drawing the boxes.

Why: the Deploy SDK has no detection writer and no TID 1500 writer. highdicom builds both.
Boxes come in the source series' array coordinates ``(column, row, slice)`` xyzxyz, max
exclusive, slice = index into ``sources`` (sorted along the slice normal). A multi-frame source
(Enhanced MR: one instance, its frames the slices) is given once per slice with ``frames``, the
1-based frame number of each slice: every region and GSPS annotation then names its frame
(ReferencedFrameNumber), and the evidence lists the instance once. Pixel ``i`` covers
``[i, i + 1)``, which is DICOM's SCOORD / GSPS PIXEL convention (top-left corner of the top-left
pixel = 0\\0), so box edges go into graphic data unchanged.

One measurement group per box (TID 1411 volumetric ROI): one closed POLYLINE rectangle per slice
the box covers, "Long axis" in mm (the longer in-plane box side: a box carries no diameter, and
for a RECIST-style ellipse inside it the longer side is the long axis) and the detector score as
"Certainty of Finding" (unitless, 0-1).
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from bundle.io import dicom_write as dw
from bundle.io.frames import frame_plane, group_value
from bundle.io.pixels import decode_frame

ALGORITHM = "brain_mri_tumor_detection"
MR_BRAIN = hd.sr.CodedConcept("24590-2", "LN", "MR Brain")


def _equipment(algorithm_version: str) -> dw.Equipment:
    """The detector as the device that wrote the object (General Equipment)."""
    return dw.Equipment(ALGORITHM, model_name=ALGORITHM, software_versions=algorithm_version, device_serial_number="0")


def _rect(box: Sequence[float]) -> np.ndarray:
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float32)


def long_axis_mm(box: Sequence[float], source: Dataset, frame: int | None = None) -> float:
    """Longer in-plane side of a (column, row, ...) box in mm; PixelSpacing is (row, column) spacing (a frame's: its
    PixelMeasuresSequence)."""
    if frame is None:
        row_sp, col_sp = (float(v) for v in source.PixelSpacing)
    else:
        col_sp, row_sp = frame_plane(source, frame)["spacing"]
    return float(max((box[3] - box[0]) * col_sp, (box[4] - box[1]) * row_sp))


def _frames(sources: Sequence[Dataset], frames: Sequence[int | None] | None) -> list[int | None]:
    if frames is None:
        return [None] * len(sources)
    if len(frames) != len(sources):
        raise ValueError(f"{len(frames)} frame numbers for {len(sources)} slices")
    return list(frames)


def _instances(sources: Sequence[Dataset]) -> list[Dataset]:
    """Each instance once (a multi-frame source is every one of its slices)."""
    seen: dict[str, Dataset] = {}
    for ds in sources:
        seen.setdefault(str(ds.SOPInstanceUID), ds)
    return list(seen.values())


def _covered(box: Sequence[float], n_slices: int) -> range:
    z0 = max(0, int(np.floor(box[2])))
    z1 = min(n_slices, int(np.ceil(box[5])))
    return range(z0, z1)


def _window(images: Sequence[Dataset]) -> list[hd.pr.SoftcopyVOILUTTransformation] | None:
    """The GSPS's window: None lets highdicom copy the images' own. A multi-frame image whose Frame VOI LUT holds no
    window (Type 1 there, yet highdicom's own legacy conversion leaves the item empty, and highdicom then fails on
    it) gets its stored pixel range instead."""
    if len(images) != 1 or int(images[0].get("NumberOfFrames", 1) or 1) <= 1:
        return None
    ds = images[0]
    if group_value(ds, "WindowCenter") is not None and group_value(ds, "WindowWidth") is not None:
        return None
    frames = [decode_frame(ds, k) for k in range(1, int(ds.NumberOfFrames) + 1)]
    lo, hi = float(min(f.min() for f in frames)), float(max(f.max() for f in frames))
    return [hd.pr.SoftcopyVOILUTTransformation(window_center=(lo + hi + 1) / 2, window_width=max(hi - lo + 1, 1.0))]


def build_sr(
    sources: Sequence[Dataset],
    boxes: np.ndarray,
    scores: np.ndarray,
    algorithm_version: str,
    series_number: int = 901,
    frames: Sequence[int | None] | None = None,
) -> hd.sr.Comprehensive3DSR:
    """A TID 1500 measurement report with one volumetric ROI group per box, referencing ``sources`` (and ``frames``)."""
    frame_of = _frames(sources, frames)
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 6)
    scores = np.asarray(scores, dtype=float).reshape(-1)
    algorithm = hd.sr.AlgorithmIdentification(name=ALGORITHM, version=algorithm_version)
    groups = []
    for i, (box, score) in enumerate(zip(boxes, scores)):
        regions = [
            hd.sr.ImageRegion(
                graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                graphic_data=_rect([box[0], box[1], box[3], box[4]]),
                source_image=hd.sr.SourceImageForRegion.from_source_image(
                    sources[z], referenced_frame_numbers=None if frame_of[z] is None else [frame_of[z]]
                ),
            )
            for z in _covered(box, len(sources))
        ]
        if not regions:
            raise ValueError(f"box {i} {box.tolist()} covers no slice of the {len(sources)}-slice series")
        mid = _covered(box, len(sources))[len(regions) // 2]
        long_axis = round(long_axis_mm(box, sources[mid], frame_of[mid]), 2)
        measurements = [
            hd.sr.Measurement(name=codes.SCT.LongAxis, value=long_axis, unit=codes.UCUM.Millimeter, algorithm_id=algorithm),
            hd.sr.Measurement(
                name=codes.DCM.CertaintyOfFinding, value=round(float(score), 4), unit=codes.UCUM.NoUnits, algorithm_id=algorithm
            ),
        ]
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"Lesion {i + 1}"),
                referenced_regions=regions,
                finding_type=codes.SCT.Neoplasm,
                finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Brain)],
                algorithm_id=algorithm,
                measurements=measurements,
            )
        )
    if not groups:  # TID 1500 needs a group: say "neoplasm absent" (no box at the operating point), not nothing
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="No lesion detected"),
                finding_type=codes.SCT.Neoplasm,
                finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Brain)],
                algorithm_id=algorithm,
                qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=codes.SCT.Neoplasm, value=codes.SCT.Absent)],
            )
        )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(uid=generate_uid(), name=ALGORITHM),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=MR_BRAIN,
        imaging_measurements=groups,
        referenced_images=None if len(boxes) else _instances(sources),
    )
    return hd.sr.Comprehensive3DSR(
        evidence=_instances(sources),
        content=report,
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=ALGORITHM,
        is_complete=True,
        series_description="AI tumor detection (TID 1500)",
    )


def build_gsps(
    sources: Sequence[Dataset],
    boxes: np.ndarray,
    scores: np.ndarray,
    algorithm_version: str,
    series_number: int = 902,
    frames: Sequence[int | None] | None = None,
) -> hd.pr.GrayscaleSoftcopyPresentationState:
    """A GSPS that draws every box (rectangle + score label) on each slice it covers (a frame: its frame number)."""
    frame_of = _frames(sources, frames)
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 6)
    scores = np.asarray(scores, dtype=float).reshape(-1)
    layer = hd.pr.GraphicLayer(layer_name="AI_DETECTIONS", order=1, description="brain tumor detector boxes")
    per_slice: dict[int, tuple[list, list]] = {}
    for i, (box, score) in enumerate(zip(boxes, scores)):
        for z in _covered(box, len(sources)):
            g, t = per_slice.setdefault(z, ([], []))
            g.append(
                hd.pr.GraphicObject(
                    graphic_type=hd.pr.GraphicTypeValues.POLYLINE,
                    graphic_data=_rect([box[0], box[1], box[3], box[4]]),
                    units=hd.pr.AnnotationUnitsValues.PIXEL,
                )
            )
            t.append(
                hd.pr.TextObject(
                    text_value=f"L{i + 1} {score:.2f}",
                    units=hd.pr.AnnotationUnitsValues.PIXEL,
                    anchor_point=(float(box[0]), max(0.0, float(box[1]) - 1.0)),
                )
            )
    annotations = [
        hd.pr.GraphicAnnotation(
            referenced_images=[sources[z]], graphic_layer=layer, referenced_frame_number=frame_of[z], graphic_objects=g, text_objects=t
        )
        for z, (g, t) in sorted(per_slice.items())
    ]
    gsps = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=_instances(sources),
        voi_lut_transformations=_window(_instances(sources)),
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        **_equipment(algorithm_version).highdicom_kwargs(),
        content_label="AI_BOXES",
        content_description="AI tumor detection boxes",
        graphic_layers=[layer],
        graphic_annotations=annotations or None,
    )
    dw.copy_body_part(gsps, sources[0])
    if "BodyPartExamined" not in gsps:  # an Enhanced MR keeps its anatomy in FrameAnatomySequence: the SR's finding site
        gsps.BodyPartExamined = "BRAIN"
    return gsps


def read_sr_boxes(sr: Dataset) -> list[dict]:
    """Boxes back from an SR written by :func:`build_sr`: per group the slices' SOP UIDs (and frame numbers, None for a
    single-frame image), rectangle, long axis, score."""
    doc = hd.sr.Comprehensive3DSR.from_dataset(sr) if not isinstance(sr, hd.sr.Comprehensive3DSR) else sr
    out = []
    for group in doc.content.get_volumetric_roi_measurement_groups():
        regions = group.roi if isinstance(group.roi, list) else [group.roi]
        refs = [r.ContentSequence[0].ReferencedSOPSequence[0] for r in regions]
        uids = [ref.ReferencedSOPInstanceUID for ref in refs]
        frames = [int(ref.ReferencedFrameNumber) if "ReferencedFrameNumber" in ref else None for ref in refs]
        data = np.asarray(regions[0].value)
        (la,) = group.get_measurements(name=codes.SCT.LongAxis)
        (sc,) = group.get_measurements(name=codes.DCM.CertaintyOfFinding)
        out.append(
            {
                "sop_instance_uids": uids,
                "frames": frames,
                "rect": [float(data[:, 0].min()), float(data[:, 1].min()), float(data[:, 0].max()), float(data[:, 1].max())],
                "long_axis_mm": float(la.value),
                "score": float(sc.value),
                "tracking_id": group.tracking_identifier,
            }
        )
    return out
