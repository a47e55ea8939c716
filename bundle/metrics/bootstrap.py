"""Patient-level bootstrap: confidence intervals and the paired test between two models.

Why by patient: images of one patient are correlated; resampling images would give intervals
that are too narrow. The seed study compares F1 of two models with bootstrap resampling.
"""

from __future__ import annotations

import numpy as np

from bundle.metrics.matching import ImageMatch


def patient_counts(matches: list[ImageMatch], patients: list[str], threshold: float) -> tuple[list[str], np.ndarray]:
    """Per patient (sorted ids): TP, FP, FN at the operating threshold, shape (P, 3)."""
    ids = sorted(set(patients))
    row = {p: i for i, p in enumerate(ids)}
    out = np.zeros((len(ids), 3), dtype=np.int64)
    for m, p in zip(matches, patients):
        keep = m.scores >= threshold
        tp = int(m.tp[keep].sum())
        out[row[p]] += (tp, int((~m.tp[keep]).sum()), m.n_truth - tp)
    return ids, out


def _prf(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Precision/recall/F1 for an array of (..., 3) TP/FP/FN counts; empty denominators give 0."""
    tp, fp, fn = counts[..., 0].astype(float), counts[..., 1].astype(float), counts[..., 2].astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1}


def resample_weights(n_patients: int, n_resamples: int, seed: int) -> np.ndarray:
    """How often each patient is drawn in each resample, shape (B, P): one matrix shared by paired models."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_patients, size=(n_resamples, n_patients))
    return np.stack([np.bincount(d, minlength=n_patients) for d in draws])


def bootstrap_ci(counts: np.ndarray, n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict[str, dict[str, float]]:
    """Point estimate and percentile CI of precision, recall and F1 from per-patient counts."""
    if len(counts) == 0:
        raise ValueError("bootstrap needs at least one patient")
    w = resample_weights(len(counts), n_resamples, seed)
    boot = _prf(w @ counts)
    point = _prf(counts.sum(0))
    lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
    return {
        k: {"value": float(point[k]), "ci_low": float(np.percentile(boot[k], lo)), "ci_high": float(np.percentile(boot[k], hi))}
        for k in ("precision", "recall", "f1")
    } | {"n_patients": len(counts), "n_resamples": n_resamples, "seed": seed}


def paired_test(
    counts_a: np.ndarray, counts_b: np.ndarray, n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05, metric: str = "f1"
) -> dict[str, float]:
    """Paired bootstrap of metric(A) - metric(B) over the same resampled patients.

    Two-sided P = 2 * min(share of differences <= 0, share >= 0), with the +1 correction so a
    finite number of resamples never claims P = 0.
    """
    if counts_a.shape != counts_b.shape:
        raise ValueError(f"paired test needs the same patients for both models: {counts_a.shape} vs {counts_b.shape}")
    w = resample_weights(len(counts_a), n_resamples, seed)
    diff = _prf(w @ counts_a)[metric] - _prf(w @ counts_b)[metric]
    point = float(_prf(counts_a.sum(0))[metric] - _prf(counts_b.sum(0))[metric])
    le = (np.sum(diff <= 0) + 1) / (n_resamples + 1)
    ge = (np.sum(diff >= 0) + 1) / (n_resamples + 1)
    return {
        "metric": metric,
        "difference": point,
        "ci_low": float(np.percentile(diff, 100 * alpha / 2)),
        "ci_high": float(np.percentile(diff, 100 * (1 - alpha / 2))),
        "p_value": float(min(1.0, 2 * min(le, ge))),
        "n_patients": len(counts_a),
        "n_resamples": n_resamples,
        "seed": seed,
    }
