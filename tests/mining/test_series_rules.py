"""The series rules against the table of names in docs/mining.md: one test per row, so the table and the rules cannot drift."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bundle.io.records import ImageInfo
from bundle.mining.rules.series import SeriesRules, check_series

DOC = Path(__file__).resolve().parents[2] / "docs" / "mining.md"
PLANES = {"ax": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], "sag": [0.0, 1.0, 0.0, 0.0, 0.0, -1.0], "cor": [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]}


def _table() -> list[dict[str, str]]:
    text = DOC.read_text()
    body = text.split("<!-- series-rules-table -->", 1)[1].split("<!-- /series-rules-table -->", 1)[0]
    lines = [ln.strip() for ln in body.strip().splitlines() if ln.strip().startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]]


ROWS = _table()


def _orientation(plane: str) -> list[float] | None:
    if plane == "none":
        return None
    if plane.startswith("ax+"):
        a = math.radians(float(plane[3:]))
        return [1.0, 0.0, 0.0, 0.0, math.cos(a), -math.sin(a)]
    return PLANES[plane]


def _info(row: dict[str, str]) -> ImageInfo:
    return ImageInfo(
        sop_instance_uid="1.2.3",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
        series_uid="1.2",
        study_uid="1",
        patient_id="p",
        modality=row["Modality"],
        series_description=row["SeriesDescription"],
        image_type=[v for v in row["ImageType"].split("\\")] if row["ImageType"] else [],
        rows=64,
        columns=64,
        frames=1,
        spacing=[1.0, 1.0],
        orientation=_orientation(row["plane"]),
        position=[0.0, 0.0, 0.0],
        slice_thickness=1.0,
        frame_of_reference_uid="1.9",
        study_date="20210101",
        instance_number=1,
        location="x",
        protocol_name=row["ProtocolName"],
        sequence_name=row["SequenceName"],
        scanning_sequence=row["ScanningSequence"].split("\\") if row["ScanningSequence"] else [],
        acquisition_type=row["MRAcquisitionType"],
        contrast_agent=row["ContrastBolusAgent"],
    )


def test_table_is_there_and_covers_both_outcomes():
    results = [r["result"] for r in ROWS]
    assert len(ROWS) >= 40
    assert results.count("accept") >= 15
    reasons = {r.split(":")[0] for r in results if r != "accept"}
    assert reasons == {"modality", "image_type", "series_description", "not_axial"}


@pytest.mark.parametrize("row", ROWS, ids=[f"{r['SeriesDescription']}|{r['plane']}|{r['result']}" for r in ROWS])
def test_row(row):
    failed = check_series(_info(row), SeriesRules())
    if row["result"] == "accept":
        assert failed is None, f"{row['why']}: rejected as {failed}"
        return
    reason, _, step = row["result"].partition(": ")
    assert failed is not None, f"{row['why']}: accepted"
    assert failed[0] == reason, failed
    assert failed[1].startswith(step), failed


def _row(desc: str, result: str) -> ImageInfo:
    return _info(next(r for r in ROWS if r["SeriesDescription"] == desc and r["result"] == result))


def test_rules_are_overridable():
    """What configs/mine.yaml's --series_rules#... overrides reach: each switch changes the outcome of its row."""
    agent_only = _row("AX T1", "accept")
    assert check_series(agent_only, SeriesRules(contrast_from_agent=False))[1].startswith("no_contrast")
    sub = _row("T1 POST SUBTRACTION", "series_description: subtraction")
    assert check_series(sub, SeriesRules(exclude={k: v for k, v in SeriesRules().exclude.items() if k != "subtraction"})) is None
    assert check_series(sub, SeriesRules(exclude=[])) is None  # a plain list of regexes works too
    bare = _row("MPR AX", "series_description: not_t1")
    assert check_series(bare, SeriesRules(include=[r"^mpr ax$"])) is None
    assert check_series(_row("MPR SAG", "not_axial"), SeriesRules(require_axial=False)) is None
    assert check_series(_row("AX T1 POST GAD", "not_axial"), SeriesRules(axial_tolerance_deg=45)) is None
    ge_exam = _row("AX BRAVO +C", "accept")
    ge_exam.protocol_name = "BRAIN DWI W/WO"  # GE names the exam: the protocol check can be turned off
    assert check_series(ge_exam, SeriesRules())[1].startswith("diffusion")
    assert check_series(ge_exam, SeriesRules(protocol_name_excludes=False)) is None
