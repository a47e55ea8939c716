"""Pooling over replicates (data seeds x training seeds): mean, SD, and a bootstrap that includes training variance.

Why two levels: a paired bootstrap over patients alone treats one trained model as the truth; training
again with another seed (or on another draw of data) moves F1 as much as the effects we test. The
two-level bootstrap resamples replicates first, then patients inside each resampled replicate (the same
patients for both arms, so the comparison stays paired), and averages the difference over replicates.
"""

from __future__ import annotations

import numpy as np

from bundle.metrics.bootstrap import _prf


def mean_sd(values: list[float]) -> dict[str, float]:
    """Mean and sample SD (ddof 1; 0 for one value) of a metric over replicates."""
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}


def replicate_metric(counts: np.ndarray, metric: str = "f1") -> float:
    """Metric of one replicate from its per-patient (TP, FP, FN) counts."""
    return float(_prf(np.asarray(counts).sum(0))[metric])


def two_level_difference(
    counts_b: list[np.ndarray],
    counts_a: list[np.ndarray],
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    metric: str = "f1",
) -> dict[str, float]:
    """Mean over replicates of metric(B) - metric(A), with a percentile CI and a two-sided P that include training variance.

    counts_x[r]: per-patient (TP, FP, FN) of arm x in replicate r, shape (P_r, 3), patients in the same order
    for both arms. P = 2 * min(share <= 0, share >= 0) with the +1 correction (never 0 from finite resamples).
    """
    if len(counts_a) != len(counts_b) or not counts_a:
        raise ValueError(f"two-level bootstrap needs the same replicates for both arms: {len(counts_b)} vs {len(counts_a)}")
    for r, (a, b) in enumerate(zip(counts_a, counts_b)):
        if np.shape(a) != np.shape(b):
            raise ValueError(f"replicate {r}: the arms were scored on different patients ({np.shape(b)} vs {np.shape(a)})")
    rng = np.random.default_rng(seed)
    n_rep = len(counts_a)
    point_each = [replicate_metric(b, metric) - replicate_metric(a, metric) for a, b in zip(counts_a, counts_b)]
    diffs = np.empty(n_resamples)
    for i in range(n_resamples):
        d = []
        for r in rng.integers(0, n_rep, n_rep):
            a, b = np.asarray(counts_a[r]), np.asarray(counts_b[r])
            w = np.bincount(rng.integers(0, len(a), len(a)), minlength=len(a))
            d.append(float(_prf(w @ b)[metric] - _prf(w @ a)[metric]))
        diffs[i] = np.mean(d)
    le = (np.sum(diffs <= 0) + 1) / (n_resamples + 1)
    ge = (np.sum(diffs >= 0) + 1) / (n_resamples + 1)
    return {
        "metric": metric,
        "difference": float(np.mean(point_each)),
        "ci_low": float(np.percentile(diffs, 100 * alpha / 2)),
        "ci_high": float(np.percentile(diffs, 100 * (1 - alpha / 2))),
        "p_value": float(min(1.0, 2 * min(le, ge))),
        "share_b_better": float(np.mean([d > 0 for d in point_each])),
        "n_replicates": n_rep,
        "n_resamples": n_resamples,
        "seed": seed,
    }
