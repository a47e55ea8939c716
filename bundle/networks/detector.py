"""MONAI's RetinaNetDetector, taught that mined labels are incomplete.

Why: a radiologist measures one or two lesions and leaves the rest; the same lesion continues on the slices
next to the measured one. Scored as background, those unlabelled lesions teach the model to miss lesions,
and the hard-negative sampler picks exactly them (they score highest among "negatives"). Two remedies,
both options of the training config:

- ignore regions: boxes marked ignore (label ``IGNORE_LABEL`` in the training pipeline, split into the
  target's ``ignore_box`` by the engine) turn the anchors whose centre lies inside them from negatives into
  MONAI's ``BETWEEN_THRESHOLDS``, which RetinaNetDetector already leaves out of the classification loss and
  the sampler. Positives stay positives.
- a negative-robust classification loss: the lopsided bootstrap of Yi et al. (MIDL 2020) softens only the
  negative targets towards the model's own belief, so a confident detection of an unlabelled lesion is
  penalised less; positive targets are kept as given.

And one that is not about incomplete labels but about how the scores are used: the focal loss over every
anchor (the original RetinaNet, Lin et al. 2017; ``cls_loss: focal`` with ``hard_negative_pool_size: 0``).
With the hard-negative sampler only ~45 negatives per image are ever scored, so nothing holds the score of
the other ~10^4 background anchors down and the scores crowd against 1.0; a whole-volume operating point
has to tell them apart.
"""

from __future__ import annotations

import torch
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.losses import FocalLoss
from torch import Tensor, nn

from bundle.datalist.schema import IGNORE_LABEL

__all__ = [
    "IGNORE_KEY",
    "IGNORE_LABEL",
    "RetinaNetDetectorWithIgnore",
    "LopsidedBootstrapLoss",
    "FocalLossPerPositive",
    "classification_loss",
]
IGNORE_KEY = "ignore_box"  # where the engine puts a training image's ignore boxes in its target dict

BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS = -1, -2  # MONAI matcher codes (negative, ignored)


def anchors_in_boxes(anchors: Tensor, boxes: Tensor) -> Tensor:
    """Which anchors (corner boxes) have their centre inside any of ``boxes`` (corner boxes, max exclusive)."""
    d = anchors.shape[1] // 2
    if boxes.numel() == 0:
        return torch.zeros(anchors.shape[0], dtype=torch.bool, device=anchors.device)
    centres = (anchors[:, :d] + anchors[:, d:]) / 2
    b = boxes.to(anchors.device, anchors.dtype)
    inside = (centres[:, None, :] >= b[None, :, :d]) & (centres[:, None, :] < b[None, :, d:])
    return inside.all(dim=2).any(dim=1)


class RetinaNetDetectorWithIgnore(RetinaNetDetector):
    """RetinaNetDetector whose targets may carry ``ignore_box``: anchors there are neither positive nor negative."""

    def compute_anchor_matched_idxs(self, anchors, targets, num_anchor_locs_per_level):
        matched = super().compute_anchor_matched_idxs(anchors, targets, num_anchor_locs_per_level)
        for m, a, t in zip(matched, anchors, targets):
            ignore = t.get(IGNORE_KEY)
            if ignore is not None and ignore.numel():
                m[(m == BELOW_LOW_THRESHOLD) & anchors_in_boxes(a, ignore.reshape(-1, a.shape[1]))] = BETWEEN_THRESHOLDS
        return matched


class LopsidedBootstrapLoss(nn.Module):
    """BCE-with-logits (RetinaNetDetector's default) with negative targets bootstrapped: t = (1 - beta) * p.

    ``beta`` = 1 is plain BCE; lower trusts the model more on negatives. ``hard``: p is the thresholded
    prediction (p > 0.5) instead of the probability. The bootstrap target is a constant (no gradient).
    """

    def __init__(self, beta: float = 0.8, hard: bool = False) -> None:
        super().__init__()
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"lopsided bootstrap: beta must be in [0, 1], got {beta}")
        self.beta, self.hard = beta, hard

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        with torch.no_grad():
            p = torch.sigmoid(logits.float())
            p = (p > 0.5).to(p.dtype) if self.hard else p
            soft = torch.where(target > 0, target.float(), (1.0 - self.beta) * p)
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), soft, reduction="mean")


class FocalLossPerPositive(nn.Module):
    """MONAI's sigmoid FocalLoss summed over the anchors it is given and divided by the number of positive ones.

    Why divided by the positives: summed over every anchor of an image (tens of thousands, almost all easy
    background), a mean would make the loss vanish; RetinaNet normalises by the matched anchors instead.
    """

    def __init__(self, gamma: float = 2.0, alpha: float = 0.25) -> None:
        super().__init__()
        self.focal = FocalLoss(gamma=gamma, alpha=alpha, reduction="none", use_softmax=False)  # its "sum" averages anchors

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        # (anchors, classes) -> (1, classes, anchors): FocalLoss reads dim 1 as the class channel
        loss = self.focal(logits.float().T[None], target.float().T[None]).sum()
        return loss / target.sum().clamp(min=1.0)


LOSSES = ("bce", "lopsided_bootstrap", "lopsided_bootstrap_hard", "focal")


def classification_loss(name: str = "bce", beta: float = 0.8) -> nn.Module:
    """The training config's ``cls_loss`` key (one of ``LOSSES``); ``bce`` is MONAI's default."""
    if name == "bce":
        return nn.BCEWithLogitsLoss(reduction="mean")
    if name in ("lopsided_bootstrap", "lopsided_bootstrap_hard"):
        return LopsidedBootstrapLoss(beta=beta, hard=name.endswith("_hard"))
    if name == "focal":
        return FocalLossPerPositive()
    raise ValueError(f"cls_loss: unknown classification loss {name!r} ({', '.join(LOSSES)})")
