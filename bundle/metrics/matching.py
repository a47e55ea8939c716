"""Prediction-to-truth matching and the precision/recall/F1 the seed study reports.

Why: every headline figure (F1, FROC, bootstrap) is built from one per-image matching, so
it lives in one place. Greedy by descending score; each true box is matched at most once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from monai.data.box_utils import box_centers, box_iou


@dataclass
class ImageMatch:
    """Per image: prediction scores, whether each prediction is a true positive, and truth count."""

    scores: np.ndarray
    tp: np.ndarray
    n_truth: int
    matched_truth: np.ndarray  # index of the truth each prediction matched, -1 for none


def as_boxes(boxes, what: str) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, arr.shape[-1] if arr.ndim == 2 else 4))
    if arr.ndim != 2 or arr.shape[1] not in (4, 6):
        raise ValueError(f"{what}: expected boxes of shape (N, 4) or (N, 6), got {arr.shape}")
    d = arr.shape[1] // 2
    if np.any(arr[:, d:] < arr[:, :d]):
        bad = int(np.nonzero(np.any(arr[:, d:] < arr[:, :d], axis=1))[0][0])
        raise ValueError(f"{what}: box {bad} has negative size: {arr[bad].tolist()}")
    return arr


def match_image(
    pred_boxes,
    pred_scores,
    gt_boxes,
    criterion: str = "iou",
    iou_threshold: float = 0.5,
    where: str = "image",
) -> ImageMatch:
    """Greedy matching of one image's predictions to its truth.

    criterion "iou": a prediction matches a free truth with IoU >= iou_threshold (highest IoU wins);
    criterion "center": the prediction's centre lies inside a free truth box.
    """
    p = as_boxes(pred_boxes, f"{where} predictions")
    g = as_boxes(gt_boxes, f"{where} truth")
    s = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    if len(s) != len(p):
        raise ValueError(f"{where}: {len(p)} predicted boxes but {len(s)} scores")
    if len(p) and len(g) and p.shape[1] != g.shape[1]:
        raise ValueError(f"{where}: predictions are {p.shape[1] // 2}D boxes but truth is {g.shape[1] // 2}D")
    tp = np.zeros(len(p), dtype=bool)
    matched = np.full(len(p), -1, dtype=int)
    if len(p) and len(g):
        if criterion == "iou":
            quality = np.asarray(box_iou(p, g), dtype=np.float64)
            ok = quality >= iou_threshold
        elif criterion == "center":
            c = np.asarray(box_centers(p), dtype=np.float64)
            d = g.shape[1] // 2
            ok = np.all((c[:, None, :] >= g[None, :, :d]) & (c[:, None, :] <= g[None, :, d:]), axis=2)
            quality = ok.astype(np.float64)
        else:
            raise ValueError(f"unknown matching criterion {criterion!r}: use 'iou' or 'center'")
        tp, matched = greedy(ok, quality, s)
    return ImageMatch(scores=s, tp=tp, n_truth=len(g), matched_truth=matched)


def greedy(ok: np.ndarray, quality: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predictions in descending score (stable) take the free truth they may match with the best quality.

    ok, quality: (predictions, truths). Returns (tp per prediction, matched truth index or -1).
    Shared by the 2D matching here and the 3D volume matching (bundle.metrics.volume).
    """
    tp = np.zeros(len(scores), dtype=bool)
    matched = np.full(len(scores), -1, dtype=int)
    free = np.ones(ok.shape[1], dtype=bool)
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        cand = np.nonzero(ok[i] & free)[0]
        if len(cand):
            j = cand[np.argmax(quality[i, cand])]
            free[j] = False
            tp[i] = True
            matched[i] = j
    return tp, matched


def counts_at(matches: list[ImageMatch], threshold: float) -> tuple[int, int, int]:
    """(TP, FP, FN) over images, keeping predictions with score >= threshold.

    Matching was done on all predictions greedily by score, so dropping the low-score tail never
    changes which of the kept predictions are true positives.
    """
    tp = fp = n_truth = 0
    for m in matches:
        keep = m.scores >= threshold
        tp += int(m.tp[keep].sum())
        fp += int((~m.tp[keep]).sum())
        n_truth += m.n_truth
    return tp, fp, n_truth - tp


def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision, recall, F1; empty denominators give 0 (no predictions means precision 0)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def best_f1_threshold(matches: list[ImageMatch]) -> tuple[float, dict[str, float]]:
    """Operating point with maximum F1 over all score thresholds (chosen on validation data)."""
    scores = np.concatenate([m.scores for m in matches] + [np.zeros(0)])
    tps = np.concatenate([m.tp for m in matches] + [np.zeros(0, dtype=bool)])
    n_truth = sum(m.n_truth for m in matches)
    if not len(scores):
        return float("inf"), prf(0, 0, n_truth)
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], tps[order]
    cum_tp, cum_fp = np.cumsum(t), np.cumsum(~t)
    last = np.r_[s[1:] != s[:-1], True]  # a threshold keeps every tie of its score
    f1 = 2 * cum_tp / np.maximum(cum_tp + cum_fp + n_truth, 1)
    f1 = np.where(last, f1, -1.0)
    k = int(np.argmax(f1))
    if f1[k] <= 0:
        return float("inf"), prf(0, 0, n_truth)
    return float(s[k]), prf(int(cum_tp[k]), int(cum_fp[k]), int(n_truth - cum_tp[k]))


def threshold_for_precision(matches: list[ImageMatch], target: float) -> tuple[float, dict[str, float]]:
    """The lowest score threshold whose precision reaches `target` (most recall at that precision).

    Returns (inf, counts with nothing kept) when no threshold reaches it.
    """
    scores = np.concatenate([m.scores for m in matches] + [np.zeros(0)])
    tps = np.concatenate([m.tp for m in matches] + [np.zeros(0, dtype=bool)])
    n_truth = sum(m.n_truth for m in matches)
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], tps[order]
    cum_tp, cum_fp = np.cumsum(t), np.cumsum(~t)
    last = np.r_[s[1:] != s[:-1], True] if len(s) else np.zeros(0, dtype=bool)  # a threshold keeps every tie
    ok = last & (cum_tp >= target * np.maximum(cum_tp + cum_fp, 1)) & (cum_tp > 0)
    if not ok.any():
        return float("inf"), prf(0, 0, n_truth)
    k = int(np.flatnonzero(ok)[-1])
    return float(s[k]), prf(int(cum_tp[k]), int(cum_fp[k]), int(n_truth - cum_tp[k]))
