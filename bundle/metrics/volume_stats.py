"""Patient-level bootstrap of the volume-level figures, FROC/CPM included, and the paired test between two models.

Why its own module: the CPM needs the whole FROC curve in every resample. MONAI's
`compute_froc_curve_data` loops over every distinct score (quadratic), too slow for 1,000 resamples of
80 volumes x 50 boxes, so the resampled curves come from one weighted, vectorised computation that
gives MONAI's points exactly (tests/metrics/test_volume_eval.py checks it against bundle.metrics.froc). The
point estimates themselves come from bundle.metrics.froc (MONAI).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bundle.metrics.bootstrap import resample_weights
from bundle.metrics.froc import LUNA_FP_RATES
from bundle.metrics.matching import ImageMatch

VOLUME_FP_RATES = LUNA_FP_RATES  # the LUNA16 CPM: 1/8, 1/4, 1/2, 1, 2, 4, 8 false boxes per volume


@dataclass
class FrocData:
    """Every volume's scores on one grid of thresholds: weighted FROC curves for any volume weights."""

    thresholds: np.ndarray  # distinct scores, ascending (any sign: logits; bundle.metrics.froc ranks them for MONAI)
    fp_at: np.ndarray  # (T, V): FPs of volume v with score == thresholds[t]
    tp_at: np.ndarray  # (T, V): matched truths of volume v with score == thresholds[t]
    n_truth: np.ndarray  # (V,)


def froc_data(matches: list[ImageMatch]) -> FrocData:
    scores = np.concatenate([m.scores for m in matches] + [np.zeros(0)])
    thr = np.unique(scores)
    fp_at = np.zeros((len(thr), len(matches)))
    tp_at = np.zeros((len(thr), len(matches)))
    for v, m in enumerate(matches):
        idx = np.searchsorted(thr, m.scores)
        np.add.at(fp_at[:, v], idx[~m.tp], 1.0)
        np.add.at(tp_at[:, v], idx[m.tp], 1.0)
    return FrocData(thr, fp_at, tp_at, np.asarray([m.n_truth for m in matches], dtype=float))


def weighted_cpm(d: FrocData, w: np.ndarray, rates=VOLUME_FP_RATES) -> tuple[np.ndarray, np.ndarray]:
    """(CPM, sensitivity at each rate) for each row of volume weights w (B, V): MONAI's curve and reading.

    A threshold is a point of the curve only where some drawn score equals it (MONAI's distinct scores);
    a resample without any truth gives NaN.
    """
    w = np.atleast_2d(np.asarray(w, dtype=float))
    fpw, tpw = w @ d.fp_at.T, w @ d.tp_at.T  # (B, T)
    fp_ge = np.cumsum(fpw[:, ::-1], axis=1)[:, ::-1]
    tp_ge = np.cumsum(tpw[:, ::-1], axis=1)[:, ::-1]
    units, targets = w.sum(1), w @ d.n_truth
    sens_at = np.full((len(w), len(rates)), np.nan)
    for b in range(len(w)):
        if targets[b] <= 0 or units[b] <= 0:
            continue
        present = (fpw[b] + tpw[b]) > 0
        fps, sens = fp_ge[b, present] / units[b], tp_ge[b, present] / targets[b]
        if not len(fps):
            sens_at[b] = 0.0
            continue
        sens_at[b] = np.interp(rates, fps[::-1], sens[::-1])
    return sens_at.mean(1), sens_at


def patient_weights(patients: list[str], n_resamples: int, seed: int) -> np.ndarray:
    """Volume weights (B, V): patients drawn with replacement, each drawn patient brings all its volumes."""
    ids = sorted(set(patients))
    row = {p: i for i, p in enumerate(ids)}
    wp = resample_weights(len(ids), n_resamples, seed)
    return wp[:, [row[p] for p in patients]].astype(float)


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def interval(values: np.ndarray, point: float, alpha: float = 0.05) -> dict[str, float | None]:
    """Point estimate and percentile CI; resamples where the figure is undefined (NaN) are left out."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"value": _num(point), "ci_low": None, "ci_high": None}
    return {
        "value": _num(point),
        "ci_low": float(np.percentile(v, 100 * alpha / 2)),
        "ci_high": float(np.percentile(v, 100 * (1 - alpha / 2))),
    }


def _num(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def paired(diff: np.ndarray, point: float, alpha: float = 0.05) -> dict[str, float | None]:
    """Difference A - B with its percentile CI and the two-sided bootstrap P (bootstrap.paired_test's rule)."""
    d = np.asarray(diff, dtype=float)
    d = d[np.isfinite(d)]
    n = len(d)
    le = (np.sum(d <= 0) + 1) / (n + 1)
    ge = (np.sum(d >= 0) + 1) / (n + 1)
    return interval(d, point, alpha) | {"difference": _num(point), "p_value": float(min(1.0, 2 * min(le, ge))), "n_resamples_used": n}
