"""Incomplete labels: ignore regions in the loss, the lopsided bootstrap loss, whole-series slice sampling (2.5D)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
from monai.data import MetaTensor

from bundle.datalist.schema import IGNORE_LABEL
from bundle.engines.detection import split_inputs
from bundle.networks.detector import (
    BELOW_LOW_THRESHOLD,
    BETWEEN_THRESHOLDS,
    FocalLossPerPositive,
    LopsidedBootstrapLoss,
    RetinaNetDetectorWithIgnore,
    anchors_in_boxes,
    classification_loss,
)
from bundle.networks.retinanet import resnet_fpn
from bundle.selftrain.pseudo import PseudoRules, expand_datalist
from bundle.transforms.slices import SliceWithBoxesd, context_stack, reach_boxes


def _detector(channels: int = 1) -> RetinaNetDetectorWithIgnore:
    from monai.apps.detection.networks.retinanet_network import RetinaNet

    net = RetinaNet(2, 1, 3, resnet_fpn(2, n_input_channels=channels), size_divisible=16)
    det = RetinaNetDetectorWithIgnore(net, AnchorGeneratorWithAnchorShape([1, 2, 4], [[6, 6], [10, 10], [16, 16]]), spatial_dims=2)
    det.set_atss_matcher(num_candidates=4, center_in_gt=False)
    det.set_hard_negative_sampler(batch_size_per_image=64, positive_fraction=0.3, pool_size=20, min_neg=16)
    det.set_target_keys(box_key="box", label_key="label")
    return det


def test_anchor_centres_inside_ignore_boxes():
    anchors = torch.tensor([[0.0, 0, 4, 4], [10, 10, 14, 14], [30, 30, 40, 40]])
    assert anchors_in_boxes(anchors, torch.tensor([[8.0, 8, 20, 20]])).tolist() == [False, True, False]
    assert anchors_in_boxes(anchors, torch.zeros((0, 4))).tolist() == [False, False, False]


def test_ignore_boxes_turn_negatives_into_ignored_anchors_and_leave_positives():
    det = _detector()
    img = torch.rand(1, 1, 64, 64)
    head = det.network(img)
    det.generate_anchors(img, head)
    anchors = det.anchors
    n_locs = [x.shape[2:].numel() for x in head["classification"]]
    gt = torch.tensor([[10.0, 10, 26, 26]])
    plain = det.compute_anchor_matched_idxs(anchors, [{"box": gt, "label": torch.tensor([0])}], n_locs)[0]
    ig = torch.tensor([[30.0, 30, 60, 60], [12.0, 12, 24, 24]])
    withig = det.compute_anchor_matched_idxs(anchors, [{"box": gt, "label": torch.tensor([0]), "ignore_box": ig}], n_locs)[0]
    inside = anchors_in_boxes(anchors[0], ig)
    assert torch.equal(withig[plain >= 0], plain[plain >= 0])  # positives unchanged
    turned = (plain == BELOW_LOW_THRESHOLD) & inside
    assert turned.sum() > 0 and (withig[turned] == BETWEEN_THRESHOLDS).all()
    assert (withig[(plain == BELOW_LOW_THRESHOLD) & ~inside] == BELOW_LOW_THRESHOLD).all()
    # an image with no box but an ignore region: its anchors there are not negatives either
    empty = det.compute_anchor_matched_idxs(
        anchors, [{"box": torch.zeros((0, 4)), "label": torch.zeros(0, dtype=torch.long), "ignore_box": ig}], n_locs
    )[0]
    assert (empty[inside] == BETWEEN_THRESHOLDS).all() and (empty[~inside] == BELOW_LOW_THRESHOLD).all()


def test_a_training_step_takes_ignore_boxes():
    torch.manual_seed(0)
    det = _detector()
    det.train()
    img = [torch.rand(1, 64, 64)]
    target = {"box": torch.tensor([[10.0, 10, 26, 26]]), "label": torch.tensor([0])}
    losses = det(img, [dict(target)])
    assert set(losses) == {"classification", "box_regression"} and torch.isfinite(losses["classification"])
    ignored = det(img, [dict(target, ignore_box=torch.tensor([[0.0, 0, 64, 64]]))])
    assert torch.isfinite(ignored["classification"])


def test_focal_loss_is_summed_over_anchors_and_divided_by_the_positives():
    from torchvision.ops import sigmoid_focal_loss

    torch.manual_seed(0)
    logits, target = torch.randn(500, 1) * 3, (torch.rand(500, 1) < 0.02).float()
    expected = sigmoid_focal_loss(logits, target, alpha=0.25, gamma=2.0, reduction="sum") / target.sum()
    assert torch.allclose(FocalLossPerPositive()(logits, target), expected, rtol=1e-5)
    # no positive on the image: divided by one, not by zero
    none = torch.zeros(500, 1)
    assert torch.allclose(FocalLossPerPositive()(logits, none), sigmoid_focal_loss(logits, none, reduction="sum"), rtol=1e-5)


def test_without_the_sampler_every_anchor_but_the_ignored_ones_is_scored():
    """hard_negative_pool_size 0: no sampler, the loss sees every anchor; an ignore box still removes its anchors."""
    torch.manual_seed(0)
    det = _detector()
    det.fg_bg_sampler = None
    det.set_cls_loss(classification_loss("focal"))
    img = torch.rand(1, 1, 64, 64)
    head = det.network(img)
    det.generate_anchors(img, head)
    n_locs = [x.shape[2:].numel() for x in head["classification"]]
    target = {"box": torch.tensor([[10.0, 10, 26, 26]]), "label": torch.tensor([0]), "ignore_box": torch.tensor([[30.0, 30, 60, 60]])}
    matched = det.compute_anchor_matched_idxs(det.anchors, [target], n_locs)
    logits = torch.cat([x.permute(0, 2, 3, 1).reshape(1, -1, 1) for x in head["classification"]], dim=1)
    base = det.compute_cls_loss(logits, [target], matched)
    ignored = matched[0] == BETWEEN_THRESHOLDS
    scored = matched[0] == BELOW_LOW_THRESHOLD
    assert ignored.sum() > 0 and scored.sum() > 500  # every background anchor, not a sample of 64
    bumped = logits.clone()
    bumped[0, ignored] += 10.0
    assert torch.equal(det.compute_cls_loss(bumped, [target], matched), base)
    bumped = logits.clone()
    bumped[0, scored.nonzero()[-1]] += 10.0  # one far background anchor counts
    assert det.compute_cls_loss(bumped, [target], matched) > base


def test_lopsided_bootstrap_softens_negatives_only():
    logits = torch.tensor([[4.0], [4.0], [-4.0]])
    target = torch.tensor([[1.0], [0.0], [0.0]])
    bce = torch.nn.BCEWithLogitsLoss(reduction="none")(logits, target)
    lop = LopsidedBootstrapLoss(beta=0.5)
    per = torch.stack([lop(logits[i : i + 1], target[i : i + 1]) for i in range(3)])
    assert per[0] == pytest.approx(float(bce[0]), rel=1e-6)  # a positive is a positive
    assert per[1] < bce[1]  # a confident "negative" (an unlabelled lesion?) costs less
    assert LopsidedBootstrapLoss(beta=1.0)(logits, target) == pytest.approx(float(bce.mean()), rel=1e-6)
    with pytest.raises(ValueError, match="unknown classification loss"):
        classification_loss("focal?")


def test_split_inputs_moves_ignore_boxes_out_of_the_targets():
    items = [{"image": torch.zeros(1, 8, 8), "box": torch.tensor([[1.0, 1, 3, 3], [4, 4, 6, 6]]), "label": torch.tensor([0, IGNORE_LABEL])}]
    _, targets = split_inputs(items, torch.device("cpu"), "box", "label")
    assert targets[0]["box"].tolist() == [[1, 1, 3, 3]] and targets[0]["label"].tolist() == [0]
    assert targets[0]["ignore_box"].tolist() == [[4, 4, 6, 6]]


def test_context_stack_repeats_edges():
    vol = torch.arange(4.0).reshape(1, 1, 1, 4).expand(1, 2, 2, 4)
    assert context_stack(vol, 0, 3)[:, 0, 0].tolist() == [0, 0, 1]
    assert context_stack(vol, 3, 5)[:, 0, 0].tolist() == [1, 2, 3, 3, 3]
    with pytest.raises(ValueError, match="odd"):
        context_stack(vol, 0, 2)


def test_reach_of_a_key_slice_box_becomes_an_ignore_region_on_neighbouring_slices():
    boxes = np.array([[10, 10, 5, 20, 20, 6]], np.float32)
    r = reach_boxes(boxes, np.array([1.6]), margin=0.1, n=7)
    assert r.tolist() == [[9, 9, 3, 21, 21, 7]]
    vol = MetaTensor(torch.rand(1, 32, 32, 7))
    item = {"image": vol, "box": torch.tensor(boxes), "label": torch.tensor([0]), "z_half_extent_slices": [1.6]}
    t = SliceWithBoxesd(pos=0.0, random=True, reach=True, reach_margin=0.1, context_slices=3)
    seen = {}
    for seed in range(40):
        t.set_random_state(seed)
        out = t(dict(item))
        seen[out["image"].meta["slice"]] = out["label"].tolist()
        assert out["image"].shape == (3, 32, 32)
    assert seen[5] == [0, IGNORE_LABEL]  # the key slice: the box, and its (wider) ignore region
    assert seen[4] == [IGNORE_LABEL] and seen[3] == [IGNORE_LABEL]  # the lesion's reach: ignore, not background
    assert seen[0] == [] and seen[1] == []  # far slices: background


def test_uncertain_band_becomes_ignore_regions():
    dl = {"training": [{"image": "/a.nii.gz", "box": [[0, 0, 3, 10, 10, 4]], "label": [0], "spacing": [1, 1, 4]}], "validation": []}
    preds = {
        "/a.nii.gz": {
            "box": [[0, 0, 3, 10, 10, 4], [40, 40, 2, 55, 55, 3], [60, 60, 2, 75, 75, 3], [80, 80, 1, 95, 95, 2]],
            "score": [0.99, 0.95, 0.6, 0.1],
        }
    }
    rules = PseudoRules(score_threshold=0.9, ignore_floor=0.5, max_per_image=10)
    out, stats = expand_datalist(dl, preds, {"/a.nii.gz": (1, 1, 4)}, 1, rules)
    it = out["training"][0]
    assert it["box"] == [[0, 0, 3, 10, 10, 4], [40.0, 40.0, 2.0, 55.0, 55.0, 3.0]]
    assert it["ignore_box"] == [[60.0, 60.0, 2.0, 75.0, 75.0, 3.0]]
    assert stats["rejected"]["uncertain: ignore region"] == 1
