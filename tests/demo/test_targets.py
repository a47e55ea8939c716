"""Issue 24's targets on the two results pages: every target with its figure and by how much it is missed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundle.demo.targets import check, figures_of, section


def _at(found: int, lesions: int, small: tuple[int, int], fp: float, fp_normal: float | None) -> dict:
    return {
        "sensitivity >=10 mm": found / lesions,
        "fp_per_volume": fp,
        "fp_per_normal_volume": fp_normal,
        "by_size": {"10-20 mm": {"found": small[0], "lesions": small[1]}, "20-40 mm": {"found": 5, "lesions": 5}},
    }


def test_each_target_says_met_or_by_how_much_and_an_unmeasured_one_is_not_called_met():
    f = figures_of(_at(60, 100, (18, 40), 0.75, None))
    assert f == {"sensitivity_ge10": 0.6, "sensitivity_10_20": 0.45, "fp_per_volume": 0.75, "fp_per_normal_volume": None}
    rows = {r["what"]: r for r in check(f)}
    assert rows["sensitivity, lesions >= 10 mm"]["verdict"] == "short by 0.350"
    assert rows["sensitivity, lesions 10-20 mm"]["verdict"] == "short by 0.450"
    assert rows["false boxes per volume"]["verdict"] == "over by 0.250" and rows["false boxes per volume"]["met"] is False
    assert rows["false boxes per normal volume"]["met"] is None  # no normal test volume: neither met nor missed
    good = check(figures_of(_at(96, 100, (9, 10), 0.5, 0.25)))
    assert [r["met"] for r in good] == [True] * 4  # the bounds themselves are met


@pytest.mark.parametrize(
    ("variant", "verdict"),
    [
        (_at(94, 100, (9, 10), 0.4, 0.2), "met"),  # 0.02 below the stored grid: within 0.03
        (_at(92, 100, (9, 10), 0.4, 0.2), "sensitivity -0.040 from the stored grid"),
        (_at(96, 100, (9, 10), 1.1, 0.2), "false boxes per volume over by 0.600"),
    ],
)
def test_a_protocol_variant_must_stay_within_003_of_the_stored_grid_and_the_false_box_limits(variant: dict, verdict: str):
    rows = check(figures_of(_at(96, 100, (9, 10), 0.4, 0.2)), {"slices_6mm": figures_of(variant)})
    assert rows[-1]["what"] == "protocol variant `slices_6mm`" and rows[-1]["verdict"] == verdict
    assert rows[-1]["met"] is (verdict == "met")


def test_both_pages_print_the_table(tmp_path: Path):
    from bundle.demo.ablation_page import pool, write_page

    lines = section("Against the targets: (b)", figures_of(_at(60, 100, (18, 40), 0.75, 0.5)))
    assert "**Against the targets: (b)**: 0 of 4 targets met, 4 missed" in lines[1]
    assert "| sensitivity, lesions 10-20 mm | >= 0.9 | 0.450 | short by 0.450 |" in lines

    def metrics(found: int) -> dict:
        at = _at(found, 50, (10, 20), 0.8, 0.5) | {"found_ge10": found, "lesions_ge10": 50, "false_positives": 8}
        at |= {"volumes": 10, "normal_volumes": 2}
        return {
            "operating_point": {"score_threshold": 1.0, "validation": {"found_ge10": found, "lesions_ge10": 50}},
            "test": {
                "at_operating_point": at,
                "froc": {"sensitivity_at_fp": {"1": 0.5}, "cpm": 0.5},
                "froc_ge_10mm": {"sensitivity_at_fp": {}},
            },
        }

    reps = [{"data_seed": 1, "train_seed": 0, "seconds": 1, "arms": {"ignore": metrics(30), "context": metrics(45)}}]
    summary = {"plan": {"data_seeds": [1], "train_seeds": [0], "size": "tiny", "epochs": 3}, "replicates": reps, "pooled": pool(reps)}
    text = write_page(summary, tmp_path / "results.md", tmp_path / "ablation.json").read_text()
    # validation chose context (45 of 50 against 30): the targets table is about the chosen arm, pooled
    assert "**Against the targets: + ignore + 2.5D (3 slices), the arm chosen at 3 epochs, pooled**: 0 of 4 targets met" in text
    assert "| sensitivity, lesions >= 10 mm | >= 0.95 | 0.900 | short by 0.050 |" in text
