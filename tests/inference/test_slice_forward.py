"""The volume path's own RetinaNet forward: regression only where a box can come from, slices split between threads."""

from __future__ import annotations

import pytest
import torch

from bundle.inference.box_selection import score_cut
from bundle.inference.slice_forward import head_outputs, in_workers, supported
from tests.inference.test_volume import _same_boxes, _volume_detector


@pytest.fixture(scope="module")
def volume(repo_root, tiny_demo):
    _, pre = _volume_detector(repo_root)
    return pre({"image": str(tiny_demo / "demo-000" / "t1c.nii.gz")})["image"]


def test_head_outputs_equal_the_network_where_a_box_can_come_from(repo_root, volume):
    """Scores bit for bit; regression maps equal the network's on the slices with a candidate, zeros elsewhere."""
    det, _ = _volume_detector(repo_root, score_thresh=0.02)
    net, cut = det.network, score_cut(det.box_selector)
    images = det.slice_stack(volume)[:16]
    images = torch.nn.functional.pad(images, (0, (-images.shape[-1]) % 16, 0, (-images.shape[-2]) % 16))
    with torch.no_grad():
        want, got = net(images), head_outputs(net, images, cut)
    skipped = 0
    for w_cls, g_cls, w_reg, g_reg in zip(want["classification"], got["classification"], want["box_regression"], got["box_regression"]):
        assert torch.equal(w_cls, g_cls)
        need = w_cls.flatten(1).amax(1) >= cut
        torch.testing.assert_close(g_reg[need], w_reg[need], atol=1e-5, rtol=1e-5)
        assert not g_reg[~need].any()
        skipped += int((~need).sum())
    assert skipped > 0  # the untrained network has slices and levels without a candidate


def test_lazy_regression_and_workers_give_the_previous_boxes(repo_root, volume):
    det, _ = _volume_detector(repo_root, score_thresh=0.02)
    det.stack, det.slice_batch = False, 8  # the path these replace
    (old,) = det([volume])
    det.stack, det.slice_batch, det.lazy_regression, det.cpu_workers = True, 13, False, 1
    (eager,) = det([volume])
    det.lazy_regression = True
    (lazy,) = det([volume])
    assert torch.equal(lazy["label_scores"], eager["label_scores"])  # same classification batches
    _same_boxes(eager, lazy)
    det.cpu_workers = 2
    threads = torch.get_num_threads()
    (split,) = det([volume])
    assert torch.get_num_threads() == threads
    for new in (lazy, split):
        _same_boxes(old, new)


def test_supported_and_workers_fall_back(repo_root):
    """TorchScript networks and training mode go through MONAI's own forward; a worker's error reaches the caller."""
    det, _ = _volume_detector(repo_root)
    net = det.network
    assert supported(det.detector)
    det.network = torch.jit.script(net)
    assert not supported(det.detector)
    det.network = net
    det.detector.train()
    assert not supported(det.detector)
    assert in_workers(lambda x: x * 2, [1, 2, 3], 2) == [2, 4, 6] == in_workers(lambda x: x * 2, [1, 2, 3], 1)
    threads = torch.get_num_threads()
    with pytest.raises(ValueError):
        in_workers(int, ["1", "x"], 2)
    assert torch.get_num_threads() == threads
