"""MONAI's RetinaNet inference on a batch of slices, the box regression head only where a box can come from.

Why: the regression head costs as much as the classification head, but MONAI reads its output only at
the candidate anchors (score above ``score_thresh``, top-k per level), and on most slices of a volume
some pyramid levels have none. The classification head runs first; the regression head then runs on
the slices that have a candidate on that level (every level is its own map, and group norm is per
slice, so each slice's output does not depend on the others'); elsewhere its output is zeros that no
box is ever decoded from. Same modules, same weights, same box selection: the scores are those of
``RetinaNetDetector.forward``; the regressed boxes are those of the same convolutions on a smaller
batch (which oneDNN may sum in another order, as it may for any other batch size). The classification
head runs in fp32 under AMP: the volume path ranks and thresholds boxes by its logit (docs/evaluation.md).
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.apps.detection.networks.retinanet_network import RetinaNet, RetinaNetClassificationHead, RetinaNetRegressionHead
from monai.apps.detection.utils.box_selector import BoxSelector
from monai.apps.detection.utils.detector_utils import preprocess_images
from torch import Tensor

from bundle.inference.box_selection import score_cut

T = TypeVar("T")
R = TypeVar("R")
_ANCHORS = threading.Lock()  # MONAI caches anchors on the detector, which the worker threads share


def supported(det) -> bool:
    """MONAI's own detector, network, heads and box selector: anything else goes through ``det(...)``."""
    if not isinstance(det, RetinaNetDetector) or det.training:
        return False
    net = det.network
    return (
        type(net) is RetinaNet
        and not net.use_list_output
        and type(net.classification_head) is RetinaNetClassificationHead
        and type(net.regression_head) is RetinaNetRegressionHead
        and type(det.box_selector) is BoxSelector
    )


def head_outputs(net: RetinaNet, images: Tensor, cut: float) -> dict[str, list[Tensor]]:
    """``RetinaNet.forward``'s dict; box regression maps only for slices whose level has a logit >= ``cut``.

    MONAI warns about NaN or Inf logits (without gradients); here NaN or +Inf ones warn, and a NaN
    anywhere on a level runs the regression head on every slice of it."""
    feats = net.feature_extractor(images)
    maps = [feats] if isinstance(feats, Tensor) else list(feats.values()) if isinstance(feats, dict) else list(feats)
    cls_head, reg_head = net.classification_head, net.regression_head
    cls: list[Tensor] = []
    reg: list[Tensor] = []
    for f in maps:
        # the classification head in fp32 even under AMP: its logit ranks and thresholds every box downstream
        # (scores never saturate: docs/evaluation.md), and fp16 would round logits into ties
        with torch.autocast(f.device.type, enabled=False):
            logits = cls_head.cls_logits(cls_head.conv(f.to(cls_head.cls_logits.weight.dtype)))
        cls.append(logits)
        peaks = logits.flatten(1).amax(1)  # NaN if any NaN
        if bool((peaks.isnan() | (peaks == math.inf)).any()):
            warnings.warn("cls_logits is NaN or Inf.", stacklevel=2)
        need = (peaks >= cut) | peaks.isnan()
        if bool(need.all()):
            reg.append(reg_head.bbox_reg(reg_head.conv(f)))
            continue
        out = f.new_zeros((f.shape[0], reg_head.bbox_reg.out_channels, *f.shape[2:]))
        idx = need.nonzero()[:, 0]
        if idx.numel():
            out[idx] = reg_head.bbox_reg(reg_head.conv(f[idx]))
        reg.append(out)
    return {net.cls_key: cls, net.box_reg_key: reg}


def detect(det: RetinaNetDetector, batch: Tensor) -> list[dict[str, Tensor]]:
    """``det(batch)`` in eval mode without the sliding window: MONAI's padding, anchors, reshaping and
    ``det.postprocess_detections`` around :func:`head_outputs`; needs :func:`supported`."""
    images, image_sizes = preprocess_images(batch, det.spatial_dims, det.size_divisible)
    head = head_outputs(det.network, images, score_cut(det.box_selector))
    with _ANCHORS:
        det.generate_anchors(images, head)
        anchors = det.anchors
    num_anchor_locs_per_level = [x.shape[2:].numel() for x in head[det.cls_key]]
    reshaped = {key: det._reshape_maps(head[key]) for key in (det.cls_key, det.box_reg_key)}
    return det.postprocess_detections(reshaped, anchors, image_sizes, num_anchor_locs_per_level)


@contextlib.contextmanager
def threads_per_worker(workers: int) -> Iterator[None]:
    """Within the block, torch's intra-op threads divided by ``workers`` (process-wide, restored on exit).

    Why: on a 2-core CPU one convolution on two OpenMP threads waits at barriers and the small or
    memory-bound ops (norms, activations, reorders, the linking step's IoU tables) barely scale; two
    single-threaded workers on two halves of the slices keep both cores busy."""
    threads = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(max(1, threads // workers))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def in_workers(fn: Callable[[T], R], parts: Sequence[T], workers: int) -> list[R]:
    """``[fn(p) for p in parts]`` in ``workers`` Python threads, each with its share of the intra-op threads."""
    if workers <= 1 or len(parts) <= 1:
        return [fn(p) for p in parts]
    with threads_per_worker(workers), ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, parts))
