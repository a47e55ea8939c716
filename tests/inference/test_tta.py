"""Flip test-time augmentation: views flipped back into the slice's pixels and fused per slice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bundle.inference.tta import check_flips, fuse, predict_views

FLOOR = -3.9  # about logit(0.02), the volume path's box selector floor


def _bright_boxes(stack: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A detector that sees the image: the bounding box of the pixels above 0.5 on each slice's first channel,
    scored by the box's area (the same in every view)."""
    out = []
    for s in stack[:, 0].numpy():
        xs, ys = np.nonzero(s > 0.5)
        if not len(xs):
            out.append((np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32)))
            continue
        box = np.asarray([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
        out.append((box, np.zeros(1, np.int64), np.asarray([0.1 * len(xs)], np.float32)))
    return out


def _stack() -> torch.Tensor:
    stack = torch.zeros(3, 2, 40, 32)
    stack[0, :, 5:12, 20:30] = 1.0  # off-centre on both axes, so every flip moves it
    stack[2, :, 30:38, 2:9] = 1.0
    return stack


@pytest.mark.parametrize("flips", [[[0]], [[1]], [[0], [1], [0, 1]]])
def test_a_detector_that_sees_the_same_box_in_every_view_gets_it_back_exactly(flips):
    """Each flipped view's box, flipped back, is the unflipped one: fused, it is that box with the view's score."""
    plain = _bright_boxes(_stack())
    views = []

    def run(s: torch.Tensor):
        views.append(s)
        return _bright_boxes(s)

    fused = predict_views(run, _stack(), flips, FLOOR)
    assert len(views) == 1 + len(flips)
    assert not torch.equal(views[1], views[0])  # the extra views really are flipped
    for (b0, l0, s0), (b, lab, s) in zip(plain, fused):
        np.testing.assert_allclose(b, b0, atol=1e-5)
        np.testing.assert_array_equal(lab, l0)
        np.testing.assert_allclose(s, s0, atol=1e-5)  # found in every view: no floor in the mean
    assert len(fused[1][0]) == 0


def test_a_box_only_one_view_sees_is_scored_down_by_the_missing_view():
    a = (np.asarray([[10, 10, 20, 20]], np.float32), np.zeros(1, np.int64), np.asarray([8.0], np.float32))
    b = (np.asarray([[11, 10, 21, 20], [50, 50, 60, 60]], np.float32), np.zeros(2, np.int64), np.asarray([6.0, 5.0], np.float32))
    boxes, labels, scores = fuse([a, b], FLOOR)
    assert scores.tolist() == pytest.approx([7.0, (5.0 + FLOOR) / 2])
    p8, p6 = 1 / (1 + np.exp(-8.0)), 1 / (1 + np.exp(-6.0))
    assert boxes[0, 0] == pytest.approx((10 * p8 + 11 * p6) / (p8 + p6), rel=1e-5)  # probability-weighted
    np.testing.assert_allclose(boxes[1], [50, 50, 60, 60])
    assert scores.dtype == np.float32 and labels.tolist() == [0, 0]


def test_boxes_of_one_view_or_of_another_label_never_fuse():
    one_view = (np.asarray([[10, 10, 20, 20], [10, 10, 20, 21]], np.float32), np.zeros(2, np.int64), np.asarray([3.0, 2.0], np.float32))
    other = (np.asarray([[10, 10, 20, 20]], np.float32), np.asarray([1]), np.asarray([4.0], np.float32))
    _, labels, scores = fuse([one_view, other], FLOOR)
    assert len(scores) == 3 and sorted(labels.tolist()) == [0, 0, 1]
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32))
    assert len(fuse([empty, empty], FLOOR)[0]) == 0


def test_probability_scores_stay_probabilities():
    a = (np.asarray([[0, 0, 8, 8]], np.float32), np.zeros(1, np.int64), np.asarray([0.9], np.float32))
    assert fuse([a, a], 0.02, logits=False)[2].tolist() == pytest.approx([0.9])
    assert fuse([a, (np.zeros((0, 4)), np.zeros(0), np.zeros(0))], 0.02, logits=False)[2].tolist() == pytest.approx([0.46])


@pytest.mark.parametrize("bad", [[[2]], [[]], [[0, 0]], [["x"]]])
def test_a_flip_that_is_not_a_slice_axis_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="tta_flips"):
        check_flips(bad)
    assert check_flips(None) == [] and check_flips([[1, 0]]) == [(1, 0)]


class _BrightDetector:
    """A 2D detector for SliceToVolumeDetector: the bright box of each slice, as MONAI's detector returns it."""

    target_box_key, target_label_key, pred_score_key = "box", "label", "label_scores"
    training = False

    def __init__(self) -> None:
        self.box_selector = type("Sel", (), {"score_thresh": FLOOR, "apply_sigmoid": False})()

    def __call__(self, slices, use_inferer: bool = False):
        out = _bright_boxes(torch.stack(list(slices)))
        return [{"box": torch.as_tensor(b), "label": torch.as_tensor(lab), "label_scores": torch.as_tensor(s)} for b, lab, s in out]


def test_the_volume_detector_with_flips_keeps_the_3d_boxes_a_detector_sees_in_every_view():
    from bundle.inference.linking import SliceToVolumeDetector

    vol = torch.zeros(1, 40, 32, 6)
    vol[0, 5:12, 20:30, 1:4] = 1.0
    vol[0, 30:38, 2:9, 4:6] = 1.0

    def detector(flips):
        return SliceToVolumeDetector(_BrightDetector(), slice_batch=4, stack=False, batched_select=False, tta_flips=flips)

    plain = detector(None)(vol[None])[0]
    fused = detector([[0], [1]])(vol[None])[0]
    assert sorted(plain["box"].tolist()) == [[5, 20, 1, 12, 30, 4], [30, 2, 4, 38, 9, 6]]
    np.testing.assert_allclose(fused["box"].numpy(), plain["box"].numpy(), atol=1e-4)
    np.testing.assert_allclose(fused["label_scores"].numpy(), plain["label_scores"].numpy(), atol=1e-4)
