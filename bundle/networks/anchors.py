"""Anchors from the data: box sizes in the canonical grid, anchor shapes fitted to them, and how many boxes the matcher takes.

Why: anchors are in pixels, and a lesion the size rule keeps (10 mm) must meet an anchor at a stride fine enough for the
ATSS matcher to make it a positive; otherwise the network is never taught to find it (issue 24: 10-20 mm lesions
were found half as often as 20-40 mm ones). :func:`fit_anchor_shapes` is the detection tutorial's k-means (1 - IoU
distance) over the boxes' in-plane sizes; :func:`match_report` runs MONAI's own ``AnchorGeneratorWithAnchorShape`` and
``ATSSMatcher`` (the training settings) on each box at random sub-pixel positions and counts the boxes with a positive.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
from monai.apps.detection.utils.ATSS_matcher import ATSSMatcher
from monai.data.box_utils import box_iou

SIZE_BINS_MM = ((0.0, 10.0, "<10 mm"), (10.0, 20.0, "10-20 mm"), (20.0, 40.0, "20-40 mm"), (40.0, np.inf, ">=40 mm"))


def box_sizes(
    datalist_file: str | Path, sections: Sequence[str], spacing_mm: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """In-plane (w, h) of every box of the sections: in pixels of ``spacing_mm`` (the canonical grid; None: as stored)
    and the long side in mm. Spacing from each volume's header (RAS axes, as training reorients)."""
    import nibabel as nib

    p = Path(datalist_file)
    doc = json.loads(p.read_text())
    px, mm = [], []
    for sec in sections:
        for it in doc.get(sec, []):
            boxes = np.asarray(it.get("box") or [], dtype=np.float64).reshape(-1, 6)
            if not len(boxes):
                continue
            img = nib.load(str(p.parent / it["image"]))
            ornt = nib.orientations.io_orientation(img.affine)
            zooms = np.asarray(img.header.get_zooms()[:3], dtype=np.float64)
            size_mm = (boxes[:, 3:] - boxes[:, :3]) * zooms  # stored axes
            ras = np.zeros_like(size_mm)
            ras[:, ornt[:, 0].astype(int)] = size_mm
            wh_mm = ras[:, :2]
            mm.append(wh_mm.max(axis=1))
            px.append(wh_mm / (np.asarray(spacing_mm[:2], dtype=np.float64) if spacing_mm and min(spacing_mm[:2]) > 0 else zooms[:2]))
    if not px:
        return np.zeros((0, 2)), np.zeros(0)
    return np.concatenate(px), np.concatenate(mm)


def _iou_wh(wh: np.ndarray, centres: np.ndarray) -> np.ndarray:
    inter = np.minimum(wh[:, None, 0], centres[None, :, 0]) * np.minimum(wh[:, None, 1], centres[None, :, 1])
    return inter / (wh.prod(1)[:, None] + centres.prod(1)[None, :] - inter)


def fit_anchor_shapes(wh: np.ndarray, k: int = 3, smallest_px: float | None = None, seed: int = 0, iters: int = 100) -> list[list[float]]:
    """k anchor shapes (w, h) by k-means with 1 - IoU distance (the detection tutorial's way), smallest first.

    ``smallest_px``: the smallest shape is no larger than this (the size rule's smallest lesion in the grid), so the
    smallest kept lesion meets an anchor of its own size at the finest stride.
    """
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    if len(wh) < k:
        raise ValueError(f"{len(wh)} boxes: too few to fit {k} anchor shapes")
    rng = np.random.default_rng(seed)
    centres = wh[np.argsort(wh.prod(1))][np.linspace(0, len(wh) - 1, k).round().astype(int)].copy()  # quantiles of area
    for _ in range(iters):
        assign = np.argmax(_iou_wh(wh, centres), axis=1)
        new = np.stack([np.median(wh[assign == c], axis=0) if (assign == c).any() else wh[rng.integers(len(wh))] for c in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    centres = centres[np.argsort(centres.prod(1))]
    if smallest_px:
        centres[0] = np.minimum(centres[0], smallest_px)
    return [[round(float(a), 1), round(float(b), 1)] for a, b in centres]


def match_report(
    wh: np.ndarray,
    long_mm: np.ndarray,
    base_anchor_shapes: Sequence[Sequence[float]],
    feature_map_scales: Sequence[int] = (1, 2, 4),
    strides: Sequence[int] = (4, 8, 16),
    num_candidates: int = 4,
    center_in_gt: bool = False,
    positions: int = 4,
    seed: int = 0,
) -> dict:
    """Share of boxes that MONAI's ATSS matcher (training's settings) gives at least one positive anchor, overall and by
    size, each box tried at ``positions`` random sub-pixel positions (a box counts by the share of tries it matched)."""
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    gen = AnchorGeneratorWithAnchorShape(
        feature_map_scales=list(feature_map_scales), base_anchor_shapes=[list(s) for s in base_anchor_shapes]
    )
    side = int(max(64, 2 * np.ceil(wh.max() if len(wh) else 1) + 32))
    side += (-side) % max(strides)
    image = torch.zeros(1, 1, side, side)
    fmaps = [torch.zeros(1, 1, side // s, side // s) for s in strides]
    anchors = gen(image, fmaps)[0]
    per_level = [f.shape[-1] * f.shape[-2] for f in fmaps]  # anchor locations per level, as RetinaNetDetector passes them
    matcher = ATSSMatcher(num_candidates=num_candidates, similarity_fn=box_iou, center_in_gt=center_in_gt)
    rng = np.random.default_rng(seed)
    hit = np.zeros(len(wh))
    best_iou = np.zeros(len(wh))
    for i, (w, h) in enumerate(wh):
        for _ in range(positions):
            c = side / 2 + rng.uniform(0, max(strides), size=2)
            box = torch.as_tensor([[c[0] - w / 2, c[1] - h / 2, c[0] + w / 2, c[1] + h / 2]], dtype=torch.float32)
            _, matches = matcher.compute_matches(box, anchors, per_level, len(base_anchor_shapes))
            hit[i] += float((matches >= 0).any()) / positions
            best_iou[i] = max(best_iou[i], float(box_iou(box, anchors).max()))
    out = {
        "boxes": int(len(wh)),
        "matched": round(float(hit.sum()), 2),
        "share": round(float(hit.mean()), 4) if len(wh) else None,
        "by_size": {},
    }
    for lo, hi, label in SIZE_BINS_MM:
        sel = (long_mm >= lo) & (long_mm < hi)
        if sel.any():
            out["by_size"][label] = {
                "boxes": int(sel.sum()),
                "share": round(float(hit[sel].mean()), 4),
                "median_best_iou": round(float(np.median(best_iou[sel])), 3),
            }
    return out
