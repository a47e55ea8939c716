"""Enhanced (multi-frame) MR with GSPS and SR TID 1500 measurements on frames: each mined with its frame's geometry.

The image is built with highdicom's legacy converter from three slices of the tiny demo export, then its
functional groups are made to differ per frame (as the standard allows): frame 2 gets its own PixelSpacing,
frame 3 a sagittal PlaneOrientation. A ruler on frame 2 must be sized with frame 2's spacing, one on frame 3
is not axial, an SR ruler on frame 1 uses the shared spacing, and an SR SCOORD3D on frame 2's plane is found there.
"""

from __future__ import annotations

import copy
import shutil
import subprocess

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import EnhancedMRImageStorage, LegacyConvertedEnhancedMRImageStorage

from bundle.io import dicom_write as dw
from bundle.io.dicom import image_info
from bundle.io.frames import frame_view
from bundle.io.records import Measurement
from bundle.mining.pipeline import Miner
from bundle.mining.rules.boxes import BoxRules, measurement_box
from bundle.pacs.folder import FolderSource

FRAME2_PIXEL_SPACING = [2.0, 1.5]  # DICOM order (row mm, column mm)
SAGITTAL = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
# highdicom's converter lists the source slices in ReferencedSeriesSequence (Common Instance Reference); dciodvfy
# counts only references made elsewhere in the instance, not the per-frame ConversionSourceAttributesSequence
KNOWN = "Error - ReferencedSeriesSequence present but Instance does not reference Instances"
EQUIPMENT = dict(manufacturer="TEST", manufacturer_model_name="T", software_versions="1", device_serial_number="1")


def _enhanced(slices: list[Dataset], kind: str) -> Dataset:
    """Legacy Converted Enhanced MR (or relabelled as Enhanced MR) with per-frame spacing (frame 2) and orientation (frame 3)."""
    for ds in slices:
        ds.WindowCenter, ds.WindowWidth = 500, 1000
        ds.SeriesDescription = "t1_mprage_tra_KM"
        ds.ProtocolName = "t1_mprage_tra_KM"
    mf = hd.legacy.LegacyConvertedEnhancedMRImage(
        slices, series_instance_uid=hd.UID(), series_number=50, sop_instance_uid=hd.UID(), instance_number=1
    )
    shared = mf.SharedFunctionalGroupsSequence[0]
    measures, orientation = shared.PixelMeasuresSequence, shared.PlaneOrientationSequence
    del shared.PixelMeasuresSequence, shared.PlaneOrientationSequence
    for k, group in enumerate(mf.PerFrameFunctionalGroupsSequence, start=1):
        group.PixelMeasuresSequence = copy.deepcopy(measures)
        group.PlaneOrientationSequence = copy.deepcopy(orientation)
        if k == 2:
            group.PixelMeasuresSequence[0].PixelSpacing = FRAME2_PIXEL_SPACING
        if k == 3:
            group.PlaneOrientationSequence[0].ImageOrientationPatient = SAGITTAL
    if kind == "enhanced":  # the MR Pulse Sequence and Enhanced Contrast/Bolus modules' way of saying T1 3D GRE + contrast
        mf.SOPClassUID = mf.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
        mf.SeriesDescription = mf.ProtocolName = "AX 3D"  # names that say neither T1 nor contrast
        del mf.ContrastBolusAgent, shared.UnassignedSharedConvertedAttributesSequence
        mf.PulseSequenceName, mf.EchoPulseSequence, mf.MRAcquisitionType = "*tfl3d1", "GRADIENT", "3D"
        agent = Dataset()
        agent.CodeValue, agent.CodingSchemeDesignator, agent.CodeMeaning = "C0001", "99TEST", "gadobutrol"
        mf.ContrastBolusAgentSequence = [agent]
    return mf


def _gsps(mf: Dataset, lines: dict[int | None, np.ndarray], source: Dataset) -> Dataset:
    layer = hd.pr.GraphicLayer(layer_name="MEASUREMENTS", order=1)
    annotations = [
        hd.pr.GraphicAnnotation(
            referenced_images=[mf],
            graphic_layer=layer,
            referenced_frame_number=frame,
            graphic_objects=[hd.pr.GraphicObject(graphic_type="POLYLINE", graphic_data=pts, units="PIXEL")],
        )
        for frame, pts in lines.items()
    ]
    ds = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[mf],
        series_instance_uid=hd.UID(),
        series_number=100,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        content_label="MEASUREMENTS",
        graphic_annotations=annotations,
        graphic_layers=[layer],
        content_creator_name="Reader^Alpha",
        **EQUIPMENT,
    )
    dw.copy_body_part(ds, source)  # HEAD is unpaired: Laterality may then stay absent (dciodvfy checks it)
    return ds


def _sr(mf: Dataset, frame1_line: np.ndarray, world: np.ndarray) -> Dataset:
    def group(n: int, region) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"lesion {n}"),
            referenced_region=region,
            finding_type=codes.SCT.Lesion,
            measurements=[hd.sr.Measurement(name=codes.SCT.LongAxis, value=1.0, unit=codes.UCUM.Millimeter)],
        )

    source = hd.sr.SourceImageForRegion.from_source_image(mf, referenced_frame_numbers=[1])
    planar = hd.sr.ImageRegion(graphic_type="POLYLINE", graphic_data=frame1_line, source_image=source)
    volumetric = hd.sr.ImageRegion3D(graphic_type="POLYLINE", graphic_data=world, frame_of_reference_uid=mf.FrameOfReferenceUID)
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person, observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name="Reader^Beta")
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=observer),
        procedure_reported=hd.sr.CodedConcept("24590-2", "LN", "MR Brain"),
        imaging_measurements=[group(1, planar), group(2, volumetric)],
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[mf],
        content=report,
        series_instance_uid=hd.UID(),
        series_number=200,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="TEST",
        is_complete=True,
    )


def _frame_world(mf: Dataset, frame: int, pts: np.ndarray) -> np.ndarray:
    """PIXEL (col, row) on a frame -> patient mm, through that frame's functional groups."""
    group = mf.PerFrameFunctionalGroupsSequence[frame - 1]
    ipp = np.asarray(group.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
    iop = np.asarray(group.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    row_mm, col_mm = (float(v) for v in group.PixelMeasuresSequence[0].PixelSpacing)
    return ipp + (pts[:, :1] - 0.5) * col_mm * iop[:3] + (pts[:, 1:] - 0.5) * row_mm * iop[3:]


@pytest.fixture(scope="module", params=["legacy", "enhanced"])
def mined(request, pacs_export, tmp_path_factory):
    kind = request.param
    t1c = sorted((pacs_export / "dicom" / "demo-000" / "t1c").iterdir())
    slices = [pydicom.dcmread(p) for p in t1c[14:17]]
    folder = tmp_path_factory.mktemp(f"mf-{kind}")
    mf = _enhanced(slices, kind)
    lines = {
        2: np.array([[10.0, 20.0], [30.0, 20.0]]),
        3: np.array([[10.0, 10.0], [10.0, 30.0]]),
        None: np.array([[40.0, 40.0], [40.0, 60.0]]),
    }
    frame1_line = np.array([[20.0, 10.0], [20.0, 25.0]])
    world = _frame_world(mf, 2, np.array([[12.0, 30.0], [12.0, 42.0]]))
    files = {"MF0001": mf, "PR0001.dcm": _gsps(mf, lines, slices[0]), "SR0001.dcm": _sr(mf, frame1_line, world)}
    for name, ds in files.items():
        ds.save_as(folder / name, enforce_file_format=True)
    out = folder.parent / f"{folder.name}-out"
    res = Miner(str(out), source=FolderSource(folder), workers=1, progress=False).run()
    return {"kind": kind, "folder": folder, "out": out, "res": res, "mf": mf, "sources": slices, "lines": lines, "frame1": frame1_line}


def _items(res: dict) -> dict[int, dict]:
    return {it["frame"]: it for v in res["datalist"].values() for it in v}


def test_each_frame_is_sized_with_its_own_spacing(mined):
    res = mined["res"]
    items = _items(res)
    assert sorted(items) == [1, 2]
    # the ruler on the sagittal frame 3; the one without ReferencedFrameNumber (all frames: which one? never guessed)
    assert res["report"]["exclusions"] == {"not_axial": 1, "reference_not_found": 1}
    unspecified = next(e for e in res["report"]["excluded_measurements"] if e["status"] == "reference_not_found")
    assert "no frame number" in unspecified["detail"] and unspecified["reader"] == "gsps"
    f2 = items[2]
    assert f2["spacing"] == [1.5, 2.0]  # (column mm, row mm) from frame 2's PixelMeasuresSequence
    # GSPS ruler (10, 20)-(30, 20): 20 columns of 1.5 mm; SR SCOORD3D (12, 30)-(12, 42): 12 rows of 2.0 mm
    assert sorted(f2["long_mm"]) == pytest.approx([24.0, 30.0])
    f1 = items[1]
    assert f1["spacing"] == [3.0, 3.0] and f1["long_mm"] == pytest.approx([45.0])  # SR ruler: 15 rows of the shared 3 mm
    rules = BoxRules()
    ruler = Measurement(kind="ruler", points=mined["lines"][2].tolist(), reader="gsps", source="x", spacing=[1.5, 2.0])
    box, _ = measurement_box(ruler, rules, shape=(int(mined["mf"].Columns), int(mined["mf"].Rows)))
    assert any(np.allclose(b, box) for b in f2["box"])
    prov = {p["reader"]: p for p in f2["provenance"]}
    assert prov["gsps"]["referenced_frame"] == 2 and prov["sr"]["referenced_frame"] == 2
    assert f1["provenance"][0]["referenced_frame"] == 1 and f1["provenance"][0]["reader"] == "sr"


def test_converted_slices_are_the_referenced_frames(mined):
    items = _items(mined["res"])
    mf = mined["mf"]
    by_uid = {str(s.SOPInstanceUID): s for s in mined["sources"]}
    for frame, item in items.items():
        assert item["image"].endswith(f"_f{frame}.nii.gz")
        img = nib.load(mined["out"] / item["image"])
        group = mf.PerFrameFunctionalGroupsSequence[frame - 1]
        source = by_uid[str(group.ConversionSourceAttributesSequence[0].ReferencedSOPInstanceUID)]
        np.testing.assert_array_equal(np.asarray(img.dataobj), source.pixel_array.T)
        assert np.allclose(np.diag(img.affine)[:2], item["spacing"])
        assert np.allclose(img.affine[:3, 3], [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient])
        assert img.affine[2, 2] == pytest.approx(float(source.SliceThickness))


def test_dciodvfy_accepts_the_objects(mined):
    if mined["kind"] != "legacy" or shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy checks the standard Legacy Converted Enhanced MR (the relabelled one lacks Enhanced MR modules)")
    for name in ("MF0001", "PR0001.dcm", "SR0001.dcm"):
        run = subprocess.run(["dciodvfy", str(mined["folder"] / name)], capture_output=True, text=True)
        errors = [ln for ln in (run.stdout + run.stderr).splitlines() if ln.startswith("Error") and not ln.startswith(KNOWN)]
        assert errors == [], (name, errors)


def test_sop_class_is_what_was_asked(mined):
    expected = LegacyConvertedEnhancedMRImageStorage if mined["kind"] == "legacy" else EnhancedMRImageStorage
    assert pydicom.dcmread(mined["folder"] / "MF0001", stop_before_pixels=True).SOPClassUID == expected


def test_series_attributes_come_from_where_each_class_keeps_them(mined):
    info = image_info(mined["mf"], "MF0001")
    assert info.frames == 3 and [f["spacing"] for f in info.per_frame] == [[3.0, 3.0], [1.5, 2.0], [3.0, 3.0]]
    assert info.per_frame[2]["orientation"] == SAGITTAL
    if mined["kind"] == "legacy":  # classic attributes inside the unassigned converted-attributes group
        assert (info.scanning_sequence, info.acquisition_type, info.contrast_agent) == (["GR", "IR"], "3D", "GADOLINIUM (SYNTHETIC)")
    else:
        assert (info.sequence_name, info.scanning_sequence, info.contrast_agent) == ("*tfl3d1", ["GR"], "gadobutrol")
    assert frame_view(info, 0) is None and frame_view(info, 4) is None
    assert frame_view(info, 2).spacing == [1.5, 2.0] and frame_view(info, 3).orientation == SAGITTAL
