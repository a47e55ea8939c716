"""A track's 3D box: union, peak and median extents, and why an oversized 2D box no longer widens a lesion's box."""

from __future__ import annotations

import numpy as np
import pytest

from bundle.inference.linking import SliceToVolumeDetector, link_slices
from bundle.inference.tracks import Track, check_extent, track_box


def _slice(boxes, scores):
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    return b, np.zeros(len(b), int), np.asarray(scores, np.float32)


def _lesion_with_stray_box():
    """A 10 x 10 lesion on slices 3-5, and on slice 6 a low 2D box that also covers the structure next to it."""
    per_slice = [_slice([], []) for _ in range(3)]
    per_slice += [_slice([[21, 21, 29, 29]], [2.0]), _slice([[20, 20, 30, 30]], [6.0]), _slice([[21, 20, 29, 30]], [3.0])]
    per_slice += [_slice([[20, 20, 60, 48]], [-1.0]), _slice([], [])]
    return per_slice


def test_track_box_extents_on_one_track():
    t = Track(0, [4, 5, 6], [np.array(b, np.float32) for b in ([0, 0, 10, 10], [2, 1, 12, 11], [40, 40, 80, 80])], [1.0, 5.0, -2.0])
    assert track_box(t, "union") == [0, 0, 4, 80, 80, 7]
    assert track_box(t, "peak") == [2, 1, 4, 12, 11, 7]
    assert track_box(t, "median") == [2, 1, 4, 12, 11, 7]
    assert track_box(Track(1, [2], [np.array([1, 2, 3, 4.0])], [0.5]), "median") == [1, 2, 2, 3, 4, 3]


@pytest.mark.parametrize("extent", ["peak", "median"])
def test_stray_box_no_longer_widens_the_lesion(extent):
    """Linked by iomin, the stray box joins the lesion's track: union takes its size, peak and median do not."""
    union, _, union_scores, _ = link_slices(_lesion_with_stray_box(), extent="union")
    boxes, labels, scores, counts = link_slices(_lesion_with_stray_box(), extent=extent)
    assert counts["tracks"] == 1 and len(boxes) == 1 and labels.tolist() == [0]
    assert union[0].tolist() == [20, 20, 3, 60, 48, 7]
    assert scores.tolist() == union_scores.tolist() == [6.0]  # the score is the track's best either way
    x0, y0, z0, x1, y1, z1 = boxes[0].tolist()
    assert (z0, z1) == (3, 7)
    assert 20 <= x0 <= 21 and 20 <= y0 <= 21 and 29 <= x1 <= 30 and 29 <= y1 <= 30


def test_unknown_extent_refused_by_name():
    with pytest.raises(ValueError, match="link_extent: 'mean' is not one of union, peak, median"):
        check_extent("mean")
    with pytest.raises(ValueError, match="link_extent"):
        link_slices(_lesion_with_stray_box(), extent="widest")
    with pytest.raises(ValueError, match="link_extent"):
        SliceToVolumeDetector(detector=None, extent="max")
