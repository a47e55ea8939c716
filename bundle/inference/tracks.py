"""How linked 2D boxes become one 3D box: the track, the overlap that grows it, the extent it reports.

Why a module of its own: a track's 3D box decides whether a found lesion counts (3D IoU >= 0.1 by
the strict rule), and the enclosing box of every 2D box on a track is only as tight as its
loosest box. One low, oversized 2D box (two lesions in one box, a box drifting onto the next
structure) used to widen the whole track's box until it no longer overlapped the lesion it had
found. ``extent`` chooses how the in-plane size is taken.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from monai.data.box_utils import box_iou

EXTENTS = ("union", "peak", "median")


@dataclass
class Track:
    """2D boxes of one label on consecutive slices, taken as one lesion."""

    label: int
    slices: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


def overlap(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Pairwise overlap of xyxy boxes: IoU, or intersection over the smaller box ("iomin").

    Why iomin: a lesion's cross-section shrinks towards its poles, so the last slice's small box
    has a low IoU with the big box next to it although it is the same lesion.
    """
    if metric == "iou":
        return np.asarray(box_iou(a, b))
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)
    return inter / np.maximum(np.minimum(area_a[:, None], area_b[None, :]), 1e-6)


def check_extent(extent: str) -> str:
    """Refuse an unknown extent by name, before any slice is run."""
    if extent not in EXTENTS:
        raise ValueError(f"link_extent: {extent!r} is not one of {', '.join(EXTENTS)}")
    return extent


def track_box(t: Track, extent: str = "union") -> list[float]:
    """The track's 3D box (xyzxyz, z max exclusive), from its first slice to its last.

    In-plane: ``union`` encloses every 2D box; ``peak`` is the best-scoring slice's box (ties: the
    first); ``median`` takes each coordinate's median over the slices, so no single box decides it.
    """
    b = np.stack(t.boxes)
    check_extent(extent)
    if extent == "union":
        plane = [b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()]
    elif extent == "peak":
        plane = b[int(np.argmax(t.scores))].tolist()
    else:  # median
        plane = np.median(b, axis=0).tolist()
    return [plane[0], plane[1], t.slices[0], plane[2], plane[3], t.slices[-1] + 1]
