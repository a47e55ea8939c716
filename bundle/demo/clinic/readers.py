"""How a simulated reader measures: the largest lesions, on their largest slice, long axis (and short axis), with noise.

Why: a clinic measures 1-3 target lesions per study, not every lesion; the rest are what
self-training must find. The primary reader's marks go into one GSPS and/or one SR per study.
"""

from __future__ import annotations

import numpy as np

from bundle.demo.clinic.config import READERS
from bundle.demo.clinic.gsps import write_gsps
from bundle.demo.clinic.patient import PatientExport
from bundle.demo.clinic.sr import write_sr


def lesion_lines(mask2d: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
    """A careful reader's long axis and longest perpendicular short axis, edge to edge, in PIXEL coords."""
    pts = np.argwhere(mask2d == index).astype(np.float64) + 0.5  # pixel centres, (col, row)
    d = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmax(d)), d.shape)
    a, b = pts[i], pts[j]
    if np.allclose(a, b):
        b = a + [1.0, 0.0]
    u = (b - a) / np.linalg.norm(b - a)
    v = np.array([-u[1], u[0]])
    long = np.array([a - 0.5 * u, b + 0.5 * u])  # to the pixel edges
    pu, pv = (pts - a) @ u, (pts - a) @ v
    best, short = -1.0, None
    for t in np.unique(np.round(pu)):
        sel = np.abs(pu - t) <= 0.5
        lo, hi = pv[sel].min() - 0.5, pv[sel].max() + 0.5
        if hi - lo > best:
            best, short = hi - lo, np.array([a + t * u + lo * v, a + t * u + hi * v])
    return long, short


def noisy(rng: np.random.Generator, line: np.ndarray, spacing, frac: float) -> np.ndarray:
    """Reader noise: each endpoint jittered by a normal of sd ``frac`` x the line length, clipped at 2 sd."""
    length_px = float(np.linalg.norm(line[1] - line[0]))
    jitter = np.clip(rng.normal(0.0, frac * length_px, size=(2, 2)), -2 * frac * length_px, 2 * frac * length_px)
    return np.round(line + jitter, 2)


def largest_slice(mask: np.ndarray, index: int) -> int:
    areas = (mask == index).sum(axis=(0, 1))
    return int(np.argmax(areas))


def measure_primary(w: PatientExport, lesions: list[dict], n_measure: int) -> list[dict]:
    """The primary reader measures the ``n_measure`` largest lesions and saves them as GSPS and/or SR.

    Each mark keeps ``clean_lines`` (the noise-free lines) for the incidents that re-measure it;
    the caller drops that key before the record is written. The random draws keep their order:
    the export is reproducible byte for byte.
    """
    rng, cfg, sp = w.rng, w.cfg, w.study.spacing
    measured = []
    for les in lesions[:n_measure]:
        z = largest_slice(w.mask, les["index"])
        long, short = lesion_lines(w.mask[:, :, z], les["index"])
        pair = rng.random() < cfg.p_recist_pair
        fmt = "sr" if rng.random() < cfg.p_sr else "gsps"
        lines = [noisy(rng, long, sp, cfg.noise_fraction)] + ([noisy(rng, short, sp, cfg.noise_fraction)] if pair else [])
        scoord3d = fmt == "sr" and not pair and rng.random() < cfg.p_scoord3d
        rec = w.mark(les["index"], "t1c", z, "recist" if pair else "ruler", lines, fmt, "primary measurement", scoord3d=scoord3d)
        rec["clean_lines"] = [np.round(long, 3).tolist()] + ([np.round(short, 3).tolist()] if pair else [])
        measured.append(rec)
    units = "DISPLAY" if rng.random() < cfg.p_display_units else "PIXEL"
    gsps_marks = [r for r in measured if r["format"] == "gsps"]
    sr_marks = [r for r in measured if r["format"] == "sr"]
    if gsps_marks:
        write_gsps(w, gsps_marks, READERS[0], "101500", units=units)
    if sr_marks:
        write_sr(w, sr_marks, READERS[0], "101600")
    return measured
