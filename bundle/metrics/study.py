"""Study-level abnormality (seed 002): is there a tumor anywhere in this study?

Why: a worklist triage needs a per-study answer; the study score is the highest box score
among the study's images, so it comes for free from the detector.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def study_scores(
    image_scores: list[np.ndarray], image_truth_counts: list[int], studies: list[str]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per study (sorted ids): max box score (0 when no box) and whether any truth box exists."""
    ids = sorted(set(studies))
    row = {s: i for i, s in enumerate(ids)}
    score = np.zeros(len(ids))
    abnormal = np.zeros(len(ids), dtype=bool)
    for sc, n, s in zip(image_scores, image_truth_counts, studies):
        if len(sc):
            score[row[s]] = max(score[row[s]], float(np.max(sc)))
        abnormal[row[s]] |= n > 0
    return ids, score, abnormal


def best_threshold(score: np.ndarray, abnormal: np.ndarray) -> float:
    """Youden's J on validation: the threshold that maximises sensitivity + specificity - 1."""
    cands = np.unique(np.r_[score, np.inf])
    best, best_j = float(np.inf), -1.0
    for t in cands:
        sens = np.mean(score[abnormal] >= t) if abnormal.any() else 0.0
        spec = np.mean(score[~abnormal] < t) if (~abnormal).any() else 0.0
        if sens + spec - 1 > best_j:
            best, best_j = float(t), sens + spec - 1
    return best


def study_metrics(score: np.ndarray, abnormal: np.ndarray, threshold: float) -> dict:
    """ROC AUC (None when only one class is present) and sensitivity/specificity at the threshold."""
    n_pos, n_neg = int(abnormal.sum()), int((~abnormal).sum())
    auc = float(roc_auc_score(abnormal, score)) if n_pos and n_neg else None
    return {
        "studies": len(score),
        "abnormal": n_pos,
        "normal": n_neg,
        "auc": auc,
        "threshold": threshold,
        "sensitivity": float(np.mean(score[abnormal] >= threshold)) if n_pos else None,
        "specificity": float(np.mean(score[~abnormal] < threshold)) if n_neg else None,
    }
