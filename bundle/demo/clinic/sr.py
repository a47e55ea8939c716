"""The clinic's structured reports: SR TID 1500 measurement reports (SCOORD POLYLINE/ELLIPSE, SCOORD3D) and a KO document.

Why: the second common home of reader measurements after GSPS. An SR can also hold what a miner
must skip with a reason: a group that points at a segmentation instead of image coordinates. The
Key Object Selection document is an object a miner meets and does not mine.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import SegmentationStorage

from bundle.demo.clinic.config import MANUFACTURER, READERS, uid
from bundle.demo.clinic.patient import PatientExport
from bundle.io import dicom_write as dw

EQUIPMENT = dw.Equipment(MANUFACTURER)


def _planar_group(w: PatientExport, rec: dict, n: int, k: int) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """Group k of SR n: the mark as a region with its long (and short) axis in mm; a RECIST pair is stored as an ELLIPSE."""
    img = w.images[(rec["series"], rec["slice"])]
    pts = np.asarray(rec["points"], dtype=np.float64)
    tracking = hd.sr.TrackingIdentifier(uid=uid(w.study.pid, "sr-track", n, k), identifier=f"lesion {rec['lesion']}")
    if rec.get("scoord3d"):
        region = hd.sr.ImageRegion3D(
            graphic_type="POLYLINE", graphic_data=w.study.world(pts, rec["slice"]), frame_of_reference_uid=w.study.for_uid
        )
    else:
        gtype = "ELLIPSE" if rec["kind"] == "recist" else "POLYLINE"
        region = hd.sr.ImageRegion(graphic_type=gtype, graphic_data=pts, source_image=hd.sr.SourceImageForRegion.from_source_image(img))
    if rec["kind"] == "recist":  # SR stores the pair as an ELLIPSE: the miner reads an ellipse
        rec["kind_in_object"] = "ellipse"
        rec.update(w.expect("ellipse", pts, rec["series"], rec["slice"]))
    sp = w.study.spacing
    lengths = [float(np.linalg.norm((pts[i + 1] - pts[i]) * sp[:2])) for i in range(0, len(pts), 2)]
    meas = [hd.sr.Measurement(name=codes.SCT.LongAxis, value=round(lengths[0], 2), unit=codes.UCUM.Millimeter)]
    if len(lengths) > 1:
        meas.append(hd.sr.Measurement(name=codes.SCT.ShortAxis, value=round(lengths[1], 2), unit=codes.UCUM.Millimeter))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking, referenced_region=region, finding_type=codes.SCT.Lesion, measurements=meas
    )


def _segmentation_group(w: PatientExport) -> tuple[list[Dataset], hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations]:
    """A volumetric group that references a SEG (kept in another archive) instead of image coordinates; with its evidence."""
    img = w.images[("t1c", w.study.vol.shape[2] // 2)]
    seg = hd.sr.ReferencedSegment(
        sop_class_uid=SegmentationStorage,
        sop_instance_uid=uid(w.study.pid, "seg"),
        segment_number=1,
        source_images=[hd.sr.SourceImageForSegmentation.from_source_image(img)],
    )
    # the SEG itself lives in another archive; the SR's evidence still names it, as real reports do
    seg_ref = Dataset()
    w.study.patient_module(seg_ref)
    seg_ref.SOPClassUID = SegmentationStorage
    seg_ref.SOPInstanceUID = uid(w.study.pid, "seg")
    seg_ref.SeriesInstanceUID = uid(w.study.pid, "seg-series")
    seg_ref.Modality = "SEG"
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uid(w.study.pid, "seg-track"), identifier="segmented lesion"),
        referenced_segment=seg,
        finding_type=codes.SCT.Lesion,
        measurements=[hd.sr.Measurement(name=codes.SCT.Volume, value=1234.0, unit=codes.UCUM.CubicMillimeter)],
    )
    return [img, seg_ref], group


def write_sr(w: PatientExport, marks: list[dict], reader: str, time: str, seg_group: bool = False, date: str | None = None) -> Path:
    """One SR TID 1500 measurement report: a planar ROI group per mark (SCOORD or SCOORD3D); fills in each mark's object fields."""
    w.sr_count += 1
    n = w.sr_count
    sop_uid = uid(w.study.pid, "sr", n)
    groups, evidence = [], []
    for k, rec in enumerate(marks):
        img = w.images[(rec["series"], rec["slice"])]
        evidence.append(img)
        groups.append(_planar_group(w, rec, n, k))
        rec["sop_instance_uid"] = sop_uid
        rec["referenced_sop_instance_uid"] = img.SOPInstanceUID
        rec["operator"] = reader
        rec["units"] = "SCOORD3D" if rec.get("scoord3d") else "PIXEL"
    if seg_group:
        seg_evidence, group = _segmentation_group(w)
        evidence += seg_evidence
        groups.append(group)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person, observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name=reader)
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=observer),
        procedure_reported=hd.sr.CodedConcept("24590-2", "LN", "MR Brain"),
        imaging_measurements=groups,
    )
    unique = {img.SOPInstanceUID: img for img in evidence}
    ds = hd.sr.Comprehensive3DSR(
        evidence=list(unique.values()),
        content=report,
        series_instance_uid=uid(w.study.pid, "sr-series", reader),
        series_number=200 + READERS.index(reader),
        sop_instance_uid=sop_uid,
        instance_number=n,
        **EQUIPMENT.highdicom_kwargs(),
        is_complete=True,
    )
    dw.set_creation_times(ds, date or w.study.date, time)
    return w.save(ds, w.out / w.study.pid / "SR" / f"SR{n:03d}.dcm", "sr", sop_instance_uid=sop_uid)


def write_ko(w: PatientExport, img: Dataset, time: str) -> Path:
    """A Key Object Selection document flagging one image: an object a miner must report as unsupported."""
    content = hd.ko.KeyObjectSelection(document_title=codes.DCM.OfInterest, referenced_objects=[img], observer_person_context=None)
    ko = hd.ko.KeyObjectSelectionDocument(
        evidence=[img],
        content=content,
        series_instance_uid=uid(w.study.pid, "ko-series"),
        series_number=300,
        sop_instance_uid=uid(w.study.pid, "ko"),
        instance_number=1,
        **EQUIPMENT.highdicom_kwargs(),
    )
    dw.set_creation_times(ko, w.study.date, time)
    path = w.out / w.study.pid / "KO" / "KO001.dcm"
    return w.save(ko, path, "ko", expected="unsupported_object", sop_instance_uid=ko.SOPInstanceUID)
