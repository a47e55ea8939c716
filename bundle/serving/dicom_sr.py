"""Detections -> DICOM objects any PACS keeps: Comprehensive 3D SR (TID 1500) and a GSPS drawing the boxes.

Why: the Deploy SDK has no detection writer and no TID 1500 writer. highdicom builds both.
Boxes come in the source series' array coordinates ``(column, row, slice)`` xyzxyz, max
exclusive, slice = index into ``sources`` (sorted along the slice normal). Pixel ``i`` covers
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

ALGORITHM = "brain_mri_tumor_detection"
MR_BRAIN = hd.sr.CodedConcept("24590-2", "LN", "MR Brain")


def _equipment(algorithm_version: str) -> dw.Equipment:
    """The detector as the device that wrote the object (General Equipment)."""
    return dw.Equipment(ALGORITHM, model_name=ALGORITHM, software_versions=algorithm_version, device_serial_number="0")


def _rect(box: Sequence[float]) -> np.ndarray:
    x0, y0, x1, y1 = (float(v) for v in box)
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float32)


def long_axis_mm(box: Sequence[float], source: Dataset) -> float:
    """Longer in-plane side of a (column, row, ...) box in mm; PixelSpacing is (row, column) spacing."""
    row_sp, col_sp = (float(v) for v in source.PixelSpacing)
    return float(max((box[3] - box[0]) * col_sp, (box[4] - box[1]) * row_sp))


def _covered(box: Sequence[float], n_slices: int) -> range:
    z0 = max(0, int(np.floor(box[2])))
    z1 = min(n_slices, int(np.ceil(box[5])))
    return range(z0, z1)


def build_sr(
    sources: Sequence[Dataset],
    boxes: np.ndarray,
    scores: np.ndarray,
    algorithm_version: str,
    series_number: int = 901,
) -> hd.sr.Comprehensive3DSR:
    """A TID 1500 measurement report with one volumetric ROI group per box, referencing ``sources``."""
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 6)
    scores = np.asarray(scores, dtype=float).reshape(-1)
    algorithm = hd.sr.AlgorithmIdentification(name=ALGORITHM, version=algorithm_version)
    groups = []
    for i, (box, score) in enumerate(zip(boxes, scores)):
        regions = [
            hd.sr.ImageRegion(
                graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                graphic_data=_rect([box[0], box[1], box[3], box[4]]),
                source_image=hd.sr.SourceImageForRegion.from_source_image(sources[z]),
            )
            for z in _covered(box, len(sources))
        ]
        if not regions:
            raise ValueError(f"box {i} {box.tolist()} covers no slice of the {len(sources)}-slice series")
        mid = sources[_covered(box, len(sources))[len(regions) // 2]]
        measurements = [
            hd.sr.Measurement(
                name=codes.SCT.LongAxis, value=round(long_axis_mm(box, mid), 2), unit=codes.UCUM.Millimeter, algorithm_id=algorithm
            ),
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
        referenced_images=None if len(boxes) else list(sources),
    )
    return hd.sr.Comprehensive3DSR(
        evidence=list(sources),
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
) -> hd.pr.GrayscaleSoftcopyPresentationState:
    """A GSPS that draws every box (rectangle + score label) on each slice it covers."""
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
        hd.pr.GraphicAnnotation(referenced_images=[sources[z]], graphic_layer=layer, graphic_objects=g, text_objects=t)
        for z, (g, t) in sorted(per_slice.items())
    ]
    gsps = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=list(sources),
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
    return gsps


def read_sr_boxes(sr: Dataset) -> list[dict]:
    """Boxes back from an SR written by :func:`build_sr`: per group the slices' SOP UIDs, rectangle, long axis, score."""
    doc = hd.sr.Comprehensive3DSR.from_dataset(sr) if not isinstance(sr, hd.sr.Comprehensive3DSR) else sr
    out = []
    for group in doc.content.get_volumetric_roi_measurement_groups():
        regions = group.roi if isinstance(group.roi, list) else [group.roi]
        uids = [r.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID for r in regions]
        data = np.asarray(regions[0].value)
        (la,) = group.get_measurements(name=codes.SCT.LongAxis)
        (sc,) = group.get_measurements(name=codes.DCM.CertaintyOfFinding)
        out.append(
            {
                "sop_instance_uids": uids,
                "rect": [float(data[:, 0].min()), float(data[:, 1].min()), float(data[:, 0].max()), float(data[:, 1].max())],
                "long_axis_mm": float(la.value),
                "score": float(sc.value),
                "tracking_id": group.tracking_identifier,
            }
        )
    return out
