"""Thicker slices, simulated on the canonical grid: each series stored with fewer, thicker slices and read back.

Why: a 6 mm series reaches the model resampled to the grid's 4 mm slices, so each grid slice is a mix of two
thick slices, each of them the average of everything in its slab. The Gaussian blur along z (``partial_volume``
in train_series.yaml) mixes neighbours but never loses a slice; measured at 6 mm the chosen model still drops
10-20 mm lesions (docs/results_thick_slices.md). This transform does what the scanner and the resampling do:
average slabs down to ``round(D / f)`` slices (MONAI ``Resize``, ``area`` mode), then interpolate back to ``D``
(``trilinear``). The grid, the affine and so every box stay as they are.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform, Resize


class RandSliceThicknessd(RandomizableTransform, MapTransform):
    """With probability ``prob``, the image as if stored with slices ``f`` times thicker, ``f`` uniform in ``factor``.

    ``factor`` is relative to the grid's slice spacing (on the demo's 4 mm grid, (1.0, 1.6) is 4-6.4 mm). The last
    spatial axis is the slice axis (the grid is RAS, so z). An image too thin to lose a slice passes unchanged.
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.2, factor: Sequence[float] = (1.0, 1.6), allow_missing_keys: bool = False):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        lo, hi = (float(f) for f in factor)
        if not 1.0 <= lo <= hi:
            raise ValueError(f"factor must be (low, high) with 1 <= low <= high, got {tuple(factor)}")
        self.factor = (lo, hi)
        self._f = 1.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self._f = float(self.R.uniform(*self.factor)) if self._do_transform else 1.0

    def thicken(self, img: torch.Tensor, f: float) -> torch.Tensor:
        """One image (C, H, W, D) through ``D / f`` slab averages and back; its metadata kept."""
        *plane, depth = img.shape[1:]
        thick = max(2, int(round(depth / f)))
        if thick >= depth:  # one slice, or too few to thicken
            return img
        x = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
        down = Resize((*plane, thick), mode="area")(x.float())
        out = torch.as_tensor(Resize((*plane, depth), mode="trilinear", align_corners=False)(down)).to(x.dtype)
        if isinstance(img, MetaTensor):
            return MetaTensor(out, meta=img.meta, applied_operations=img.applied_operations)
        return out

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            d[key] = self.thicken(d[key], self._f)
        return d
