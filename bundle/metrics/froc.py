"""FROC: sensitivity against false positives per image (2D) or per scan (3D).

Why: LUNA16 and nnDetection report the competition performance metric (CPM), the mean
sensitivity at 1/8 ... 8 FPs per scan; DeepLesion reports sensitivity at 0.5 ... 8 FPs per image.
"""

from __future__ import annotations

import numpy as np

from bundle.metrics.matching import ImageMatch

LUNA_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
DEEPLESION_FP_RATES = (0.5, 1.0, 2.0, 4.0, 8.0)


def froc_curve(matches: list[ImageMatch]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FPs per image, sensitivity, score threshold) at every distinct score, most confident first."""
    n_images = len(matches)
    n_truth = sum(m.n_truth for m in matches)
    scores = np.concatenate([m.scores for m in matches] + [np.zeros(0)])
    tps = np.concatenate([m.tp for m in matches] + [np.zeros(0, dtype=bool)])
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], tps[order]
    last = np.r_[s[1:] != s[:-1], True] if len(s) else np.zeros(0, dtype=bool)
    fppi = np.cumsum(~t)[last] / max(n_images, 1)
    sens = np.cumsum(t)[last] / n_truth if n_truth else np.zeros(int(last.sum()))
    return fppi, sens, s[last]


def sensitivity_at(matches: list[ImageMatch], fp_rates=LUNA_FP_RATES) -> dict[str, float]:
    """Highest sensitivity reached with at most r false positives per image, for each rate r."""
    fppi, sens, _ = froc_curve(matches)
    out = {}
    for r in fp_rates:
        ok = fppi <= r
        out[f"{r:g}"] = float(sens[ok].max()) if ok.any() else 0.0
    return out


def froc_summary(matches: list[ImageMatch], unit: str = "image") -> dict:
    """LUNA16-style sensitivities and their mean (CPM), and DeepLesion-style sensitivities."""
    luna = sensitivity_at(matches, LUNA_FP_RATES)
    return {
        "fp_unit": unit,
        "sensitivity_at_fp": luna,
        "cpm": float(np.mean(list(luna.values()))),
        "deeplesion_sensitivity_at_fp": sensitivity_at(matches, DEEPLESION_FP_RATES),
    }
