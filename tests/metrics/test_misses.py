"""Why a lesion is missed (bundle.metrics.misses): each kind on hand-made boxes, and a datalist read end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bundle.metrics.misses import analyse, pool, summary_markdown, volume_misses
from bundle.metrics.volume import MatchRule

FOUND = [0, 0, 0, 12, 12, 4]
WEAK = [20, 20, 0, 35, 35, 4]
COVERED = [50, 50, 0, 62, 62, 4]  # only an oversized box touches it
UNSEEN = [100, 0, 0, 125, 20, 4]
SMALL = [150, 150, 0, 156, 156, 4]  # 6 mm: not a lesion >= 10 mm, not analysed
GT = np.array([FOUND, WEAK, COVERED, UNSEEN, SMALL], dtype=float)
LONG = np.array([12.0, 15.0, 12.0, 25.0, 6.0])
PRED = [FOUND, WEAK, [40, 40, 0, 100, 100, 40], [200, 200, 0, 210, 210, 6]]
SCORES = [5.0, 1.0, 4.0, 3.0]


def test_each_missed_lesion_gets_its_kind_and_each_false_box_its_place() -> None:
    v = volume_misses(PRED, SCORES, GT, LONG, threshold=2.0, rule=MatchRule(), spacing=(1.0, 1.0, 2.0))
    assert v["lesions"] == [(12.0, "found"), (15.0, "below_threshold"), (12.0, "misplaced"), (25.0, "unseen")]
    assert v["gaps"] == [1.0]  # the weak box scores 1.0 under the threshold of 2.0
    # the oversized box covers a lesion (3D IoU 0.004, its centre outside it): a false box on a lesion
    assert v["false_boxes"] == ["on_lesion", "elsewhere"]
    assert v["false_box_mm"] == [(60.0, 80.0), (10.0, 12.0)]  # z in mm through the given spacing
    ((inplane, along_z),) = v["overlaps"]
    assert inplane == pytest.approx(144 / 3600) and along_z == pytest.approx(4 / 40)


def test_a_lesion_whose_box_went_to_its_neighbour_is_taken_and_a_normal_volumes_box_is_named() -> None:
    twins = np.array([[0, 0, 0, 12, 12, 4], [1, 1, 0, 13, 13, 4]], dtype=float)
    v = volume_misses([[0, 0, 0, 12, 12, 4]], [3.0], twins, np.array([12.0, 12.0]), 1.0, MatchRule())
    assert [k for _, k in v["lesions"]] == ["found", "taken"]
    normal = volume_misses([[0, 0, 0, 5, 5, 2]], [3.0], np.zeros((0, 6)), np.zeros(0), 1.0, MatchRule())
    assert normal["false_boxes"] == ["normal_volume"] and normal["lesions"] == []
    assert volume_misses([[0, 0, 0, 5, 5, 2]], [0.5], np.zeros((0, 6)), np.zeros(0), 1.0, MatchRule())["false_boxes"] == []


def test_a_datalist_and_its_predictions_are_analysed_pooled_and_tabled(tmp_path) -> None:
    dl = tmp_path / "datalist.json"
    a = {"image": "a.nii.gz", "box": GT.tolist(), "label": [0] * len(GT), "long_mm": LONG.tolist()}
    items = [a, {"image": "b.nii.gz", "box": [], "label": [], "long_mm": []}]
    dl.write_text(json.dumps({"test": items}))
    preds = tmp_path / "predictions.json"
    recs = [
        {"image": str(tmp_path / "a.nii.gz"), "box": PRED, "score": SCORES},
        {"image": str(tmp_path / "b.nii.gz"), "box": [FOUND], "score": [9.0]},
    ]
    preds.write_text(json.dumps({"predictions": recs}))
    r = analyse(str(dl), str(preds), 2.0)
    assert r["volumes"] == 2
    assert r["lesions_ge10"]["10-20 mm"] == {"found": 1, "below_threshold": 1, "taken": 0, "misplaced": 1, "unseen": 0}
    assert r["lesions_ge10"][">= 20 mm"]["unseen"] == 1
    assert r["false_boxes"] == {"on_lesion": 1, "normal_volume": 1, "elsewhere": 1}
    both = pool([r, r])
    assert both["volumes"] == 4 and both["false_boxes"]["normal_volume"] == 2 and len(both["misplaced_overlap"]) == 2
    page = summary_markdown({"as stored": r, "pooled": both})
    assert "| as stored | 10-20 mm | 3 | 1 | 1 | 0 | 1 | 0 |" in page
    assert "| pooled | 4 | 2 | 2 | 2 | 1.00 (1.00-1.00; n=2) | 0.04 / 0.10 (n=2) | 12.0 / 6.0 |" in page  # the weak box: 1.0 under 2.0
    assert "each replicate at its own operating point" not in page.splitlines()[0]  # the first set names its threshold
