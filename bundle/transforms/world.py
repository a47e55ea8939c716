"""Boxes between image array (voxel) coordinates and world LPS millimetres.

Why: the bundle keeps boxes in array coordinates (docs/README.md) and converts only at the
boundaries that need world coordinates: MONAI Label / 3D Slicer (LPS, ``cccwhd``) and DICOM.
Array box coordinates put voxel ``i`` on ``[i, i+1)`` (max exclusive), while an affine maps the
*centre* of voxel ``i`` to world, so a box edge ``c`` is the continuous index ``c - 0.5``. All eight
corners are mapped, so an oblique affine still gives the enclosing axis-aligned world box.
MONAI's ``AffineBoxToWorldCoordinated`` maps two corners without the half-voxel shift; it is exact
only for axis-aligned affines and off by half a voxel at each edge.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data.box_utils import convert_box_mode
from monai.transforms import MapTransform

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _corners(boxes: np.ndarray) -> np.ndarray:
    """(N, 6) xyzxyz -> (N, 8, 3) corner points."""
    lo, hi = boxes[:, :3], boxes[:, 3:]
    out = []
    for pick in itertools.product((0, 1), repeat=3):
        out.append(np.stack([(hi if p else lo)[:, d] for d, p in enumerate(pick)], axis=1))
    return np.stack(out, axis=1)


def _apply(boxes: np.ndarray, affine: np.ndarray) -> np.ndarray:
    pts = _corners(boxes)
    homo = np.concatenate([pts, np.ones(pts.shape[:2] + (1,))], axis=2)
    mapped = homo @ affine.T
    return np.concatenate([mapped[..., :3].min(axis=1), mapped[..., :3].max(axis=1)], axis=1)


def voxel_to_world(boxes: np.ndarray | Sequence, affine: np.ndarray, lps: bool = True, mode: str = "cccwhd") -> np.ndarray:
    """Array-coordinate ``xyzxyz`` boxes -> world boxes (LPS if ``lps`` else the affine's RAS) in ``mode``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    aff = np.asarray(affine, dtype=np.float64)
    if lps:
        aff = RAS_TO_LPS @ aff
    world = _apply(b - 0.5, aff)
    return np.asarray(convert_box_mode(world, src_mode="xyzxyz", dst_mode=mode)) if len(world) else world


def world_to_voxel(boxes: np.ndarray | Sequence, affine: np.ndarray, lps: bool = True, mode: str = "cccwhd") -> np.ndarray:
    """Inverse of :func:`voxel_to_world`: world boxes in ``mode`` -> array-coordinate ``xyzxyz``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    if not len(b):
        return b
    b = np.asarray(convert_box_mode(b, src_mode=mode, dst_mode="xyzxyz"))
    aff = np.asarray(affine, dtype=np.float64)
    if lps:
        aff = RAS_TO_LPS @ aff
    return _apply(b, np.linalg.inv(aff)) + 0.5


class _AffineBoxd(MapTransform):
    """Shared part of the two directions: the reference image's affine, LPS or RAS, the world box mode."""

    what = "boxes"

    def __init__(
        self, box_keys: KeysCollection, box_ref_image_keys: str, lps: bool = True, mode: str = "cccwhd", allow_missing_keys: bool = False
    ):
        super().__init__(box_keys, allow_missing_keys)
        self.ref = box_ref_image_keys
        self.lps = lps
        self.mode = mode

    def convert(self, box: np.ndarray, affine: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        affine = getattr(d[self.ref], "affine", None)
        if affine is None:
            raise ValueError(f"{type(self).__name__}: '{self.ref}' has no affine (not a MetaTensor); cannot place {self.what}")
        aff = np.asarray(torch.as_tensor(affine).cpu())
        for key in self.key_iterator(d):
            box = np.asarray(torch.as_tensor(d[key]).detach().cpu(), dtype=np.float64).reshape(-1, 6)
            d[key] = torch.as_tensor(self.convert(box, aff), dtype=torch.float32)
        return d


class BoxesToWorldd(_AffineBoxd):
    """Replaces array-coordinate ``xyzxyz`` boxes by world boxes (LPS ``cccwhd`` for MONAI Label).

    The affine comes from the reference image's MetaTensor (after any reorientation), so the
    boxes must be in that image's array coordinates.
    """

    what = "boxes in world coordinates"

    def convert(self, box: np.ndarray, affine: np.ndarray) -> np.ndarray:
        return voxel_to_world(box, affine, self.lps, self.mode)


class WorldBoxesToImaged(_AffineBoxd):
    """Replaces world boxes (LPS ``cccwhd``: what MONAI Label's training datalist carries from Slicer ROIs)
    by array-coordinate ``xyzxyz`` boxes of the reference image (after any reorientation)."""

    what = "world boxes in the image"

    def convert(self, box: np.ndarray, affine: np.ndarray) -> np.ndarray:
        return world_to_voxel(box, affine, self.lps, self.mode)
