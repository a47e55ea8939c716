"""3D volume + 3D boxes -> one axial 2D slice + the boxes that cross it, for training the 2D model on volumes.

Why: MONAI Label hands detection training data over as whole volumes with 3D world boxes (Slicer
ROIs); the model learns on axial slices. Sampling a slice per iteration (mostly through a lesion)
turns the volume datalist into the 2D items configs/train.yaml already knows how to augment.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import RandomizableTransform


class SliceWithBoxesd(RandomizableTransform):
    """Cut slice ``z`` along ``slice_axis``: image (C, X, Y, Z) -> (C, X, Y); boxes xyzxyz -> xyxy of boxes crossing ``z``.

    ``random=True``: with probability ``pos`` a slice through a random box, else any slice.
    ``random=False`` (validation): the middle slice of the largest box, or the middle slice when there is none.
    """

    def __init__(
        self,
        image_key: str = "image",
        box_key: str = "box",
        label_key: str = "label",
        pos: float = 0.75,
        random: bool = True,
        slice_axis: int = 2,
    ) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        self.image_key, self.box_key, self.label_key = image_key, box_key, label_key
        self.pos = pos
        self.random = random
        if slice_axis != 2:
            raise NotImplementedError("only the last array axis (axial after RAS reorientation) is supported")
        self.slice_axis = slice_axis

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

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        img = d[self.image_key]
        boxes = np.asarray(torch.as_tensor(d[self.box_key]).cpu(), dtype=np.float32).reshape(-1, 6)
        labels = np.asarray(torch.as_tensor(d[self.label_key]).cpu()).reshape(-1)
        if len(labels) != len(boxes):
            raise ValueError(
                f"SliceWithBoxesd: {len(boxes)} boxes but {len(labels)} labels in item {d.get('image_meta_dict', {}).get('filename_or_obj', '')}"
            )
        n = img.shape[-1]
        z = self._pick(boxes, n)
        cross = (boxes[:, 2] <= z) & (boxes[:, 5] > z)
        affine = np.asarray(torch.as_tensor(getattr(img, "affine", torch.eye(4))).cpu(), dtype=np.float64)
        aff2d = np.eye(3)
        aff2d[:2, :2] = affine[:2, :2]
        aff2d[:2, 2] = (affine @ np.array([0.0, 0.0, z, 1.0]))[:2]
        meta = {"filename_or_obj": getattr(img, "meta", {}).get("filename_or_obj", ""), "slice": z}
        d[self.image_key] = MetaTensor(
            torch.as_tensor(img[..., z]).as_subclass(torch.Tensor).clone(), affine=torch.as_tensor(aff2d), meta=meta
        )
        d[self.box_key] = torch.as_tensor(boxes[cross][:, [0, 1, 3, 4]], dtype=torch.float32)
        d[self.label_key] = torch.as_tensor(labels[cross], dtype=torch.long)
        return d
