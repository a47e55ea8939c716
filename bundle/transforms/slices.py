"""3D volume + 3D boxes -> one axial 2D slice (or a 2.5D stack) + the boxes that cross it, for training the 2D model on volumes.

Why: the model is used on every slice of a volume (MONAI Label, the Deploy app), so it learns from whole
series: mined series (bundle/mining/volumes.py, boxes on their key slices) or MONAI Label's volumes with 3D
world boxes (Slicer ROIs). Sampling a slice per iteration, mostly through a lesion and otherwise anywhere,
turns a volume datalist into the 2D items configs/train.yaml already knows how to augment.

Incomplete labels: a lesion measured on slice k continues on the slices next to it. With ``reach`` set, each
box's ``z_half_extent_slices`` (mining's estimate of how far the lesion reaches, from its long axis and the
slice spacing) becomes an ignore region on the slices around k; ``ignore_box`` regions from the datalist
(self-training's uncertain band) are ignore regions too. Ignore regions travel as boxes labelled
``IGNORE_LABEL`` through the crop, flip and clip transforms; the engine splits them off for the loss.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import RandomizableTransform, Transform

from bundle.datalist.schema import IGNORE_LABEL
from bundle.io.errors import InputError
from bundle.transforms.grid import context_step, spacing_of_affine


def check_context_slices(context_slices: int) -> int:
    """The one check of a 2.5D input's slice count k (odd, >= 1; 1 is 2D); k as an int, else ValueError.

    Why one: training sets k (its config), the model stores it (its first convolution,
    :func:`bundle.engines.checkpoints.input_channels`) and every reader of the model checks it here.
    """
    if context_slices < 1 or context_slices % 2 == 0:
        raise ValueError(f"context_slices must be an odd number >= 1, got {context_slices}")
    return int(context_slices)


def context_stack(img: torch.Tensor, z: int, context_slices: int, step: int = 1) -> torch.Tensor:
    """(C, X, Y, Z) -> (C * k, X, Y): slices z - step * k//2 ... z + step * k//2, edges repeated (the 2.5D input).

    ``step``: slices between neighbours, so the context is a distance in mm (:func:`bundle.transforms.grid.context_step`).
    """
    check_context_slices(context_slices)
    n, h = img.shape[-1], context_slices // 2
    idx = [min(max(z + o * step, 0), n - 1) for o in range(-h, h + 1)]
    return torch.cat([torch.as_tensor(img[..., i]).as_subclass(torch.Tensor) for i in idx], dim=0).clone()


def reach_boxes(boxes: np.ndarray, half_extent: np.ndarray, margin: float, n: int) -> np.ndarray:
    """Each key-slice box widened in-plane by ``margin`` (fraction of its size) and extended by its half extent in z."""
    if not len(boxes):
        return np.zeros((0, 6), np.float32)
    size = boxes[:, 3:5] - boxes[:, :2]
    h = np.ceil(np.nan_to_num(half_extent.astype(np.float64), nan=0.0))
    out = boxes.astype(np.float64).copy()
    out[:, :2] -= margin * size
    out[:, 3:5] += margin * size
    out[:, 2] = np.maximum(0, boxes[:, 2] - h)
    out[:, 5] = np.minimum(n, boxes[:, 5] + h)
    return out.astype(np.float32)


class SliceWithBoxesd(RandomizableTransform):
    """Cut slice ``z``: image (C, X, Y, Z) -> (C * context_slices, X, Y); boxes xyzxyz -> xyxy of boxes crossing ``z``.

    ``random=True``: with probability ``pos`` a slice through a random box, else any slice of the volume.
    ``random=False`` (validation): the middle slice of the largest box, or the middle slice when there is none.
    ``reach``: mined boxes' ``z_half_extent_slices`` become ignore regions (``reach_margin`` widens them in-plane);
    ``ignore_key``: 3D ignore regions given by the datalist. Both leave as boxes labelled ``IGNORE_LABEL``.
    """

    def __init__(
        self,
        image_key: str = "image",
        box_key: str = "box",
        label_key: str = "label",
        pos: float = 0.75,
        random: bool = True,
        slice_axis: int = 2,
        context_slices: int = 1,
        reach: bool = False,
        reach_margin: float = 0.25,
        extent_key: str = "z_half_extent_slices",
        ignore_key: str = "ignore_box",
        context_mm: float | None = None,
    ) -> None:
        """``context_mm``: the farthest neighbour's distance in mm (the volume's slice spacing sets the step); None: adjacent slices."""
        RandomizableTransform.__init__(self, prob=1.0)
        self.context_mm = context_mm
        self.image_key, self.box_key, self.label_key = image_key, box_key, label_key
        self.pos = pos
        self.random = random
        if slice_axis != 2:
            raise NotImplementedError("only the last array axis (axial after RAS reorientation) is supported")
        self.slice_axis = slice_axis
        self.context_slices = context_slices
        self.reach, self.reach_margin, self.extent_key, self.ignore_key = reach, reach_margin, extent_key, ignore_key

    def _pick(self, boxes: np.ndarray, n: int) -> int:
        if not self.random:
            if len(boxes):
                b = boxes[np.argmax(np.prod(boxes[:, 3:] - boxes[:, :3], axis=1))]
                return int(np.clip(np.floor((b[2] + b[5]) / 2), 0, n - 1))
            return n // 2
        if len(boxes) and self.R.rand() < self.pos:
            b = boxes[self.R.randint(len(boxes))]
            lo, hi = int(np.clip(np.floor(b[2]), 0, n - 1)), int(np.clip(np.ceil(b[5]), 1, n))
            return int(self.R.randint(lo, max(lo + 1, hi)))
        return int(self.R.randint(n))

    def _ignore(self, d: dict, boxes: np.ndarray, n: int) -> np.ndarray:
        """3D ignore regions of this item: the datalist's, plus the reach of its boxes."""
        parts = [np.asarray(d.get(self.ignore_key) or np.zeros((0, 6)), dtype=np.float32).reshape(-1, 6)]
        if self.reach and self.extent_key in d and d[self.extent_key] is not None and len(boxes):
            half = np.asarray([np.nan if v is None else v for v in d[self.extent_key]], dtype=np.float64)
            parts.append(reach_boxes(boxes, half, self.reach_margin, n))
        return np.concatenate(parts)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        img = d[self.image_key]
        boxes = np.asarray(torch.as_tensor(d[self.box_key]).cpu(), dtype=np.float32).reshape(-1, 6)
        labels = np.asarray(torch.as_tensor(d[self.label_key]).cpu()).reshape(-1)
        if len(labels) != len(boxes):
            raise ValueError(
                f"SliceWithBoxesd: {len(boxes)} boxes but {len(labels)} labels in item {getattr(img, 'meta', {}).get('filename_or_obj', '')}"
            )
        n = img.shape[-1]
        z = self._pick(boxes, n)
        cross = (boxes[:, 2] <= z) & (boxes[:, 5] > z)
        ignore = self._ignore(d, boxes, n)
        ignore = ignore[(ignore[:, 2] <= z) & (ignore[:, 5] > z)]
        affine = np.asarray(torch.as_tensor(getattr(img, "affine", torch.eye(4))).cpu(), dtype=np.float64)
        aff2d = np.eye(3)
        aff2d[:2, :2] = affine[:2, :2]
        aff2d[:2, 2] = (affine @ np.array([0.0, 0.0, z, 1.0]))[:2]
        meta = {"filename_or_obj": getattr(img, "meta", {}).get("filename_or_obj", ""), "slice": z}
        step = context_step(self.context_mm, float(spacing_of_affine(affine)[2]), self.context_slices)
        d[self.image_key] = MetaTensor(context_stack(img, z, self.context_slices, step), affine=torch.as_tensor(aff2d), meta=meta)
        out_boxes = np.concatenate([boxes[cross][:, [0, 1, 3, 4]], ignore[:, [0, 1, 3, 4]]])
        out_labels = np.concatenate([labels[cross].astype(np.int64), np.full(len(ignore), IGNORE_LABEL, np.int64)])
        d[self.box_key] = torch.as_tensor(out_boxes, dtype=torch.float32).reshape(-1, 4)
        d[self.label_key] = torch.as_tensor(out_labels, dtype=torch.long)
        for k in (self.extent_key, self.ignore_key):
            d.pop(k, None)
        return d


class KeySliceContextd(Transform):
    """A key slice (C, X, Y) -> its ``context_slices`` adjacent slices (C * k, X, Y), read from the volume it was cut from.

    Why: a 2.5D model takes each slice with its neighbours, but the seed study's key-slice comparison
    (configs/evaluate.yaml) and 2D inference lists hold single slices. Items that say which volume and
    slice they come from (``volume``, ``slice``: the demo's, DeepLesion's key slices) get their neighbours
    from it; the volume's slice must be the item's image, so a wrong index cannot pass silently.
    Identity when ``context_slices`` is 1.
    """

    def __init__(
        self, context_slices: int = 1, image_key: str = "image", volume_key: str = "volume", slice_key: str = "slice", cache: int = 4
    ) -> None:
        self.k, self.image_key, self.volume_key, self.slice_key = check_context_slices(context_slices), image_key, volume_key, slice_key
        self.cache_size = cache
        self._cache: dict[str, torch.Tensor] = {}  # key slices of one volume come together in a datalist

    def _volume(self, path: str) -> torch.Tensor:
        if path not in self._cache:
            from monai.transforms import LoadImage

            if not Path(path).is_file():
                raise InputError(f"{path}: no such volume (the '{self.volume_key}' of a key slice)")

            vol = LoadImage(image_only=True, ensure_channel_first=True)(path)
            if len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[path] = torch.as_tensor(vol).as_subclass(torch.Tensor).float()
        return self._cache[path]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        if self.k == 1:
            return d
        img = d[self.image_key]
        name = getattr(img, "meta", {}).get("filename_or_obj", "")
        path, z = d.get(self.volume_key), d.get(self.slice_key)
        if not path or z is None:
            raise InputError(
                f"{name}: the model takes {self.k} adjacent slices, but the item has no '{self.volume_key}' and '{self.slice_key}' "
                "(the volume this key slice was cut from, and its index); give them, or run volumes (configs/inference_volume.yaml)"
            )
        vol, z = self._volume(str(path)), int(z)
        mine = torch.as_tensor(img).as_subclass(torch.Tensor).float()
        if vol.ndim != 4 or tuple(vol.shape[:3]) != tuple(mine.shape) or not 0 <= z < vol.shape[-1]:
            raise InputError(
                f"{name}: '{self.slice_key}' {z} of {path} (shape {tuple(vol.shape)}) cannot be this image (shape {tuple(mine.shape)})"
            )
        tol = 1e-3 * max(1.0, float(mine.abs().max()))
        if not torch.allclose(vol[..., z], mine, rtol=1e-3, atol=tol):
            raise InputError(f"{name}: slice {z} of {path} is not this image (check the item's '{self.slice_key}')")
        stack = context_stack(vol, z, self.k)
        d[self.image_key] = MetaTensor(
            stack, affine=getattr(img, "affine", None), meta={k: v for k, v in getattr(img, "meta", {}).items() if k != "affine"}
        )
        return d
