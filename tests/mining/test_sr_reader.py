"""The SR reader's direct walk of TID 1500 reads exactly what highdicom reads, and leaves every other report to highdicom."""

from __future__ import annotations

import dataclasses

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from bundle.mining.readers import sr as sr_reader


def _both(ds: pydicom.Dataset, monkeypatch) -> tuple[list[dict], list[dict]]:
    """(the reader as it runs, the reader with the walk turned off) on the same report."""
    fast = [dataclasses.asdict(m) for m in sr_reader.read_sr(ds, "report.dcm")]
    with monkeypatch.context() as m:
        m.setattr(sr_reader, "walk_report", lambda _ds: None)
        slow = [dataclasses.asdict(x) for x in sr_reader.read_sr(ds, "report.dcm")]
    return fast, slow


def test_every_report_of_the_demo_export_reads_the_same_both_ways(pacs_export, monkeypatch):
    walked = located = 0
    reports = [
        ds
        for p in sorted((pacs_export / "dicom").rglob("*"))
        if p.is_file() and (ds := pydicom.dcmread(p, stop_before_pixels=True, force=True)).get("Modality") == "SR"
    ]
    assert reports
    for ds in reports:
        walked += sr_reader.walk_report(ds) is not None
        fast, slow = _both(ds, monkeypatch)
        assert fast == slow, ds.SOPInstanceUID
        located += sum(bool(m["points"] or m["points_3d"]) for m in fast)
    assert located >= len(reports) // 2
    assert walked >= len(reports) // 2  # the common shape is walked, not handed to highdicom


@pytest.fixture(scope="module")
def image(pacs_export) -> pydicom.Dataset:
    """An MR slice of the demo export to point regions at (reports need its patient and study as evidence)."""
    for p in sorted((pacs_export / "dicom").rglob("*")):
        if (
            p.is_file()
            and (ds := pydicom.dcmread(p, stop_before_pixels=True, force=True)).get("SOPClassUID") == "1.2.840.10008.5.1.4.1.1.4"
        ):
            return ds
    raise AssertionError("no MR image in the demo export")


def _report(image: pydicom.Dataset, groups: list, observer=None) -> pydicom.Dataset:
    observer = observer or hd.sr.ObserverContext(
        observer_type=codes.DCM.Person, observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name="Reader^A")
    )
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=observer)
        if observer.observer_type == codes.DCM.Person
        else hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=hd.sr.CodedConcept("24590-2", "LN", "MR Brain"),
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[image],
        content=content,
        series_instance_uid=generate_uid(),
        series_number=1,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="test",
        is_complete=True,
    )


def _group(region, n: int = 1) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"lesion {n}"),
        referenced_region=region,
        finding_type=codes.SCT.Lesion,
        measurements=[
            hd.sr.Measurement(name=codes.SCT.LongAxis, value=12.5, unit=codes.UCUM.Millimeter),
            hd.sr.Measurement(name=codes.SCT.ShortAxis, value=7.25, unit=codes.UCUM.Millimeter),
        ],
    )


def test_frames_scoord3d_and_several_groups_are_walked_and_read_as_highdicom_reads_them(image, monkeypatch):
    line = np.array([[1.5, 2.0], [6.25, 5.0]])
    on_frame = hd.sr.ImageRegion(
        graphic_type="POLYLINE",
        graphic_data=line,
        source_image=hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=image.SOPClassUID, referenced_sop_instance_uid=image.SOPInstanceUID, referenced_frame_numbers=[2]
        ),
    )
    ellipse = hd.sr.ImageRegion(
        graphic_type="ELLIPSE",
        graphic_data=np.array([[1.0, 4.0], [7.0, 4.0], [4.0, 2.0], [4.0, 6.0]]),
        source_image=hd.sr.SourceImageForRegion.from_source_image(image),
    )
    world = hd.sr.ImageRegion3D(
        graphic_type="POLYLINE", graphic_data=np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 3.0]]), frame_of_reference_uid=generate_uid()
    )
    ds = _report(image, [_group(on_frame, 1), _group(ellipse, 2), _group(world, 3)])
    assert sr_reader.walk_report(ds) is not None
    fast, slow = _both(ds, monkeypatch)
    assert fast == slow
    assert [m["kind"] for m in fast] == ["ruler", "ellipse", "ruler"]
    assert fast[0]["referenced_frame"] == 2 and fast[0]["operator"] == "Reader^A"
    assert fast[0]["extra"]["measurements"] == {"Long axis": 12.5, "Short axis": 7.25}
    assert fast[2]["units"] == "SCOORD3D" and fast[2]["points_3d"] == [[1.0, 2.0, 3.0], [4.0, 5.0, 3.0]]


def test_a_device_observer_or_a_volumetric_group_goes_to_highdicom(image, monkeypatch):
    region = hd.sr.ImageRegion(
        graphic_type="POLYLINE",
        graphic_data=np.array([[1.0, 1.0], [5.0, 5.0]]),
        source_image=hd.sr.SourceImageForRegion.from_source_image(image),
    )
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(uid=generate_uid(), name="CAD"),
    )
    volumetric = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="volume"),
        referenced_regions=[region],
        finding_type=codes.SCT.Lesion,
        measurements=[hd.sr.Measurement(name=codes.SCT.Volume, value=10.0, unit=codes.UCUM.CubicMillimeter)],
    )
    for ds in (_report(image, [_group(region)], observer=device), _report(image, [_group(region), volumetric])):
        assert sr_reader.walk_report(ds) is None
        fast, slow = _both(ds, monkeypatch)
        assert fast == slow and fast
