"""AIM 4.0 XML on an image of the simulated export: rulers, RECIST pairs, circles become boxes; bad XML is reported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest

from bundle.mining.pipeline import Miner
from bundle.pacs.folder import FolderSource

NS = "gme://caCORE.caCORE/4.4/edu.northwestern.radiology.AIM"


def _markup(xsi: str, uid: str, sop: str, pts, frame: int | None = 1) -> str:
    coords = "".join(
        f'<TwoDimensionSpatialCoordinate><coordinateIndex value="{i}"/><x value="{x}"/><y value="{y}"/></TwoDimensionSpatialCoordinate>'
        for i, (x, y) in enumerate(pts)
    )
    fr = f'<referencedFrameNumber value="{frame}"/>' if frame else ""
    return (
        f'<MarkupEntity xsi:type="{xsi}"><uniqueIdentifier root="{uid}"/><shapeIdentifier value="1"/><includeFlag value="true"/>'
        f'<imageReferenceUid root="{sop}"/>{fr}<twoDimensionSpatialCoordinateCollection>{coords}'
        "</twoDimensionSpatialCoordinateCollection></MarkupEntity>"
    )


def _annotation(uid: str, date: str, study_uid: str, markups: list[str]) -> str:
    return (
        f'<ImageAnnotation><uniqueIdentifier root="{uid}"/><dateTime value="{date}"/><name value="Lesion"/>'
        f"<markupEntityCollection>{''.join(markups)}</markupEntityCollection>"
        '<imageReferenceEntityCollection><ImageReferenceEntity xsi:type="DicomImageReferenceEntity">'
        f'<imageStudy><instanceUid root="{study_uid}"/><startDate value="20210104"/></imageStudy>'
        "</ImageReferenceEntity></imageReferenceEntityCollection></ImageAnnotation>"
    )


def aim_document(uid: str, reader: str, annotations: list[str]) -> str:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ImageAnnotationCollection xmlns="{NS}" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" aimVersion="AIMv4_0">'
        f'<uniqueIdentifier root="{uid}"/><dateTime value="2021-03-04T10:20:30"/>'
        f'<user><name value="{reader}"/><loginName value="reader1"/></user>'
        f"<imageAnnotations>{''.join(annotations)}</imageAnnotations></ImageAnnotationCollection>\n"
    )


@pytest.fixture(scope="module")
def aim_folder(pacs_export, tmp_path_factory):
    """The referenced image of a kept ruler, copied out of the export, plus AIM documents and broken XML beside it."""
    record = json.loads((pacs_export / "record.json").read_text())
    mark = next(
        m for p in record["patients"] for m in p["marks"] if m["status"] == "kept" and m["kind"] == "ruler" and m["units"] == "PIXEL"
    )
    src = pacs_export / "dicom" / mark["patient"] / "t1c"
    image = next(
        f
        for f in sorted(src.iterdir())
        if pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID == mark["referenced_sop_instance_uid"]
    )
    ds = pydicom.dcmread(image, stop_before_pixels=True)
    root = tmp_path_factory.mktemp("aim_src")
    shutil.copy(image, root / "IM0001")
    sop, study = mark["referenced_sop_instance_uid"], str(ds.StudyInstanceUID)
    cols, rows = int(ds.Columns), int(ds.Rows)
    # RECIST pair away from the ruler: long axis 8 px along x at row rows/4, short axis 4 px across its middle
    cy = rows / 4
    recist = [[[4.0, cy], [12.0, cy]], [[8.0, cy - 2], [8.0, cy + 2]]]
    circle = [[cols - 8.0, rows - 8.0], [cols - 5.0, rows - 8.0]]  # centre, a point 3 px away
    doc = aim_document(
        "2.25.1001",
        "Reader^Aim",
        [
            _annotation("2.25.1", "2021-03-04T10:20:30", study, [_markup("TwoDimensionMultiPoint", "2.25.11", sop, mark["points"])]),
            _annotation(
                "2.25.2",
                "2021-03-04T10:21:00",
                study,
                [
                    _markup("TwoDimensionMultiPoint", "2.25.21", sop, recist[0]),
                    _markup("TwoDimensionMultiPoint", "2.25.22", sop, recist[1], frame=None),
                    _markup("TwoDimensionCircle", "2.25.23", sop, circle),
                    _markup("TwoDimensionPoint", "2.25.24", sop, [[5.0, 5.0]]),
                    _markup("TwoDimensionMultiPoint", "2.25.25", "2.25.999999", [[1.0, 1.0], [20.0, 1.0]]),
                ],
            ),
        ],
    )
    (root / "aim").mkdir()
    (root / "aim" / "ruler.xml").write_text(doc)
    (root / "aim" / "broken.xml").write_text(doc[: len(doc) // 2])
    (root / "aim" / "other.xml").write_text('<?xml version="1.0"?><config><item/></config>')
    return root, mark, ds


@pytest.fixture(scope="module")
def mined(aim_folder, tmp_path_factory):
    root, _, _ = aim_folder
    out = tmp_path_factory.mktemp("aim_mined")
    return out, Miner(str(out), source=FolderSource(root), workers=1, progress=False).run()


def test_aim_ruler_becomes_the_records_box(mined, aim_folder):
    out, res = mined
    _, mark, ds = aim_folder
    items = [it for v in res["datalist"].values() for it in v]
    assert len(items) == 1 and items[0]["sop_instance_uid"] == mark["referenced_sop_instance_uid"]
    it = items[0]
    assert (out / it["image"]).exists() and it["patient"] == mark["patient"]
    prov = {p["kind"]: p for p in it["provenance"]}
    assert set(prov) == {"ruler", "recist", "circle"}
    # the ruler: the same box the simulator expects from the same line drawn in GSPS/SR
    box = it["box"][[p["kind"] for p in it["provenance"]].index("ruler")]
    assert box == pytest.approx(mark["box"], abs=1e-3)
    r = prov["ruler"]
    assert (r["reader"], r["operator"], r["sop_instance_uid"], r["date"]) == ("aim", "Reader^Aim", "2.25.1", "20210304102030")
    assert r["source"] == "aim/ruler.xml" and r["referenced_sop_instance_uid"] == mark["referenced_sop_instance_uid"]
    # the RECIST pair (two MultiPoint lines of one annotation) covers both segments; the circle is its bounding square
    sx = float(ds.PixelSpacing[1])
    rb = it["box"][[p["kind"] for p in it["provenance"]].index("recist")]
    cy = int(ds.Rows) / 4
    assert rb[0] <= 4 and rb[2] >= 12 and rb[1] <= cy - 2 and rb[3] >= cy + 2
    assert it["long_mm"][[p["kind"] for p in it["provenance"]].index("recist")] == pytest.approx(8 * sx)
    cb = it["box"][[p["kind"] for p in it["provenance"]].index("circle")]
    assert cb == pytest.approx([int(ds.Columns) - 11, int(ds.Rows) - 11, int(ds.Columns) - 5, int(ds.Rows) - 5])


def test_bad_xml_and_unusable_markups_are_reported(mined):
    _, res = mined
    rep = res["report"]
    issues = {i["source"]: i for i in rep["file_issues"]}
    assert issues["aim/broken.xml"]["reason"] == "malformed_xml" and "aim/broken.xml" in issues
    assert issues["aim/other.xml"]["reason"] == "unsupported_object" and "config" in issues["aim/other.xml"]["detail"]
    assert rep["exclusions"] == {"malformed_xml": 1, "unsupported_object": 1, "unsupported_graphic": 1, "reference_not_found": 1}
    assert rep["counts"]["objects_by_type"] == {"aim": 1, "image": 1}
    assert rep["per_source"]["aim"] == {
        "measurements_found": 5,
        "boxes_kept": 3,
        "exclusions": {"reference_not_found": 1, "unsupported_graphic": 1},
    }


def test_aim_in_the_full_export_merges_with_the_gsps_ruler(aim_folder, pacs_export, tmp_path):
    """Dropped into the whole export, the AIM ruler is the same lesion as the record's mark: one box, merged by the duplicate rule."""
    root, mark, _ = aim_folder
    src = tmp_path / "export"
    shutil.copytree(pacs_export / "dicom", src)
    shutil.copy(root / "aim" / "ruler.xml", src / "ruler.xml")
    res = Miner(str(tmp_path / "out"), source=FolderSource(src), workers=1, convert=False, progress=False).run()
    record = json.loads((pacs_export / "record.json").read_text())
    assert res["report"]["counts"]["boxes_kept"] == record["expected_counts"]["kept"] + 2  # + the RECIST pair and the circle
    it = next(it for v in res["datalist"].values() for it in v if it["sop_instance_uid"] == mark["referenced_sop_instance_uid"])
    first = next(p for p in it["provenance"] if p["sop_instance_uid"] == mark["sop_instance_uid"])  # the earlier GSPS/SR mark wins
    assert it["box"][it["provenance"].index(first)] == pytest.approx(mark["box"], abs=1e-3)
    assert first["merged"] == [{"source": "ruler.xml", "sop_instance_uid": "2.25.1", "operator": "Reader^Aim", "date": "20210304102030"}]
    expected = dict(record["expected_counts"])
    expected.pop("kept")
    for reason in ("duplicate", "reference_not_found", "unsupported_graphic"):
        expected[reason] = expected.get(reason, 0) + 1
    assert res["report"]["exclusions"] == dict(sorted(expected.items()))


def test_looks_like_xml_does_not_take_dicom():
    from bundle.mining.readers.aim import looks_like_xml

    assert looks_like_xml(b"\xef\xbb\xbf  <?xml version='1.0'?><a/>") and not looks_like_xml(b"<" + b"\0" * 127 + b"DICM")
    assert not looks_like_xml(Path(__file__).read_bytes())
