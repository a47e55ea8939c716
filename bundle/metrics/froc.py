"""FROC: lesion sensitivity against false positives per unit (per image, or per patient/volume).

Why: LUNA16 and nnDetection report the competition performance metric (CPM), the mean
sensitivity at 1/8 ... 8 FPs per scan; DeepLesion reports sensitivity at 0.5 ... 8 FPs per image.
A radiologist sees every box on a volume, so FPs per patient is the figure that decides usability.

The curve and the interpolation are MONAI's (`compute_froc_curve_data`, `compute_froc_score`):
sensitivity at a rate is read off the curve by linear interpolation (LUNA16 style), not as a step.
"""

from __future__ import annotations

import numpy as np
from monai.metrics import compute_froc_curve_data, compute_froc_score

from bundle.metrics.matching import ImageMatch

LUNA_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
DEEPLESION_FP_RATES = (0.5, 1.0, 2.0, 4.0, 8.0)
UNIT_LABELS = {"image": "FP per image (2D slice)", "patient": "FP per patient (summed over the patient's evaluated slices)"}


def froc_curve(matches: list[ImageMatch], n_units: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(FPs per unit, sensitivity) at every distinct score, most confident last, from MONAI's curve data.

    n_units: how many units (images, patients) the FPs are spread over; default one per match.
    Each truth box is a target; a missed one enters MONAI's tp_probs as 0. A sentinel FP of score 0
    makes MONAI (which skips the lowest score, CAMELYON's convention) evaluate every real score. MONAI
    needs real scores above 0, so they go in as their ranks 1..K (the curve depends on their order only):
    logits (any sign) and saturated-free float64 scores give the same curve as the scores themselves.
    """
    n_truth = sum(m.n_truth for m in matches)
    units = len(matches) if n_units is None else n_units
    if n_truth == 0 or units == 0:
        return np.zeros(1), np.zeros(1)
    distinct = np.unique(np.concatenate([m.scores for m in matches] + [np.zeros(0)]))
    rank = [np.searchsorted(distinct, m.scores).astype(np.float64) + 1.0 for m in matches]
    fp = [r[~m.tp] for m, r in zip(matches, rank)]
    tp = np.zeros(n_truth)
    k = 0
    for m, r in zip(matches, rank):
        tp[k + m.matched_truth[m.tp]] = r[m.tp]
        k += m.n_truth
    fp_probs = np.concatenate([np.zeros(1), *fp]).astype(np.float64)
    fps, sens = compute_froc_curve_data(fp_probs, tp, num_targets=n_truth, num_images=units)
    return np.asarray(fps, dtype=np.float64), np.asarray(sens, dtype=np.float64)


def sensitivity_at(matches: list[ImageMatch], fp_rates=LUNA_FP_RATES, n_units: int | None = None) -> dict[str, float]:
    """Sensitivity at each FP rate, linearly interpolated on the FROC curve (LUNA16; MONAI's compute_froc_score)."""
    fps, sens = froc_curve(matches, n_units)
    return {f"{r:g}": float(compute_froc_score(fps, sens, (r,))) for r in fp_rates}


def by_patient(matches: list[ImageMatch], patients: list[str]) -> list[ImageMatch]:
    """One match per patient (sorted ids): its slices' predictions and truths pooled, so FPs count per patient."""
    out = []
    for pid in sorted(set(patients)):
        ms = [m for m, p in zip(matches, patients) if p == pid]
        offsets = np.cumsum([0] + [m.n_truth for m in ms[:-1]])
        out.append(
            ImageMatch(
                scores=np.concatenate([m.scores for m in ms] + [np.zeros(0)]),
                tp=np.concatenate([m.tp for m in ms] + [np.zeros(0, dtype=bool)]),
                n_truth=sum(m.n_truth for m in ms),
                matched_truth=np.concatenate([np.where(m.tp, m.matched_truth + o, -1) for m, o in zip(ms, offsets)] + [np.zeros(0, int)]),
            )
        )
    return out


def froc_summary(matches: list[ImageMatch], unit: str = "image") -> dict:
    """LUNA16-style sensitivities at 1/8..8 FP per unit and their mean (CPM), and DeepLesion-style rates.

    matches: one per unit (images for unit "image"; `by_patient` output for unit "patient").
    """
    luna = sensitivity_at(matches, LUNA_FP_RATES)
    return {
        "fp_unit": unit,
        "label": f"FROC, sensitivity per truth box at {UNIT_LABELS.get(unit, 'FP per ' + unit)}, linear interpolation",
        "n_units": len(matches),
        "sensitivity_at_fp": luna,
        "cpm": float(np.mean(list(luna.values()))),
        "deeplesion_sensitivity_at_fp": sensitivity_at(matches, DEEPLESION_FP_RATES),
    }
