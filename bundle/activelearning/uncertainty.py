"""How unsure the detector is about a study, measured at the operating point it ships with.

Why: a radiologist reviewing a study in MONAI Label (3D Slicer) sees only the boxes at or above the shipped
score threshold (models/operating_point.json). The boxes whose scores lie close to that threshold are the
decisions the model could flip either way: each is a lesion it may be about to miss or a false box it may
be about to show. A study with many of them, and with them closest to the threshold, is where a review
teaches the model the most. Closeness is measured in logits, so 0.29 vs 0.30 and 0.98 vs 0.99 are not
treated alike. Scores come as the volume path writes them (``score_kind``: the classifier's logit since
bundle/inference/operating_point.py says so; a probability is converted).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


def _logit(s: float, kind: str = "logit") -> float:
    """A score as a logit: logits as they are, probabilities through the inverse sigmoid."""
    if kind == "logit":
        return float(s)
    if kind != "probability":
        raise ValueError(f"score kind {kind!r} is neither 'logit' nor 'probability'")
    p = min(max(float(s), 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


@dataclass
class UncertaintyRule:
    """A box counts as uncertain when its score's logit lies within ``band_logits`` of the threshold's.

    Its weight falls linearly from 1 at the threshold to 0 at the band's edge; a study's uncertainty is the
    sum of its boxes' weights (the mass), ties broken by the number of boxes in the band.
    """

    band_logits: float = 2.0  # e^2 ~ 7x in odds either side: at a threshold of probability 0.3, 0.055-0.76

    def lowest_score(self, threshold: float, kind: str = "logit") -> float:
        """The lowest score that can count: inference must keep boxes down to here (not only the shown ones)."""
        low = _logit(threshold, kind) - self.band_logits
        return low if kind == "logit" else 1 / (1 + math.exp(-low))

    def weights(self, scores: Iterable[float], threshold: float, kind: str = "logit") -> list[float]:
        t = _logit(threshold, kind)
        return [max(0.0, 1.0 - abs(_logit(s, kind) - t) / self.band_logits) for s in scores]

    def study(self, scores: Sequence[float], threshold: float, kind: str = "logit") -> dict[str, float | int]:
        """One study's figures: the mass, the number of boxes in the band, and how many are shown."""
        w = self.weights(scores, threshold, kind)
        return {
            "uncertainty": round(sum(w), 6),
            "n_uncertain": sum(x > 0 for x in w),
            "n_shown": sum(float(s) >= threshold for s in scores),
        }


def rank(
    studies: Mapping[str, Sequence[float]], threshold: float, rule: UncertaintyRule | None = None, kind: str = "logit"
) -> list[tuple[str, dict]]:
    """Studies from the most to the least uncertain (mass, then boxes in the band, then the id for a stable order)."""
    rule = rule or UncertaintyRule()
    figures = {k: rule.study(v, threshold, kind) for k, v in studies.items()}
    return sorted(figures.items(), key=lambda kv: (-kv[1]["uncertainty"], -kv[1]["n_uncertain"], kv[0]))
