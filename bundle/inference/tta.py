"""Flip test-time augmentation for the slice detector: every slice also seen flipped, the views' boxes fused.

Why: at the volume path's operating point false boxes score as high as some lesions (issue 24); the hope was that
a lesion is found in every view and a spurious peak mostly in one. Training flips and rotates every patch
(configs/train.yaml ``RandFlipBoxd``, ``RandRotateBox90d``), so a flipped slice is an input the model knows. Measured
on the ablation's models it lost on validation (docs/training.md "Flips at test time"), so it is off by default, and
an operating point chosen with flips holds only for inference with the same flips. The views are fused per slice as weighted box fusion does: boxes of one label that overlap by
``iou`` (at most one per view) become one box, their coordinates weighted by probability, and their score the mean
score over all views, a view without a box counted at the box selector's floor (``floor``, the lowest score it can
return). Logits stay logits (float64 mean, stored float32), so ranking and the operating point work as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.apps.detection.transforms.box_ops import flip_boxes
from monai.data.box_utils import box_iou

SliceBoxes = tuple[np.ndarray, np.ndarray, np.ndarray]  # (boxes (n, 4) xyxy, labels (n,), scores (n,))


def check_flips(flips: Sequence[Sequence[int]] | None) -> list[tuple[int, ...]]:
    """Each extra view as the slice axes (0, 1) it flips; one clear message for anything else."""
    out = []
    for f in flips or []:
        try:
            axes = tuple(int(a) for a in f)
        except (TypeError, ValueError):
            raise ValueError(f"tta_flips: each view is a list of slice axes (0 and/or 1), got {f!r}") from None
        if not axes or any(a not in (0, 1) for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(f"tta_flips: each view flips slice axes 0 and/or 1, got {list(f)}")
        out.append(axes)
    return out


def predict_views(
    run: Callable[[torch.Tensor], list[SliceBoxes]],
    stack: torch.Tensor,
    flips: Sequence[Sequence[int]],
    floor: float,
    logits: bool = True,
    iou: float = 0.55,
) -> list[SliceBoxes]:
    """``run(stack)`` per slice, and with ``flips`` each extra view's boxes flipped back and fused with it.

    ``stack`` is (n_slices, channels, a, b); ``run`` returns per-slice (boxes, labels, scores) in its pixels."""
    views = check_flips(flips)
    first = run(stack)
    if not views:
        return first
    size = tuple(stack.shape[-2:])
    per_view = [first]
    for axes in views:
        out = run(torch.flip(stack, dims=[2 + a for a in axes]))
        per_view.append([(flip_boxes(b, size, axes) if len(b) else b, lab, s) for b, lab, s in out])
    return [fuse([v[z] for v in per_view], floor, logits, iou) for z in range(stack.shape[0])]


def fuse(views: Sequence[SliceBoxes], floor: float, logits: bool = True, iou: float = 0.55) -> SliceBoxes:
    """One slice's boxes from every view -> fused boxes, labels and mean scores (highest first).

    ``logits``: scores are logits (the volume path), weighted by their probability; else probabilities."""
    n_views = len(views)
    boxes = np.concatenate([np.asarray(v[0], np.float64).reshape(-1, 4) for v in views])
    labels = np.concatenate([np.asarray(v[1]).reshape(-1).astype(np.int64) for v in views])
    scores = np.concatenate([np.asarray(v[2], np.float64).reshape(-1) for v in views])
    view = np.concatenate([np.full(len(np.asarray(v[2]).reshape(-1)), i) for i, v in enumerate(views)])
    if not len(boxes):
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64), np.zeros((0,), np.float32)
    order = np.argsort(-scores, kind="stable")
    clusters: list[list[int]] = []
    fused: list[np.ndarray] = []
    for i in order:
        best, best_iou = -1, iou
        if fused:
            ious = np.asarray(box_iou(boxes[i : i + 1], np.stack(fused)))[0]
            for c in np.argsort(-ious, kind="stable"):
                if ious[c] < best_iou:
                    break
                members = clusters[c]
                if labels[members[0]] == labels[i] and view[i] not in view[members]:
                    best = int(c)
                    break
        if best < 0:
            clusters.append([int(i)])
            fused.append(boxes[i].copy())
            continue
        clusters[best].append(int(i))
        m = clusters[best]
        w = 1.0 / (1.0 + np.exp(-scores[m])) if logits else np.clip(scores[m], 1e-12, None)  # float64
        fused[best] = (boxes[m] * w[:, None]).sum(0) / w.sum()
    out_scores = np.asarray([(scores[m].sum() + (n_views - len(m)) * floor) / n_views for m in clusters])
    keep = np.argsort(-out_scores, kind="stable")
    return (
        np.stack(fused)[keep].astype(np.float32),
        np.asarray([labels[m[0]] for m in clusters], np.int64)[keep],
        out_scores[keep].astype(np.float32),
    )
