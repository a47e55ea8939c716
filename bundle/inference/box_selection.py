"""MONAI's RetinaNet box selection for a whole batch of slices at once, with MONAI's decisions.

Why: ``RetinaNetDetector.postprocess_detections`` decodes every anchor of every image and level,
clips per image and level, and runs ``monai.data.box_utils.batched_nms``, a Python loop with one
``box_iou`` call per kept box. For a volume's axial slices this cost more than the network.
:func:`postprocess_batch` gives the same boxes, scores and labels: MONAI's own per-level top-k
(``BoxSelector.select_top_score_idx_per_level``), MONAI's box decoder and clipping applied once to
the few selected candidates of the whole batch (both are element-wise), and :func:`batched_nms`,
which reaches MONAI's NMS decisions through ``torchvision.ops.nms``.
:func:`batched_postprocess` installs it on a detector for the duration of a ``with`` block.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torchvision
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.apps.detection.utils.box_selector import BoxSelector
from monai.data import box_utils
from torch import Tensor

# only pairs of boxes both smaller than this (pixels) can have a union under 4, where MONAI's IoU
# (union + float32 eps) and torchvision's (union) may round differently: those pairs are checked
_SMALL_AREA = 8.0


def _small_pairs_agree(b: Tensor, area: Tensor, thresh: float) -> bool:
    """Whether every pair of small boxes gets the same suppress decision from both IoU formulas."""
    small = area < _SMALL_AREA
    if int(small.sum()) < 2:
        return True
    bs, a = b[small], area[small]
    w = (torch.minimum(bs[:, None, 2], bs[None, :, 2]) - torch.maximum(bs[:, None, 0], bs[None, :, 0])).clamp(min=0)
    h = (torch.minimum(bs[:, None, 3], bs[None, :, 3]) - torch.maximum(bs[:, None, 1], bs[None, :, 1])).clamp(min=0)
    inter = w * h
    union = a[:, None] + a[None, :] - inter
    return torch.equal(inter / union > thresh, inter / (union + torch.finfo(torch.float32).eps) > thresh)


def batched_nms(boxes: Tensor, scores: Tensor, labels: Tensor, nms_thresh: float, max_proposals: int = -1) -> Tensor:
    """The indices ``monai.data.box_utils.batched_nms`` (IoU metric) returns, computed by ``torchvision.ops.nms``.

    Identical, not close: MONAI's per-label coordinate offsets are applied with MONAI's expressions;
    the order is MONAI's stable descending sort, handed to torchvision as strictly decreasing ranks
    (its CPU sort is not stable: equal scores could come out in another order); the threshold is
    rounded to float32, as torch rounds it in MONAI's ``overlap <= nms_thresh``; the IoU arithmetic
    is the same but for MONAI's eps added to the union, which changes nothing once a union is >= 4,
    and pairs of smaller boxes are checked. Where a decision could differ (or boxes are non-finite,
    inverted or 3D) MONAI's own function runs. ``max_proposals`` keeps the first picks, as MONAI
    stops after them. Runs on the CPU (a few hundred boxes); the indices go back to ``boxes.device``.
    """
    if boxes.shape[0] == 0:
        return torch.zeros((0,), dtype=torch.long, device=boxes.device)
    if boxes.shape[1] != 4:
        return box_utils.batched_nms(boxes, scores, labels, nms_thresh, max_proposals)
    boxes_t = boxes.detach().to(device="cpu", dtype=torch.float32)
    labels_t = labels.detach().to(device="cpu", dtype=torch.long)
    b = boxes_t + (labels_t.to(boxes_t) * (boxes_t.max() + 1))[:, None]  # as monai.data.box_utils.batched_nms
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    thresh = float(np.float32(nms_thresh))
    if not bool(torch.isfinite(b).all()) or bool((b[:, 2:] < b[:, :2]).any()) or not _small_pairs_agree(b, area, thresh):
        return box_utils.batched_nms(boxes, scores, labels, nms_thresh, max_proposals)
    order = torch.argsort(scores.detach().to(boxes_t), dim=0, descending=True, stable=True)
    ranks = torch.arange(order.numel(), 0, -1, dtype=torch.float32)
    keep = torchvision.ops.nms(b[order], ranks, thresh)
    if max_proposals >= 1:
        keep = keep[:max_proposals]
    return order[keep].to(boxes.device)


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, nms_thresh: float, max_proposals: int = -1) -> np.ndarray:
    """The indices ``monai.data.box_utils.non_max_suppression`` (IoU, 2D or 3D boxes) returns, for many boxes.

    MONAI calls ``box_iou(remaining, picked)`` once per kept box; this calls it for blocks of candidates
    in score order against the boxes from the block on (the same element-wise arithmetic per pair, so
    the same table entries) and runs MONAI's greedy loop on them: MONAI's stable descending order,
    ``overlap <= nms_thresh`` survives, the first ``max_proposals`` picks. Blocks double in size and
    stop once ``max_proposals`` boxes are picked: the linking step's tracks number thousands for an
    untrained network, its 50 picks come from the first few hundred.
    """
    boxes, scores = np.asarray(boxes), np.asarray(scores)
    if boxes.shape[0] == 0:
        return np.zeros((0,), dtype=np.int64)
    boxes_t = torch.as_tensor(boxes)
    order = torch.argsort(torch.as_tensor(scores).to(boxes_t), dim=0, descending=True, stable=True)
    b = boxes_t[order]
    removed = np.zeros(len(b), dtype=bool)
    pick: list[int] = []
    lo, size = 0, 64
    while lo < len(b) and not len(pick) >= max_proposals >= 1:
        hi = min(lo + size, len(b))
        survives = (box_utils.box_iou(b[lo:hi], b[lo:]) <= nms_thresh).numpy()  # [i - lo, j - lo]: j survives picked i
        for i in range(lo, hi):
            if removed[i]:
                continue
            pick.append(i)
            if len(pick) >= max_proposals >= 1:
                break
            removed[lo:] |= ~survives[i - lo]
        lo, size = hi, size * 2
    return order.numpy()[pick]


def _monai(det: RetinaNetDetector, *args, **kwargs) -> list[dict[str, Tensor]]:
    return type(det).postprocess_detections(det, *args, **kwargs)


def score_cut(sel: BoxSelector) -> float:
    """A level whose largest logit is below this has no score above ``score_thresh`` (sigmoid is monotonic;
    the margin is far wider than any rounding), so MONAI's top-k there would return nothing."""
    t = float(sel.score_thresh)
    if not sel.apply_sigmoid:
        return t - 1e-3 * max(1.0, abs(t))
    if t <= 0.0:
        return -math.inf
    return math.inf if t >= 1.0 else math.log(t / (1.0 - t)) - 1e-3


def _candidates(det: RetinaNetDetector, logits: Tensor, per_level: Sequence[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """MONAI's per-image, per-level score threshold and top-k: rows of (B*N), scores, labels, image index.

    ``select_top_score_idx_per_level`` itself runs wherever a candidate may pass (its top-k order among
    equal scores is what MONAI's NMS sees); levels with every logit below the threshold are skipped."""
    sel, n_total = det.box_selector, logits.shape[1]
    bounds = np.cumsum([0, *per_level])
    peaks = torch.stack(
        [
            logits[:, lo:hi].amax(dim=(1, 2)) if hi > lo else logits.new_full((len(logits),), -math.inf)
            for lo, hi in zip(bounds[:-1], bounds[1:])
        ],
        1,
    )
    cut = score_cut(sel)
    rows, scores, labels, image = [], [], [], []
    for i, peaks_i in enumerate(peaks.tolist()):
        for lo, hi, peak in zip(bounds[:-1], bounds[1:], peaks_i):
            if peak < cut:
                continue
            idx, sc, lab = sel.select_top_score_idx_per_level(logits[i, lo:hi])
            rows.append(idx + (i * n_total + int(lo)))
            scores.append(sc)
            labels.append(lab)
            image.append(torch.full_like(idx, i))
    if not rows:
        empty = torch.zeros((0,), dtype=torch.long, device=logits.device)
        return empty, empty.float(), empty, empty
    return torch.cat(rows), torch.cat(scores), torch.cat(labels), torch.cat(image)


def postprocess_batch(
    det: RetinaNetDetector,
    head_outputs_reshape: dict[str, Tensor],
    anchors: list[Tensor],
    image_sizes: list[list[int]],
    num_anchor_locs_per_level: Sequence[int],
    need_sigmoid: bool = True,
) -> list[dict[str, Tensor]]:
    """Drop-in for ``RetinaNetDetector.postprocess_detections``: the same detections, batch-wise.

    Falls back to MONAI's method where the shortcut is not known to be identical: images of different
    sizes, a custom overlap metric or box selector."""
    sel = det.box_selector
    if (
        type(sel) is not BoxSelector
        or sel.box_overlap_metric is not box_utils.box_iou
        or any(list(s) != list(image_sizes[0]) for s in image_sizes)
    ):
        return _monai(det, head_outputs_reshape, anchors, image_sizes, num_anchor_locs_per_level, need_sigmoid)
    logits, reg = head_outputs_reshape[det.cls_key], head_outputs_reshape[det.box_reg_key]
    n_img, compute_dtype = logits.shape[0], logits.dtype
    per_level = [n * det.num_anchors_per_loc for n in num_anchor_locs_per_level]
    rows, scores, labels, image = _candidates(det, logits, per_level)
    if rows.numel():  # decode only the candidates: MONAI decodes every anchor, element-wise, then indexes them
        if all(a is anchors[0] for a in anchors):  # MONAI's generator hands every image the same tensor
            anchor_rows = anchors[0][rows - image * logits.shape[1]]
        else:
            anchor_rows = torch.cat(anchors)[rows]
        boxes = det.box_coder.decode_single(reg.reshape(-1, reg.shape[-1])[rows].to(torch.float32), anchor_rows).to(compute_dtype)
        boxes, keep = box_utils.clip_boxes_to_image(boxes, image_sizes[0], remove_empty=True)
        scores, labels, image = scores[keep], labels[keep], image[keep]
    else:
        boxes = torch.zeros((0, reg.shape[-1]), dtype=compute_dtype, device=reg.device)
    counts = torch.bincount(image, minlength=n_img).tolist()
    out = []
    for b, s, lab in zip(boxes.split(counts), scores.split(counts), labels.split(counts)):
        # one box or none: MONAI's NMS keeps what there is
        k = batched_nms(b, s, lab, sel.nms_thresh, sel.detections_per_img) if len(b) > 1 else torch.arange(len(b), device=b.device)
        # scores stay float32 (MONAI casts them to the logits' dtype, fp16 under AMP): they rank and threshold boxes
        out.append({det.target_box_key: b[k], det.pred_score_key: s[k].to(torch.float32), det.target_label_key: lab[k]})
    return out


@contextlib.contextmanager
def batched_postprocess(det, enabled: bool = True) -> Iterator[None]:
    """Within the block, ``det`` (a MONAI ``RetinaNetDetector``) post-processes with :func:`postprocess_batch`.

    An instance attribute, removed on exit: the class, other detectors and MONAI's own path stay as they are."""
    if not enabled or not isinstance(det, RetinaNetDetector) or "postprocess_detections" in vars(det):
        yield
        return
    det.postprocess_detections = functools.partial(postprocess_batch, det)
    try:
        yield
    finally:
        del det.postprocess_detections
