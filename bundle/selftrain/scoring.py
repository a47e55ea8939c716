"""How self-training scores: validation F1 on key slices, the volume metric that keeps rounds, and pseudo-box quality.

Why apart from the loop: these read predictions and truth only; the loop (loop.py) decides with them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bundle.inference.predictions import load_predictions
from bundle.metrics.breakdown import SIZE_BINS_MM, long_axis_mm
from bundle.metrics.matching import best_f1_threshold, match_image
from bundle.paths import ROOT


def validation_matches(datalist: dict, predictions_path: str, section: str = "validation", iou_threshold: float = 0.5) -> list:
    """Every validation image's predictions matched to its (complete) truth."""
    preds = load_predictions(predictions_path)
    empty = {"box": [], "score": []}
    matches = []
    for t in datalist[section]:
        p = preds.get(str(Path(t["image"]).resolve()), empty)
        matches.append(match_image(p["box"], p["score"], t["box"], iou_threshold=iou_threshold, where=t["image"]))
    return matches


def validation_f1(datalist: dict, predictions_path: str, section: str = "validation", iou_threshold: float = 0.5) -> dict:
    """Max F1 on the validation section (the quantity the stopping rule watches)."""
    thr, best = best_f1_threshold(validation_matches(datalist, predictions_path, section, iou_threshold))
    return best | {"threshold": thr}


def pseudo_quality(
    datalist: dict, truth: dict[str, list], round_index: int, iou_threshold: float = 0.3, spacings: dict | None = None
) -> dict:
    """Precision and recall of this round's pseudo-boxes against the complete truth (demo data only), overall and by size.

    truth: image path -> every lesion box on that image (key slices: 2D boxes; series: each lesion cross-section
    as a one-slice box). Recall counts the boxes the mined boxes missed (unmeasured); precision counts
    pseudo-boxes that land on one of them. By size: recall by the unmeasured box's long axis, precision by the
    pseudo-box's own (SIZE_BINS_MM); needs ``spacings`` (image -> spacing).
    """
    tp = n_pseudo = n_missing = found = 0
    by_size = {lbl: {"unmeasured": 0, "recovered": 0, "pseudo_boxes": 0, "correct": 0} for _, _, lbl in SIZE_BINS_MM}

    def bins(boxes: np.ndarray, spacing) -> list[str]:
        return [next(lbl for lo, hi, lbl in SIZE_BINS_MM if lo <= v < hi) for v in long_axis_mm(boxes, spacing)]

    unscored = 0
    for item in datalist["training"]:
        if item["image"] not in truth:  # e.g. an unlabelled series the truth does not cover: neither right nor wrong
            unscored += sum(1 for s, r in zip(item.get("box_source", []), item.get("box_round", [])) if s == "pseudo" and r == round_index)
            continue
        raw = truth.get(item["image"], [])
        dims = len(raw[0]) if len(raw) else (len(item["box"][0]) if item.get("box") else 4)
        full = np.asarray(raw, dtype=float).reshape(-1, dims)
        src, rnd = item.get("box_source", []), item.get("box_round", [])
        boxes = np.asarray(item.get("box", []), dtype=float).reshape(-1, dims)
        mined = boxes[[s == "mined" for s in src]] if len(boxes) else boxes
        pseudo = boxes[[s == "pseudo" and r == round_index for s, r in zip(src, rnd)]] if len(boxes) else boxes
        # truth lesions the radiologist did not measure
        if len(full) and len(mined):
            m = match_image(mined, np.ones(len(mined)), full, iou_threshold=iou_threshold)
            measured = set(m.matched_truth[m.tp].tolist())
        else:
            measured = set()
        missing = [j for j in range(len(full)) if j not in measured]
        n_missing += len(missing)
        n_pseudo += len(pseudo)
        hit_truth: set[int] = set()
        ok = np.zeros(len(pseudo), dtype=bool)
        if len(pseudo) and len(missing):
            m = match_image(pseudo, np.ones(len(pseudo)), full[missing], iou_threshold=iou_threshold)
            ok = np.asarray(m.tp, dtype=bool)
            hit_truth = set(m.matched_truth[m.tp].tolist())
            tp += int(ok.sum())
            found += int(ok.sum())
        spacing = (spacings or {}).get(item["image"])
        if spacing is not None:
            for j, lbl in enumerate(bins(full[missing], spacing)):
                by_size[lbl]["unmeasured"] += 1
                by_size[lbl]["recovered"] += int(j in hit_truth)
            for j, lbl in enumerate(bins(pseudo, spacing)):
                by_size[lbl]["pseudo_boxes"] += 1
                by_size[lbl]["correct"] += int(ok[j])
    for b in by_size.values():
        b["precision"] = b["correct"] / b["pseudo_boxes"] if b["pseudo_boxes"] else None
        b["recall"] = b["recovered"] / b["unmeasured"] if b["unmeasured"] else None
    return {
        "iou_threshold": iou_threshold,
        "pseudo_boxes": n_pseudo,
        "correct": tp,
        "precision": tp / n_pseudo if n_pseudo else None,
        "unmeasured_lesions": n_missing,
        "recovered": found,
        "recall": found / n_missing if n_missing else None,
        "by_size": by_size if spacings else {},
        "pseudo_boxes_without_truth": unscored,
    }


def shipped_limits(config: Path = ROOT / "configs" / "evaluate_volume.yaml") -> dict[str, float | str]:
    """The false-box limits the bundle ships its operating point at, and how FPs per normal volume are estimated
    (configs/evaluate_volume.yaml)."""
    import yaml

    doc = yaml.safe_load(Path(config).read_text())
    out: dict[str, float | str] = {k: float(doc[k]) for k in ("max_fp_per_volume", "max_fp_per_normal_volume")}
    return out | {"normal_fp_from": str(doc.get("normal_fp_from", "normal_volumes"))}


def volume_selection(volume_datalist: str, predictions: str, section: str = "validation") -> dict:
    """What rounds and checkpoints are kept by: validation sensitivity for lesions >= 10 mm at the shipped
    false-box limits (the operating point chosen on those volumes), ties broken by the CPM over lesions >= 10 mm.

    Why: the bundle is used on whole volumes; a round that wins key-slice F1 can lose there (issue 25).
    Scored with bundle.metrics.volume's public functions, so it follows that module's matching rule.
    """
    from bundle.metrics.volume import GE_LABEL, LARGE_MM, choose_operating_point, froc_figures, score_volumes

    limits = shipped_limits()
    vols = score_volumes(volume_datalist, predictions, section)
    op = choose_operating_point(vols, **limits)
    at = op["validation"]
    sens = at.get(f"sensitivity {GE_LABEL}")
    cpm = froc_figures(vols, LARGE_MM)["cpm"]
    return {
        "metric": "volume",
        "sensitivity_ge10": sens,
        "cpm_ge10": cpm,
        "score_threshold": op["score_threshold"],
        "fp_per_volume": at.get("fp_per_volume"),
        "fp_per_normal_volume": at.get("fp_per_normal_volume"),
        "found_ge10": at.get("found_ge10"),
        "lesions_ge10": at.get("lesions_ge10"),
        "limits": limits,
        "key": [sens if sens is not None else -1.0, cpm if np.isfinite(cpm) else -1.0],
    }
