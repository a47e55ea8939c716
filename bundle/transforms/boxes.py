"""Box filters for result dicts (MONAI Label's, the Deploy app's)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch


class KeepBoxesByScored:
    """Keeps boxes whose score is at least ``threshold`` (boxes, labels and scores together).

    Why: MONAI Label sends every box the detector returns to 3D Slicer and drops the scores, so
    the operating point must be applied before the boxes leave the bundle.
    """

    def __init__(
        self, box_key: str = "box", label_keys: Sequence[str] = ("label",), score_key: str = "label_scores", threshold: float = 0.0
    ) -> None:
        self.box_key = box_key
        self.label_keys = list(label_keys)
        self.score_key = score_key
        self.threshold = float(threshold)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        if self.score_key not in d:
            raise KeyError(f"KeepBoxesByScored: no '{self.score_key}' in the result (keys: {sorted(map(str, d))})")
        keep = torch.as_tensor(d[self.score_key]).reshape(-1) >= self.threshold
        for k in [self.box_key, *self.label_keys, self.score_key]:
            d[k] = torch.as_tensor(d[k])[keep.to(torch.as_tensor(d[k]).device)]
        return d
