"""Every metric pinned on small hand-worked cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bundle.datalist.rules import SizeRule
from bundle.inference.predictions import load_predictions, pair
from bundle.metrics import bootstrap, breakdown, froc, study
from bundle.metrics.coco import coco_metrics
from bundle.metrics.matching import best_f1_threshold, counts_at, match_image, prf, threshold_for_precision
from bundle.metrics.report import compare, evaluate, match_all

GT = [[10, 10, 20, 20]]


def test_no_predictions():
    m = match_image([], [], GT)
    assert counts_at([m], 0.0) == (0, 0, 1)
    assert prf(0, 0, 1) == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "fn": 1}
    t, best = best_f1_threshold([m])
    assert t == float("inf") and best["fn"] == 1


def test_no_truth_all_predictions_are_false_positives():
    m = match_image([[0, 0, 5, 5], [1, 1, 4, 4]], [0.9, 0.2], [])
    assert counts_at([m], 0.0) == (0, 2, 0)
    assert counts_at([m], 0.5) == (0, 1, 0)


def test_several_predictions_on_one_truth_only_the_best_scored_matches():
    # both overlap the truth with IoU >= 0.5; the higher score wins, the other is a FP
    m = match_image([[10, 10, 20, 21], [10, 10, 20, 20]], [0.6, 0.9], GT)
    assert m.tp.tolist() == [False, True]
    assert m.matched_truth.tolist() == [-1, 0]
    assert counts_at([m], 0.0) == (1, 1, 0)
    r = prf(1, 1, 0)
    assert r["precision"] == 0.5 and r["recall"] == 1.0 and r["f1"] == pytest.approx(2 / 3)


def test_iou_threshold_and_centre_criterion():
    pred = [[14, 10, 24, 20]]  # IoU with GT = 60/140 = 0.4286, centre (19, 15) inside GT
    assert not match_image(pred, [1.0], GT, iou_threshold=0.5).tp[0]
    assert match_image(pred, [1.0], GT, iou_threshold=0.4).tp[0]
    assert match_image(pred, [1.0], GT, criterion="center").tp[0]
    assert not match_image([[19, 19, 29, 29]], [1.0], GT, iou_threshold=0.1).tp[0]  # IoU 1/199
    assert match_image([[19, 19, 29, 29]], [1.0], GT, criterion="center").tp.tolist() == [False]


def test_ties_in_score_threshold_keeps_all_tied_predictions():
    # two images; a TP and a FP share the score 0.8: a threshold cannot separate them
    m1 = match_image([[10, 10, 20, 20]], [0.8], GT)
    m2 = match_image([[50, 50, 60, 60]], [0.8], [])
    t, best = best_f1_threshold([m1, m2])
    assert t == 0.8
    assert (best["tp"], best["fp"], best["fn"]) == (1, 1, 0)


def test_best_threshold_prefers_the_maximum_f1():
    m = match_image([[10, 10, 20, 20], [40, 40, 50, 50], [60, 60, 70, 70]], [0.9, 0.5, 0.95], GT + [[40, 40, 50, 50]])
    # order 0.95 FP, 0.9 TP, 0.5 TP: F1 at 0.95 = 0, at 0.9 = 0.5, at 0.5 = 0.8
    t, best = best_f1_threshold([m])
    assert t == 0.5 and best["f1"] == pytest.approx(0.8)


def test_bad_boxes_name_what_is_wrong():
    with pytest.raises(ValueError, match="img7 predictions: box 0 has negative size"):
        match_image([[5, 5, 1, 9]], [0.5], GT, where="img7")
    with pytest.raises(ValueError, match="2D boxes but truth is 3D"):
        match_image([[1, 1, 5, 5]], [0.5], [[1, 1, 1, 5, 5, 5]])


def test_froc_hand_worked():
    # 2 images, 2 truths. scores: 0.9 TP, 0.8 FP, 0.7 TP, 0.6 FP, 0.5 FP
    m1 = match_image([[10, 10, 20, 20], [30, 30, 35, 35], [0, 0, 2, 2]], [0.9, 0.8, 0.5], GT)
    m2 = match_image([[10, 10, 20, 20], [30, 30, 35, 35]], [0.7, 0.6], GT)
    fps, sens = froc.froc_curve([m1, m2])  # MONAI's order: thresholds 0.5 ... 0.9, then nothing kept
    assert fps.tolist() == [1.5, 1.0, 0.5, 0.5, 0.0, 0.0]
    assert sens.tolist() == [1.0, 1.0, 1.0, 0.5, 0.5, 0.0]
    s = froc.sensitivity_at([m1, m2], (0.125, 0.5, 1.0, 8.0))
    assert s == {"0.125": 0.5, "0.5": 1.0, "1": 1.0, "8": 1.0}
    summ = froc.froc_summary([m1, m2])
    assert summ["cpm"] == pytest.approx((0.5 + 0.5 + 1 + 1 + 1 + 1 + 1) / 7)
    assert summ["fp_unit"] == "image" and "FP per image" in summ["label"] and summ["n_units"] == 2


def test_froc_interpolates_between_points_per_image_and_per_patient():
    """A TP and a FP tied at 0.9 make a sloped FROC segment: interpolation reads half-way, a step function reads 0.

    Patient A: slice a1 has a truth found at 0.9, slice a2 a FP at 0.9. Patient B: slice b1 a truth found
    at 0.4, slice b2 a FP at 0.3. Per patient (2 units) the curve runs (0, 0) -> (0.5, 0.5) at threshold
    0.9, so at 0.25 FP per patient the sensitivity is 0.25 by interpolation (the step value would be 0).
    """
    a1 = match_image([[10, 10, 20, 20]], [0.9], GT)
    a2 = match_image([[40, 40, 50, 50]], [0.9], [])
    b1 = match_image([[10, 10, 20, 20]], [0.4], GT)
    b2 = match_image([[40, 40, 50, 50]], [0.3], [])
    per_patient = froc.by_patient([a1, a2, b1, b2], ["A", "A", "B", "B"])
    assert [m.n_truth for m in per_patient] == [1, 1] and per_patient[0].tp.tolist() == [True, False]
    s = froc.sensitivity_at(per_patient, (0.125, 0.25, 0.5, 1.0, 8.0))
    assert s == {"0.125": 0.125, "0.25": 0.25, "0.5": 1.0, "1": 1.0, "8": 1.0}
    summ = froc.froc_summary(per_patient, "patient")
    assert summ["cpm"] == pytest.approx((0.125 + 0.25 + 1 + 1 + 1 + 1 + 1) / 7)
    assert "FP per patient" in summ["label"] and summ["n_units"] == 2
    # per image (4 units) the same sloped segment ends at 0.25 FP per image
    per_image = froc.sensitivity_at([a1, a2, b1, b2], (0.0625, 0.125, 0.25))
    assert per_image == {"0.0625": 0.125, "0.125": 0.25, "0.25": 1.0}


def test_froc_without_truth_or_predictions():
    assert froc.froc_summary([match_image([], [], [])])["cpm"] == 0.0
    assert froc.froc_summary([match_image([], [], GT)])["cpm"] == 0.0


def test_size_rule_restriction_ignores_truth_outside_the_rule():
    # at 1 mm pixels: truth 5 mm (too small), 15 mm, 80 mm (too large); predictions on the 5 mm one,
    # the 15 mm one, and one on nothing
    truth = [[0, 0, 5, 5], [20, 20, 35, 30], [40, 0, 120, 60]]
    m = match_image([[0, 0, 5, 5], [20, 20, 35, 30], [200, 200, 210, 210], [40, 0, 120, 60]], [0.9, 0.8, 0.7, 0.6], truth)
    (r,) = breakdown.restrict_to_size([m], [truth], [(1.0, 1.0)], SizeRule())
    assert r.n_truth == 1 and r.scores.tolist() == [0.8, 0.7] and r.tp.tolist() == [True, False]
    assert r.matched_truth.tolist() == [0, -1]
    assert counts_at([r], 0.0) == (1, 1, 0) and counts_at([m], 0.0) == (3, 1, 0)
    (none,) = breakdown.restrict_to_size([match_image([[1, 1, 4, 4]], [0.5], [])], [[]], [(1.0, 1.0)], SizeRule())
    assert none.n_truth == 0 and none.tp.tolist() == [False]


def test_bootstrap_ci_contains_point_and_is_seeded():
    counts = np.array([[3, 1, 0], [2, 0, 1], [0, 2, 2], [4, 1, 1], [1, 0, 0]])
    a = bootstrap.bootstrap_ci(counts, 1000, seed=3)
    b = bootstrap.bootstrap_ci(counts, 1000, seed=3)
    assert a == b
    f1 = a["f1"]
    assert f1["value"] == pytest.approx(2 * 10 / (2 * 10 + 4 + 4))
    assert f1["ci_low"] < f1["value"] < f1["ci_high"]


def test_paired_test_identical_models_p_above_half():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 5, size=(30, 3))
    t = bootstrap.paired_test(counts, counts.copy(), 1000, seed=1)
    assert t["difference"] == 0.0 and t["p_value"] > 0.5


def test_paired_test_clearly_better_model_p_below_005():
    # A finds 4 of 5 lesions per patient with 1 FP; B finds 2 of 5 with 3 FP
    a = np.tile([4, 1, 1], (25, 1))
    b = np.tile([2, 3, 3], (25, 1))
    b[::5] = [4, 1, 1]  # B is as good on some patients: the test still sees A ahead
    t = bootstrap.paired_test(a, b, 1000, seed=0)
    assert t["difference"] > 0.2 and t["ci_low"] > 0 and t["p_value"] < 0.05


def _easy_and_hard_patients() -> tuple[np.ndarray, np.ndarray]:
    """Patients differ far more among themselves than the models do; A is a little better on every patient."""
    a = np.array([[9, 1, 1]] * 10 + [[2, 8, 8]] * 10)
    b = np.array([[8, 2, 2]] * 10 + [[1, 9, 9]] * 10)
    return a, b


def test_paired_test_resamples_the_same_patients_for_both_models():
    """Paired, the small consistent gain is significant; resampling each model's patients apart drowns it in
    patient mix. An implementation with unpaired resamples fails this test."""
    a, b = _easy_and_hard_patients()
    t = bootstrap.paired_test(a, b, 2000, seed=0)
    assert t["difference"] == pytest.approx(220 / 400 - 180 / 400)  # pooled F1 = 2TP / (2TP + FP + FN): 0.55 - 0.45
    assert t["ci_low"] > 0 and t["p_value"] < 0.01
    # the unpaired version on the same data: its interval covers 0, so the data tell the two apart
    f1 = lambda w, c: bootstrap._prf(w @ c)["f1"]  # noqa: E731
    unpaired = f1(bootstrap.resample_weights(20, 2000, 1), a) - f1(bootstrap.resample_weights(20, 2000, 2), b)
    assert np.percentile(unpaired, 2.5) < 0 < np.percentile(unpaired, 97.5)


def test_paired_test_p_value_has_the_plus_one_floor():
    """A better on every patient: no resample has a difference <= 0, so P = 2 x 1/(n+1), never 0."""
    a, b = _easy_and_hard_patients()
    t = bootstrap.paired_test(a, b, 999, seed=4)
    assert t["ci_low"] > 0
    assert t["p_value"] == pytest.approx(2 / 1000)


def test_study_level_auc_and_threshold():
    ids, score, abnormal = study.study_scores(
        [np.array([0.9]), np.array([]), np.array([0.2, 0.4]), np.array([0.7])], [1, 0, 0, 1], ["s1", "s1", "s2", "s3"]
    )
    assert ids == ["s1", "s2", "s3"]
    assert score.tolist() == [0.9, 0.4, 0.7] and abnormal.tolist() == [True, False, True]
    thr = study.best_threshold(score, abnormal)
    assert 0.4 < thr <= 0.7
    r = study.study_metrics(score, abnormal, thr)
    assert r["auc"] == 1.0 and r["sensitivity"] == 1.0 and r["specificity"] == 1.0
    assert study.study_metrics(score[abnormal], abnormal[abnormal], 0.5)["auc"] is None


def test_breakdown_by_size_and_label():
    truth = [[0, 0, 5, 5], [20, 20, 35, 30], [50, 50, 80, 60]]  # 5, 15, 30 px -> 5, 15, 30 mm at 1 mm
    m = match_image([[20, 20, 35, 30], [0, 0, 4, 5]], [0.9, 0.3], truth)
    r = breakdown.breakdown([m], [truth], [[0, 0, 1]], [[[20, 20, 35, 30], [0, 0, 4, 5]]], [[0, 0]], [(1.0, 1.0)], threshold=0.5)
    assert r["size"]["<10 mm"] == {"truth": 1, "detected": 0, "predicted": 0, "true_positive": 0, "recall": 0.0, "precision": None}
    assert r["size"]["10-20 mm"]["recall"] == 1.0 and r["size"]["10-20 mm"]["precision"] == 1.0
    assert r["size"]["20-40 mm"]["recall"] == 0.0
    assert r["label"]["0"]["truth"] == 2 and r["label"]["1"]["truth"] == 1
    assert breakdown.long_axis_mm([[0, 0, 10, 4]], (0.5, 2.0)).tolist() == [8.0]


def _random_case(rng, n_images=12):
    gts, preds = [], []
    for _ in range(n_images):
        g = []
        for _ in range(rng.integers(0, 4)):
            x, y = rng.uniform(0, 80, 2)
            w, h = rng.uniform(5, 20, 2)
            g.append([x, y, x + w, y + h])
        p = []
        for b in g:
            if rng.random() < 0.8:
                j = rng.normal(0, 2.5, 4)
                p.append([b[0] + j[0], b[1] + j[1], b[2] + j[2] + 0.1 + abs(j[0]), b[3] + j[3] + 0.1 + abs(j[1])])
        for _ in range(rng.integers(0, 3)):
            x, y = rng.uniform(0, 80, 2)
            p.append([x, y, x + rng.uniform(4, 15), y + rng.uniform(4, 15)])
        p = [[b[0], b[1], max(b[2], b[0] + 1), max(b[3], b[1] + 1)] for b in p]
        gts.append(np.array(g).reshape(-1, 4))
        preds.append(np.array(p).reshape(-1, 4))
    scores = [rng.uniform(0, 1, len(p)) for p in preds]
    return gts, preds, scores


def test_coco_map_agrees_with_pycocotools():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gts, preds, scores = _random_case(np.random.default_rng(5), 20)
    ours = coco_metrics(preds, scores, [np.zeros(len(p)) for p in preds], gts, [np.zeros(len(g)) for g in gts])
    images, anns, dets = [], [], []
    for i, (g, p, s) in enumerate(zip(gts, preds, scores)):
        images.append({"id": i, "width": 100, "height": 100})
        for b in g:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": 1,
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                    "area": (b[2] - b[0]) * (b[3] - b[1]),
                    "iscrowd": 0,
                }
            )
        for b, sc in zip(p, s):
            dets.append({"image_id": i, "category_id": 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": float(sc)})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "tumor"}]}
    gt.createIndex()
    dt = gt.loadRes(dets)
    ev = COCOeval(gt, dt, "bbox")
    ev.params.iouThrs = np.round(np.arange(0.1, 0.5 + 1e-9, 0.05), 2)
    ev.params.maxDets = [100]
    ev.params.areaRng = [[0, 1e10]]
    ev.params.areaRngLbl = ["all"]
    ev.evaluate()
    ev.accumulate()
    prec = ev.eval["precision"][:, :, 0, 0, 0]
    rec = ev.eval["recall"][:, 0, 0, 0]
    assert ours["mAP_IoU_0.10_0.50_0.05_MaxDet_100"] == pytest.approx(float(np.mean(prec[prec > -1])), abs=1e-4)
    assert ours["mAR_IoU_0.10_0.50_0.05_MaxDet_100"] == pytest.approx(float(np.mean(rec[rec > -1])), abs=1e-4)
    assert 0.2 < ours["mAP_IoU_0.10_0.50_0.05_MaxDet_100"] < 1.0  # a non-trivial case


# ---- the report on files: errors name the file, outputs exist --------------------------------


def _files(tmp_path, truth_boxes, pred_sets):
    """A datalist with validation and test sections on the same 4 images of 2 patients, and prediction files."""
    import nibabel as nib

    items = []
    for i, boxes in enumerate(truth_boxes):
        img = tmp_path / f"img{i}.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((64, 64), dtype=np.int16), np.diag([1.0, 1.0, 1.0, 1.0])), img)
        items.append({"image": img.name, "box": boxes, "label": [0] * len(boxes), "patient": f"p{i // 2}"})
    (tmp_path / "dl.json").write_text(json.dumps({"validation": items, "test": items}))
    paths = []
    for k, preds in enumerate(pred_sets):
        doc = {
            "predictions": [
                {"image": str(tmp_path / f"img{i}.nii.gz"), "box": b, "score": s, "label": [0] * len(s)} for i, (b, s) in enumerate(preds)
            ]
        }
        p = tmp_path / f"pred{k}.json"
        p.write_text(json.dumps(doc))
        paths.append(str(p))
    return str(tmp_path / "dl.json"), paths


def test_report_writes_json_markdown_and_plots(tmp_path):
    truth = [[[10, 10, 30, 30]], [], [[5, 5, 20, 25], [40, 40, 60, 55]], []]
    good = [([[10, 10, 30, 30]], [0.9]), ([[1, 1, 9, 9]], [0.2]), ([[5, 5, 20, 25], [40, 40, 60, 55]], [0.8, 0.7]), ([], [])]
    bad = [([[40, 40, 50, 50]], [0.9]), ([], []), ([[5, 5, 20, 25]], [0.4]), ([[1, 1, 9, 9]], [0.95])]
    dl, (pg, pb) = _files(tmp_path, truth, [good, bad])
    r = evaluate(dl, pg, pg, str(tmp_path / "out"), n_bootstrap=200)
    assert r["test"]["f1"] == 1.0 and r["operating_threshold"] == 0.7
    assert r["test_study"]["auc"] is None  # both patients have lesions
    for f in ("metrics.json", "summary.md", "froc.png", "froc_per_patient.png", "pr.png"):
        assert (tmp_path / "out" / f).stat().st_size > 0
    c = compare(dl, (pg, pg), (pb, pb), str(tmp_path / "cmp"), ("good", "bad"), n_bootstrap=200)
    assert c["paired_f1_test"]["difference"] > 0
    assert (tmp_path / "cmp" / "compare.md").read_text().count("good") >= 2


def test_report_labels_every_figure_and_scores_inside_the_size_rule(tmp_path):
    """A 6 mm lesion the model misses: F1 over all truth counts it, F1 inside the 10-70 mm rule does not."""
    truth = [[[10, 10, 30, 30], [40, 40, 46, 44]], [], [[5, 5, 20, 25]], []]  # 20, 6, 20 mm at 1 mm pixels
    preds = [([[10, 10, 30, 30]], [0.9]), ([[1, 1, 9, 9]], [0.2]), ([[5, 5, 20, 25]], [0.8]), ([], [])]
    dl, (p,) = _files(tmp_path, truth, [preds])
    r = evaluate(dl, p, p, str(tmp_path / "out"), n_bootstrap=100)
    assert r["operating_threshold"] == 0.8
    assert (r["test"]["tp"], r["test"]["fn"]) == (2, 1) and r["test"]["f1"] == pytest.approx(0.8)
    inside = r["test_size_rule"]
    assert inside["n_truth"] == 2 and inside["f1"] == 1.0 and inside["rule"] == {"min_long_mm": 10.0, "max_long_mm": 70.0}
    assert r["labels"]["test_mAP"].startswith("COCO mAP@[IoU 0.10:0.50:0.05]")
    assert "10-70 mm" in r["labels"]["test_size_rule"] and "all truth boxes" in r["labels"]["test"]
    assert "FP per image" in r["labels"]["test_froc"] and "FP per patient" in r["labels"]["test_froc_per_patient"]
    assert r["test_froc_per_patient"]["n_units"] == 2 and r["test_froc"]["n_units"] == 4
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "| F1 (IoU >= 0.5), all truth boxes | 0.800" in md
    assert "| F1 (IoU >= 0.5), truth inside the size rule 10-70 mm (2 truth boxes); predictions on truth outside it ignored | 1.000" in md
    assert "COCO mAP@[IoU 0.10:0.50:0.05]" in md and "FROC CPM, FP per patient (2 patients" in md
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["labels"] == r["labels"]


def test_report_errors_name_the_problem(tmp_path):
    truth = [[[10, 10, 30, 30]], [], [], []]
    dl, (p,) = _files(tmp_path, truth, [[([], [])] * 4])
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(ValueError, match="empty.json: predictions file is missing or empty"):
        load_predictions(tmp_path / "empty.json")
    doc = json.loads(open(p).read())
    doc["predictions"].append({"image": str(tmp_path / "nowhere.nii.gz"), "box": [], "score": []})
    (tmp_path / "unknown.json").write_text(json.dumps(doc))
    from bundle.datalist.sections import load_truth

    with pytest.raises(ValueError, match="not in the truth, e.g. .*nowhere.nii.gz"):
        pair(load_predictions(tmp_path / "unknown.json"), load_truth(dl, "test"), "unknown.json")
    doc = json.loads(open(p).read())
    doc["predictions"][0]["box"] = [[1, 1, 1, 5, 5, 5]]
    doc["predictions"][0]["score"] = [0.5]
    (tmp_path / "threed.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="img0.nii.gz: predictions are 3D boxes but truth is 2D"):
        match_all(pair(load_predictions(tmp_path / "threed.json"), load_truth(dl, "test"), "x"))


def test_threshold_for_precision_takes_the_most_recall_at_the_target():
    # scores 0.9 TP, 0.8 FP, 0.7 TP, 0.6 FP, 0.5 TP; 4 lesions. Precision by threshold: 1, 1/2, 2/3, 1/2, 3/5
    truth = [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70]]
    preds = [[0, 0, 10, 10], [100, 100, 110, 110], [20, 20, 30, 30], [120, 120, 130, 130], [40, 40, 50, 50]]
    m = match_image(preds, [0.9, 0.8, 0.7, 0.6, 0.5], truth)
    t, at = threshold_for_precision([m], 0.6)
    assert t == 0.5 and (at["tp"], at["fp"], at["fn"]) == (3, 2, 1)
    t, at = threshold_for_precision([m], 0.7)
    assert t == 0.9 and (at["tp"], at["fp"]) == (1, 0)
    t, at = threshold_for_precision([m], 1.01)
    assert t == float("inf") and at["tp"] == 0
    assert threshold_for_precision([match_image([], [], truth)], 0.5)[0] == float("inf")


def _pixels_of(png, colour: str) -> int:
    import matplotlib.colors
    import matplotlib.image

    rgb = (matplotlib.image.imread(str(png))[..., :3] * 255).round().astype(int)
    want = (np.array(matplotlib.colors.to_rgb(colour)) * 255).round().astype(int)
    return int(np.all(rgb == want, axis=-1).sum())


def test_patient_picture_shows_the_slices_with_findings(tmp_path):
    """Four slices of one patient: truth on two, a kept prediction on a third, nothing on the fourth -> 3 panels."""
    from bundle.metrics import plots
    from bundle.metrics.report import patient_items, patient_pictures

    truth = [[[10, 10, 30, 30]], [], [[5, 5, 20, 25]], []]
    preds = [([[10, 10, 30, 30]], [0.9]), ([[40, 40, 50, 50]], [0.7]), ([], []), ([[1, 1, 9, 9]], [0.1])]
    dl, (p,) = _files(tmp_path, truth, [preds])
    doc = json.loads((tmp_path / "dl.json").read_text())
    for it in doc["test"]:
        it["patient"] = "p0"
    (tmp_path / "dl.json").write_text(json.dumps(doc))
    items = patient_items(dl, "test", "p0")
    r = plots.plot_patient(items, tmp_path / "p0.png", load_predictions(p), threshold=0.5)
    assert [Path(x).name for x in r["panels"]] == ["img0.nii.gz", "img1.nii.gz", "img2.nii.gz"] and r["not_shown"] == 0
    legend_only = _pixels_of(tmp_path / "p0.png", plots.MINED_COLOUR)  # no mined box given: its colour is in the legend only
    assert _pixels_of(tmp_path / "p0.png", plots.TRUTH_COLOUR) > legend_only + 100
    assert _pixels_of(tmp_path / "p0.png", plots.PREDICTION_COLOUR) > legend_only + 30
    # mined and pseudo boxes (one list per item) add their colours; the score-0.1 slice stays out at 0.5
    mined, pseudo = plots.boxes_by_source({"box": [[10, 10, 30, 30], [40, 5, 60, 20]], "box_source": ["mined", "pseudo"]})
    r = plots.plot_patient(items, tmp_path / "p0b.png", load_predictions(p), 0.5, mined=[mined, [], [], []], pseudo=[pseudo, [], [], []])
    assert len(r["panels"]) == 3
    assert _pixels_of(tmp_path / "p0b.png", plots.MINED_COLOUR) > legend_only + 30
    assert _pixels_of(tmp_path / "p0b.png", plots.PSEUDO_COLOUR) > legend_only + 30
    r = plots.plot_patient(items, tmp_path / "p0c.png", load_predictions(p), threshold=0.05, max_panels=2)
    assert len(r["panels"]) == 2 and r["not_shown"] == 2  # at 0.05 the fourth slice has a finding too
    (shown,) = patient_pictures(dl, p, 0.5, str(tmp_path / "pics"), ["p0"])
    assert Path(shown["path"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and len(shown["panels"]) == 3
