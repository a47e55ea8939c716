"""Volume-level evaluation: 3D matching, FROC per volume, the operating point and its shipping to every serving path."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from bundle.engines import operating_point
from bundle.metrics import froc, volume_stats
from bundle.metrics.matching import ImageMatch
from bundle.metrics.volume import MatchRule, Volume, at_threshold, choose_operating_point, froc_figures, match_volume, to_detector_grid

LESION = [10, 10, 10, 20, 20, 20]  # 10 voxels a side, centre (15, 15, 15)


def _vol(scores, tp, n_truth, long_mm=None, patient="p", matched=None) -> Volume:
    tp = np.asarray(tp, dtype=bool)
    if matched is None:
        matched = np.where(tp, np.cumsum(tp) - 1, -1)
    m = ImageMatch(np.asarray(scores, float), tp, n_truth, np.asarray(matched, int))
    return Volume(f"{patient}.nii.gz", patient, m, np.asarray(long_mm if long_mm is not None else [15.0] * n_truth, float))


def test_match_iou_or_centre():
    # IoU of [10..20]^3 with [12..22]^3: 8^3 / (2 * 10^3 - 8^3) = 0.344
    assert match_volume([[12, 12, 12, 22, 22, 22]], [0.9], [LESION]).tp.tolist() == [True]
    # a huge box holds the centre, IoU 1000 / 64000 = 0.016 < 0.1: matched by the centre rule only
    big = [[0, 0, 0, 40, 40, 40]]
    assert match_volume(big, [0.9], [LESION]).tp.tolist() == [True]
    assert match_volume(big, [0.9], [LESION], MatchRule("iou", 0.1)).tp.tolist() == [False]
    # a small box beside the centre, overlapping a corner: IoU 1/1007 and no centre -> FP
    corner = [[9, 9, 9, 11, 11, 11]]
    assert match_volume(corner, [0.9], [LESION]).tp.tolist() == [False]
    # a box around the lesion's centre but tiny: IoU 8 / 1000 < 0.1; the centre rule alone accepts it
    tiny = [[14, 14, 14, 16, 16, 16]]
    assert match_volume(tiny, [0.9], [LESION], MatchRule("center")).tp.tolist() == [True]
    assert match_volume(tiny, [0.9], [LESION], MatchRule("iou", 0.1)).tp.tolist() == [False]


def test_each_lesion_matched_once_greedy_by_score():
    m = match_volume([[10, 10, 10, 20, 20, 20], [11, 11, 11, 21, 21, 21]], [0.3, 0.8], [LESION])
    assert m.tp.tolist() == [False, True] and m.matched_truth.tolist() == [-1, 0]
    with pytest.raises(ValueError, match="3D boxes"):
        match_volume([[0, 0, 5, 5]], [0.5], [LESION])
    with pytest.raises(ValueError, match="negative size"):
        match_volume([[5, 5, 5, 1, 9, 9]], [0.5], [LESION])


def test_truth_moves_to_the_detector_grid():
    """A volume stored with x reversed: truth written on the stored array lands on the RAS array the detector sees."""
    stored = np.diag([-2.0, 2.0, 3.0, 1.0])
    stored[0, 3] = 2.0 * 29  # 30 voxels along x
    ras = np.diag([2.0, 2.0, 3.0, 1.0])
    got = to_detector_grid([[0, 5, 1, 4, 8, 3]], stored, ras)
    np.testing.assert_allclose(got, [[26, 5, 1, 30, 8, 3]])
    np.testing.assert_allclose(to_detector_grid([LESION], ras, ras), [LESION])


def test_sensitivity_by_size_and_fp_per_normal_volume():
    vols = [
        _vol([0.9, 0.8, 0.4], [True, False, True], 3, long_mm=[5.0, 15.0, 45.0], matched=[0, -1, 2], patient="a"),
        _vol([0.7, 0.2], [False, False], 0, patient="n1"),  # normal volumes
        _vol([], [], 0, patient="n2"),
    ]
    at = at_threshold(vols, 0.5)
    assert at["sensitivity"] == pytest.approx(1 / 3)  # only the 5 mm lesion (score 0.9) kept
    assert at["sensitivity >=10 mm"] == 0.0 and at["by_size"]["<10 mm"] == {"lesions": 1, "found": 1}
    assert at["false_positives"] == 2 and at["fp_per_volume"] == pytest.approx(2 / 3)
    assert at["fp_per_normal_volume"] == pytest.approx(0.5) and at["normal_volumes"] == 2
    at = at_threshold(vols, 0.0)
    assert at["sensitivity >=10 mm"] == 0.5 and at["by_size"][">40 mm"]["found"] == 1 and at["fp_per_normal_volume"] == 1.0


def test_froc_per_volume_numbers():
    # 4 lesions in 2 volumes; FP scores 0.95, 0.6, 0.3, 0.1; TP scores 0.9, 0.7, 0.4 (one missed)
    vols = [
        _vol([0.95, 0.9, 0.3], [False, True, False], 2, patient="a"),
        _vol([0.7, 0.6, 0.4, 0.1], [True, False, True, False], 2, patient="b"),
    ]
    fr = froc_figures(vols)
    # curve (FP/volume, sensitivity): (0.5, .25) at .9, (0.5, .5) at .7, (1, .5) at .6, (1, .75) at .4, (1.5, .75), (2, .75)
    s = fr["sensitivity_at_fp"]
    assert s["0.5"] == pytest.approx(0.5) and s["1"] == pytest.approx(0.75) and s["2"] == pytest.approx(0.75)
    assert s["0.25"] == pytest.approx(0.0)  # below the curve's first point (0.5 FP, sensitivity 0 at score 0.95)
    assert fr["cpm"] == pytest.approx(np.mean(list(s.values())))
    # the vectorised resample curve gives MONAI's numbers exactly (weights 1 = the data itself)
    d = volume_stats.froc_data([v.match for v in vols])
    cpm, at = volume_stats.weighted_cpm(d, np.ones((1, 2)))
    assert cpm[0] == pytest.approx(fr["cpm"]) and at[0].tolist() == pytest.approx(list(s.values()))
    # and with a volume drawn twice: the same as listing it twice
    cpm2, _ = volume_stats.weighted_cpm(d, np.array([[2.0, 1.0]]))
    twice = froc.sensitivity_at([vols[0].match, vols[0].match, vols[1].match], volume_stats.VOLUME_FP_RATES)
    assert cpm2[0] == pytest.approx(np.mean(list(twice.values())))


def test_operating_point_lowest_threshold_within_both_targets():
    vols = [
        _vol([0.9, 0.8, 0.5, 0.3], [True, False, True, False], 2, patient="a"),
        _vol([0.6, 0.5, 0.2], [False, False, False], 0, patient="n"),  # normal: FP 0.6, 0.5 (tied with a TP), 0.2
    ]
    # FP per volume <= 1 (2 FPs over 2 volumes) and per normal volume <= 1: 0.8 and 0.6 kept, 0.5 tie would add one more
    op = choose_operating_point(vols, max_fp_per_volume=1.0, max_fp_per_normal_volume=1.0)
    assert op["score_threshold"] == 0.6 and op["validation"]["false_positives"] == 2
    # per normal volume <= 0.5: the normal volume may show no box -> above 0.6
    op = choose_operating_point(vols, max_fp_per_volume=1.0, max_fp_per_normal_volume=0.5)
    assert op["score_threshold"] == 0.8 and op["validation"]["fp_per_normal_volume"] == 0.0
    # the tie at 0.5 (a TP and a normal-volume FP) goes together: never 0.5 with loose FP per volume alone
    op = choose_operating_point(vols, max_fp_per_volume=1.5, max_fp_per_normal_volume=1.0)
    assert op["score_threshold"] == 0.6
    # nothing allowed at all: just above the top score
    op = choose_operating_point([_vol([0.9], [False], 0)], 0.0, 0.0)
    assert op["score_threshold"] > 0.9 and op["keeps_nothing_on_validation"]


def test_paired_test_identical_models_gives_p_1(tmp_path):
    from bundle.metrics.volume_report import compare

    img = tmp_path / "v"
    img.mkdir()
    truth = {"validation": [], "test": []}
    preds = {"validation": [], "test": []}
    rng = np.random.default_rng(0)
    for k in range(6):
        sec = "validation" if k < 3 else "test"
        lesions = [] if k % 3 == 0 else [[10, 10, 10, 20, 20, 20], [30, 30, 5, 36, 36, 8]]
        truth[sec].append(
            {
                "image": f"v/{k}.nii.gz",
                "box": lesions,
                "label": [0] * len(lesions),
                "patient": f"p{k}",
                "long_mm": [20.0, 12.0][: len(lesions)],
                "spacing": [2, 2, 3],
            }
        )
        boxes = [[11, 11, 11, 21, 21, 21], [0, 0, 0, 4, 4, 4]]
        preds[sec].append(
            {"image": str(tmp_path / f"v/{k}.nii.gz"), "box": boxes, "score": rng.uniform(0.1, 1, 2).tolist(), "label": [0, 0]}
        )
    (tmp_path / "dl.json").write_text(json.dumps(truth))
    for sec in preds:
        (tmp_path / f"{sec}.json").write_text(json.dumps({"predictions": preds[sec]}))
    pair = (str(tmp_path / "validation.json"), str(tmp_path / "test.json"))
    r = compare(str(tmp_path / "dl.json"), pair, pair, str(tmp_path / "cmp"), names=("A", "B"), n_bootstrap=200)
    for k, p in r["paired"].items():
        assert p["difference"] == 0.0 and p["p_value"] == 1.0, k
    assert (tmp_path / "cmp" / "compare_volume.md").read_text().count("P = 1.0000") == 4


def test_operating_point_file_and_stale_model(tmp_path, caplog):
    assert operating_point.load(tmp_path, default=0.4) == {"score_threshold": 0.4, "source": "default"}
    (tmp_path / "model.pt").write_bytes(b"weights one")
    operating_point.write(tmp_path, {"score_threshold": 0.87, "rule": "r"})
    doc = json.loads((tmp_path / "operating_point.json").read_text())
    assert doc["model_md5"] == operating_point.file_md5(tmp_path / "model.pt") and doc["model_file"] == "model.pt"
    got = operating_point.load(tmp_path)
    assert got["score_threshold"] == 0.87 and got["current"] is True
    (tmp_path / "model.pt").write_bytes(b"weights two")  # retrained: the file is stale
    with caplog.at_level(logging.WARNING):
        assert operating_point.load(tmp_path)["score_threshold"] == 0.87
        assert operating_point.load(tmp_path, default=0.3, on_stale="default")["score_threshold"] == 0.3
    stale = [r.getMessage() for r in caplog.records if "chosen for another model" in r.getMessage()]
    assert len(stale) == 2 and all("\n" not in m for m in stale)
    (tmp_path / "operating_point.json").write_text("{")
    assert operating_point.load(tmp_path, default=0.3)["source"] == "default"
