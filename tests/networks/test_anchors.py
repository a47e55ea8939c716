"""Anchors planned from the data: k-means shapes and MONAI's ATSS matcher over box sizes (bundle/networks/anchors.py)."""

from __future__ import annotations

import numpy as np

from bundle.networks.anchors import fit_anchor_shapes, match_report


def test_kmeans_finds_the_box_size_clusters_smallest_first():
    rng = np.random.default_rng(0)
    wh = np.concatenate([rng.normal(c, 0.5, size=(40, 2)) for c in (8.0, 16.0, 32.0)])
    fitted = fit_anchor_shapes(wh, k=3)
    np.testing.assert_allclose(np.asarray(fitted)[:, 0], [8.0, 16.0, 32.0], atol=1.0)
    # the smallest shape is capped at the smallest kept lesion's size in pixels
    assert fit_anchor_shapes(wh, k=3, smallest_px=6.0)[0] == [6.0, 6.0]


def test_atss_gives_every_lesion_size_a_positive_and_reports_by_size():
    wh = np.array([[8.0, 8.0], [14.0, 12.0], [30.0, 28.0]])
    mm = np.array([10.0, 17.5, 37.5])  # 1.25 mm pixels
    r = match_report(wh, mm, [[6, 6], [10, 10], [16, 16]], positions=2)
    assert r["boxes"] == 3 and r["share"] == 1.0
    assert set(r["by_size"]) == {"10-20 mm", "20-40 mm"} and r["by_size"]["10-20 mm"]["boxes"] == 2
    assert 0.3 < r["by_size"]["10-20 mm"]["median_best_iou"] <= 1.0
