"""How unsure the detector is about a study, measured at the operating point it ships with.

Why: a radiologist reviewing a study in MONAI Label (3D Slicer) sees only the boxes at or above the shipped
score threshold (models/operating_point.json). The boxes whose scores lie close to that threshold are the
decisions the model could flip either way: each is a lesion it may be about to miss or a false box it may
be about to show. A study with many of them, and with them closest to the threshold, is where a review
teaches the model the most. Closeness is measured in logits, so 0.29 vs 0.30 and 0.98 vs 0.99 are not
treated alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


def _logit(p: float) -> float:
    p = min(max(float(p), 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


@dataclass
class UncertaintyRule:
    """A box counts as uncertain when its score's logit lies within ``band_logits`` of the threshold's.

    Its weight falls linearly from 1 at the threshold to 0 at the band's edge; a study's uncertainty is the
    sum of its boxes' weights (the mass), ties broken by the number of boxes in the band.
    """

    band_logits: float = 2.0  # e^2 ~ 7x in odds either side: at threshold 0.3, scores 0.055-0.76

    def lowest_score(self, threshold: float) -> float:
        """The lowest score that can count: inference must keep boxes down to here (not only the shown ones)."""
        return 1 / (1 + math.exp(-(_logit(threshold) - self.band_logits)))

    def weights(self, scores: Iterable[float], threshold: float) -> list[float]:
        t = _logit(threshold)
        return [max(0.0, 1.0 - abs(_logit(s) - t) / self.band_logits) for s in scores]

    def study(self, scores: Sequence[float], threshold: float) -> dict[str, float | int]:
        """One study's figures: the mass, the number of boxes in the band, and how many are shown."""
        w = self.weights(scores, threshold)
        return {
            "uncertainty": round(sum(w), 6),
            "n_uncertain": sum(x > 0 for x in w),
            "n_shown": sum(float(s) >= threshold for s in scores),
        }


def rank(studies: Mapping[str, Sequence[float]], threshold: float, rule: UncertaintyRule | None = None) -> list[tuple[str, dict]]:
    """Studies from the most to the least uncertain (mass, then boxes in the band, then the id for a stable order)."""
    rule = rule or UncertaintyRule()
    figures = {k: rule.study(v, threshold) for k, v in studies.items()}
    return sorted(figures.items(), key=lambda kv: (-kv[1]["uncertainty"], -kv[1]["n_uncertain"], kv[0]))
