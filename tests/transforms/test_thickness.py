"""Thicker slices simulated on the grid: slabs averaged and read back, nothing moved, the grid kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from bundle.transforms.thickness import RandSliceThicknessd


def _volume(depth: int = 24) -> MetaTensor:
    img = torch.zeros(1, 16, 16, depth)
    img[:, 4:12, 4:12, 10:12] = 1.0  # a lesion two grid slices thick
    return MetaTensor(img, affine=torch.diag(torch.tensor([1.25, 1.25, 4.0, 1.0], dtype=torch.float64)))


def test_a_thin_lesion_is_spread_and_dimmed_as_a_thick_slice_would_store_it():
    t = RandSliceThicknessd("image", prob=1.0, factor=(1.5, 1.5))
    vol = _volume()
    out = t({"image": vol})["image"]
    assert out.shape == vol.shape
    assert torch.equal(out.affine, vol.affine)
    profile = out[0, 8, 8].numpy()
    assert profile.max() < 1.0  # slab averages mix the lesion with the brain around it
    assert profile.sum() == pytest.approx(2.0, abs=0.5)  # its signal kept in total, not lost
    assert (profile > 1e-3).sum() > 2  # and spread over more slices than it crossed
    assert torch.all(out[0, 0, 0] == 0)  # outside the lesion in-plane nothing changes


def test_prob_zero_and_factor_one_leave_the_image_as_it_is():
    vol = _volume()
    assert torch.equal(RandSliceThicknessd("image", prob=0.0)({"image": vol})["image"], vol)
    assert torch.equal(RandSliceThicknessd("image", prob=1.0, factor=(1.0, 1.0))({"image": vol})["image"], vol)


def test_the_thickness_is_drawn_per_call_from_its_range():
    t = RandSliceThicknessd("image", prob=1.0, factor=(1.0, 2.0))
    t.set_random_state(0)
    drawn = set()
    for _ in range(8):
        t.randomize()
        drawn.add(round(t._f, 3))
    assert len(drawn) == 8 and all(1.0 <= f <= 2.0 for f in drawn)


def test_a_factor_below_one_is_refused():
    with pytest.raises(ValueError, match="factor"):
        RandSliceThicknessd("image", factor=(0.5, 1.5))


def test_the_image_dtype_is_kept():
    vol = _volume().to(torch.float16)
    out = RandSliceThicknessd("image", prob=1.0, factor=(2.0, 2.0))({"image": vol})["image"]
    assert out.dtype == torch.float16 and np.isfinite(out.float().numpy()).all()
