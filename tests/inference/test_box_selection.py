"""Batch-wise box selection gives MONAI's boxes exactly: NMS (ties, thresholds, max proposals) and the whole post-processing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
from monai.data import box_utils
from torch import nn

from bundle.inference.box_selection import batched_nms, batched_postprocess, non_max_suppression, postprocess_batch


def _random_boxes(gen: torch.Generator, n: int, size: int = 40) -> torch.Tensor:
    """Boxes on an integer grid (many equal IoUs), some of them 1-3 pixels wide (the small-box check)."""
    lo = torch.randint(0, size, (n, 2), generator=gen).float()
    wh = torch.randint(1, 12, (n, 2), generator=gen).float()
    wh[torch.rand(n, generator=gen) < 0.2] = torch.randint(1, 3, (2,), generator=gen).float()
    boxes = torch.cat([lo, lo + wh], 1)
    jitter = torch.rand(n, 1, generator=gen) < 0.3  # and some off the grid
    return boxes + jitter * torch.rand(n, 4, generator=gen) * 0.5 * torch.tensor([-1.0, -1.0, 1.0, 1.0])


@pytest.mark.parametrize("seed", range(6))
def test_batched_nms_equals_monai_with_ties(seed):
    gen = torch.Generator().manual_seed(seed)
    for n in (0, 1, 2, 7, 60, 300):
        boxes = _random_boxes(gen, n)
        scores = torch.randint(0, 6, (n,), generator=gen).float() / 5  # few distinct scores: ties everywhere
        labels = torch.randint(0, 1 + seed % 3, (n,), generator=gen)
        for thresh in (0.0, 0.1, 0.2, 0.22, 0.5, 0.7, 1.0):
            for max_proposals in (-1, 1, 5, 50):
                ours = batched_nms(boxes, scores, labels, thresh, max_proposals)
                ref = box_utils.batched_nms(boxes, scores, labels, thresh, max_proposals)
                assert ours.dtype == torch.long and torch.equal(ours, ref), (n, thresh, max_proposals)


def test_batched_nms_at_the_threshold():
    """IoU exactly at the threshold is kept (MONAI: overlap <= thresh), compared in float32 as MONAI does."""
    boxes = torch.tensor([[0.0, 0.0, 50.0, 10.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 40.0, 10.0], [0.0, 0.0, 25.0, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.7])
    labels = torch.zeros(4, dtype=torch.long)
    for thresh in (0.2, 0.5, 0.8, 0.25):  # IoUs with box 0: 100/500 = float32(0.2), 0.8, 0.5
        assert torch.equal(batched_nms(boxes, scores, labels, thresh), box_utils.batched_nms(boxes, scores, labels, thresh))
    assert batched_nms(boxes, scores, labels, 0.5).tolist() == [0, 1, 3]
    # why the float32 threshold: float32(0.2) > 0.2 in float64, so torchvision given 0.2 drops box 1
    assert torchvision.ops.nms(boxes[:2], scores[:2], 0.2).tolist() == [0]
    assert batched_nms(boxes[:2], scores[:2], labels[:2], 0.2).tolist() == [0, 1]


def test_batched_nms_falls_back_for_3d_and_tiny_boxes():
    gen = torch.Generator().manual_seed(0)
    b3 = torch.cat([torch.rand(20, 3, generator=gen) * 10, torch.rand(20, 3, generator=gen) * 10 + 10], 1)
    s, lab = torch.rand(20, generator=gen), torch.zeros(20, dtype=torch.long)
    assert torch.equal(batched_nms(b3, s, lab, 0.3), box_utils.batched_nms(b3, s, lab, 0.3))
    # unions under 4 pixels: MONAI's eps in the union decides. IoU 0.5/1.5 is float32(1/3) for torchvision
    # but one float lower for MONAI, so at a threshold one float below float32(1/3) they disagree
    tiny = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.5, 0.0, 1.5, 1.0], [0.25, 0.0, 1.25, 1.0]])
    ts, lab3 = torch.tensor([0.3, 0.2, 0.1]), torch.zeros(3, dtype=torch.long)
    edge = float(np.nextafter(np.float32(1 / 3), np.float32(0)))
    assert torchvision.ops.nms(tiny[:2], ts[:2], edge).tolist() == [0]
    assert (
        batched_nms(tiny[:2], ts[:2], lab3[:2], edge).tolist() == box_utils.batched_nms(tiny[:2], ts[:2], lab3[:2], edge).tolist() == [0, 1]
    )
    for thresh in (edge, 1 / 3, 0.6, 0.0):
        assert torch.equal(batched_nms(tiny, ts, lab3, thresh), box_utils.batched_nms(tiny, ts, lab3, thresh))


class _Head(nn.Module):
    """A stand-in for the RetinaNet network: the detector only reads these attributes."""

    spatial_dims, cls_key, box_reg_key, size_divisible = 2, "classification", "box_regression", 8

    def __init__(self, num_classes: int, num_anchors: int) -> None:
        super().__init__()
        self.num_classes, self.num_anchors = num_classes, num_anchors


def _detector(num_classes: int, **selector) -> RetinaNetDetector:
    shapes = ((6, 6), (10, 10), (16, 16))
    det = RetinaNetDetector(_Head(num_classes, len(shapes)), AnchorGeneratorWithAnchorShape((1, 2, 4), shapes))
    det.set_box_selector_parameters(
        **{"score_thresh": 0.3, "topk_candidates_per_level": 40, "nms_thresh": 0.22, "detections_per_img": 8, **selector}
    )
    return det.eval()


def _head_outputs(det: RetinaNetDetector, gen: torch.Generator, batch: int, hw: tuple[int, int]):
    """Random classification / regression maps (logits on a coarse grid: tied scores), reshaped as MONAI does."""
    a, c = det.num_anchors_per_loc, det.network.num_classes
    images = torch.zeros(batch, 1, *hw)
    levels = [(hw[0] // s, hw[1] // s) for s in (1, 2, 4)]
    cls = [torch.randint(-8, 8, (batch, a * c, *lv), generator=gen).float() / 4 for lv in levels]
    if batch > 2:  # image 1 has no candidate on level 0, image 2 none at all: skipped levels
        cls[0][1] -= 8.0
        for lv in cls:
            lv[2] -= 8.0
    reg = [torch.randn(batch, a * 4, *lv, generator=gen) * 0.5 for lv in levels]
    anchors = det.anchor_generator(images, cls)
    head = {det.cls_key: det._reshape_maps(cls), det.box_reg_key: det._reshape_maps(reg)}
    return head, anchors, [list(hw)] * batch, [lv[0] * lv[1] for lv in levels]


@pytest.mark.parametrize("num_classes,seed", [(1, 0), (1, 1), (2, 2), (3, 3)])
def test_postprocess_batch_equals_monai(num_classes, seed):
    gen = torch.Generator().manual_seed(seed)
    selectors = (
        {},
        {"topk_candidates_per_level": 1000, "detections_per_img": 300, "nms_thresh": 0.5},
        {"apply_sigmoid": False, "score_thresh": 0.5},
        {"score_thresh": 0.0, "topk_candidates_per_level": 30},
        {"score_thresh": 0.99},
    )
    for selector in selectors:
        det = _detector(num_classes, **selector)
        head, anchors, sizes, locs = _head_outputs(det, gen, batch=5, hw=(24, 32))
        ref = det.postprocess_detections(head, anchors, sizes, locs)
        ours = postprocess_batch(det, head, anchors, sizes, locs)
        assert len(ours) == len(ref) == 5
        for o, r in zip(ours, ref):
            assert o.keys() == r.keys()
            for k in r:
                assert o[k].dtype == r[k].dtype and torch.equal(o[k], r[k]), k
        assert (sum(len(r["boxes"]) for r in ref) > 0) == (selector.get("score_thresh") != 0.99)  # 0.99: none at all
        assert len(ref[2]["boxes"]) == 0 or selector.get("score_thresh") == 0.0


def test_batched_postprocess_is_scoped_to_the_block():
    det = _detector(1)
    gen = torch.Generator().manual_seed(0)
    head, anchors, sizes, locs = _head_outputs(det, gen, batch=2, hw=(16, 16))
    with batched_postprocess(det):
        assert det.postprocess_detections.func is postprocess_batch
        inside = det.postprocess_detections(head, anchors, sizes, locs)
    assert "postprocess_detections" not in vars(det)
    outside = det.postprocess_detections(head, anchors, sizes, locs)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(inside, outside) for k in a)
    with batched_postprocess(det, enabled=False):
        assert "postprocess_detections" not in vars(det)
    det.box_selector.box_overlap_metric = box_utils.box_giou  # another metric: MONAI's own path
    with batched_postprocess(det):
        giou = det.postprocess_detections(head, anchors, sizes, locs)
    det_ref = _detector(1)
    det_ref.box_selector.box_overlap_metric = box_utils.box_giou
    assert all(torch.equal(a[k], b[k]) for a, b in zip(giou, det_ref.postprocess_detections(head, anchors, sizes, locs)) for k in a)


@pytest.mark.parametrize("dims", [2, 3])
def test_non_max_suppression_equals_monai_with_ties(dims):
    """The one-table NMS of the 3D linking step picks what MONAI's loop picks (numpy in, numpy out)."""
    rng = np.random.default_rng(dims)
    for n in (0, 1, 2, 9, 40, 120, 300):  # 300: blocks of 64, 128 and 256 candidates
        lo = rng.integers(0, 30, (n, dims)).astype(np.float32)
        boxes = np.concatenate([lo, lo + rng.integers(1, 10, (n, dims))], 1).astype(np.float32)
        boxes[: n // 4] += rng.random((n // 4, 2 * dims), dtype=np.float32) * np.float32(0.5)  # some off the grid
        scores = (rng.integers(0, 5, n) / 4).astype(np.float32)  # ties
        for thresh in (0.0, 0.1, 0.2, 0.5, 1.0):
            for max_proposals in (-1, 1, 3, 50):
                ours = non_max_suppression(boxes, scores, thresh, max_proposals)
                ref = box_utils.non_max_suppression(boxes, scores, thresh, max_proposals)
                assert isinstance(ours, np.ndarray) and ours.dtype == ref.dtype and np.array_equal(ours, ref), (n, thresh)


def test_link_slices_fast_nms_equals_monai_nms():
    from bundle.inference.linking import link_slices

    rng = np.random.default_rng(0)
    per_slice = []
    for _ in range(12):  # overlapping boxes on consecutive slices: tracks that overlap in 3D
        n = int(rng.integers(0, 8))
        lo = rng.integers(0, 20, (n, 2))
        boxes = np.concatenate([lo, lo + rng.integers(2, 9, (n, 2))], 1).astype(np.float32)
        per_slice.append((boxes, rng.integers(0, 2, n), (rng.integers(1, 4, n) / 4).astype(np.float32)))
    for kw in ({}, {"nms_thresh": 0.05, "max_boxes": 4}, {"link_metric": "iou", "max_gap": 1}):
        fast, ref = link_slices(per_slice, **kw), link_slices(per_slice, **kw, fast_nms=False)
        assert fast[3] == ref[3] and fast[3]["after_nms"] < fast[3]["tracks"]
        assert all(np.array_equal(a, b) for a, b in zip(fast[:3], ref[:3]))
