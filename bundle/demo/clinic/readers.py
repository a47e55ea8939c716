"""How a simulated reader measures: 1-3 lesions (mostly the largest), on or near their largest slice,
long axis (and short axis), with endpoint noise; sometimes a second reader measures the study again.

Why: a clinic measures 1-3 target lesions per study, not every lesion; the rest are what
self-training must find. Each reader's marks go into one GSPS and/or one SR per study. Every
difficulty is a knob of ExportConfig, and the record says what mining must make of each mark.
"""

from __future__ import annotations

import numpy as np

from bundle.demo.clinic.config import READERS
from bundle.demo.clinic.gsps import write_gsps
from bundle.demo.clinic.patient import PatientExport
from bundle.demo.clinic.sr import write_sr
from bundle.mining.rules.boxes import iou, pair_rulers


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


def choose_lesions(rng: np.random.Generator, lesions: list[dict], n: int, p_not_largest: float) -> list[dict]:
    """``n`` lesions (sorted largest first): each pick the largest left, or with ``p_not_largest`` another one.

    Why: a reader picks target lesions for follow-up, not strictly by size.
    """
    left, out = list(lesions), []
    for _ in range(min(n, len(left))):
        other = rng.random() < p_not_largest and len(left) > 1
        out.append(left.pop(int(rng.integers(1, len(left))) if other else 0))
    return out


def measured_slice(rng: np.random.Generator, mask: np.ndarray, index: int, p_near: float, near: int) -> tuple[int, int]:
    """(slice the reader measures on, slice of the largest cross-section): with ``p_near`` a slice up to
    ``near`` away that still shows the lesion, the one a reader scrolling by happened to stop on."""
    areas = (mask == index).sum(axis=(0, 1))
    z0 = int(np.argmax(areas))
    if rng.random() < p_near:
        cands = [z for z in range(z0 - near, z0 + near + 1) if z != z0 and 0 <= z < len(areas) and areas[z] > 0]
        if cands:
            return int(cands[int(rng.integers(len(cands)))]), z0
    return z0, z0


def _lines(points: list) -> list[np.ndarray]:
    p = np.asarray(points, dtype=np.float64)
    return [p[k : k + 2] for k in range(0, len(p) - 1, 2)]


def _reads_as_drawn(own: list[dict], z: int, lines: list[np.ndarray]) -> bool:
    """Would mining pair the reader's GSPS lines on this slice as drawn (library rule `pair_rulers`)?

    A GSPS stores lines, not pairs: mining groups crossing, near-perpendicular lines into RECIST pairs.
    """
    marks = [_lines(r["points"]) for r in own if r["format"] == "gsps" and r["slice"] == z] + [_lines(np.round(np.vstack(lines), 3))]
    drawn, k = [], 0
    for m in marks:
        drawn.append(tuple(range(k, k + len(m))))
        k += len(m)
    return pair_rulers([ln for m in marks for ln in m]) == drawn


def _draw(w: PatientExport, rng: np.random.Generator, own: list[dict], z: int, fmt: str, long: np.ndarray, short) -> list | None:
    """The noisy lines of one mark. In a GSPS they are re-drawn (at most 10 times) until mining would read them
    as drawn, as a reader whose short axis strays off the long one corrects it; None: the reader leaves the lesion."""
    sp, f = w.study.spacing, w.cfg.noise_fraction
    for _ in range(10):
        lines = [noisy(rng, long, sp, f)] + ([noisy(rng, short, sp, f)] if short is not None else [])
        if fmt != "gsps" or _reads_as_drawn(own, z, lines):
            return lines
    return None


def _repeats_own_mark(w: PatientExport, own: list[dict], kind: str, lines: list[np.ndarray], z: int) -> bool:
    """Would mining merge this mark into one of the reader's own earlier kept marks on the slice?

    A reader does not measure one spot as two lesions; skipping such a lesion keeps the record's
    prediction exact (which of two same-object marks mining keeps is not the reader's to say).
    """
    cand = w.expect(kind, np.vstack(lines), "t1c", z)
    return cand["status"] == "kept" and any(
        r["slice"] == z and r["status"] == "kept" and iou(r["box"], cand["box"]) >= w.rules.duplicate_iou for r in own
    )


def measure(w: PatientExport, rng: np.random.Generator, lesions: list[dict], n: int, note: str) -> list[dict]:
    """One reader's marks on ``n`` of the lesions (not yet written): lesion, slice, ruler or RECIST pair, format, noise.

    Each mark keeps ``clean_lines`` (the noise-free lines) for the incidents that re-measure it and
    ``largest_slice``; the random draws keep their order, so the export is reproducible byte for byte.
    """
    cfg = w.cfg
    measured: list[dict] = []
    for les in choose_lesions(rng, lesions, n, cfg.p_not_largest):
        z, z0 = measured_slice(rng, w.mask, les["index"], cfg.p_near_slice, cfg.near_slices)
        long, short = lesion_lines(w.mask[:, :, z], les["index"])
        pair = rng.random() < cfg.p_recist_pair
        fmt = "sr" if rng.random() < cfg.p_sr else "gsps"
        lines = _draw(w, rng, measured, z, fmt, long, short if pair else None)
        if lines is None:
            continue
        scoord3d = fmt == "sr" and not pair and rng.random() < cfg.p_scoord3d
        kind = "recist" if pair else "ruler"
        if _repeats_own_mark(w, measured, "ellipse" if pair and fmt == "sr" else kind, lines, z):
            continue
        rec = w.mark(les["index"], "t1c", z, kind, lines, fmt, note, scoord3d=scoord3d, largest_slice=z0)
        rec["clean_lines"] = [np.round(long, 3).tolist()] + ([np.round(short, 3).tolist()] if pair else [])
        measured.append(rec)
    return measured


def _write(w: PatientExport, rng: np.random.Generator, marks: list[dict], reader: str, times: tuple[str, str], date: str | None) -> None:
    """The reader's GSPS marks in one GSPS (PIXEL or DISPLAY units), the SR marks in one SR."""
    units = "DISPLAY" if rng.random() < w.cfg.p_display_units else "PIXEL"
    gsps_marks = [r for r in marks if r["format"] == "gsps"]
    sr_marks = [r for r in marks if r["format"] == "sr"]
    if gsps_marks:
        write_gsps(w, gsps_marks, reader, times[0], units=units, date=date)
    if sr_marks:
        write_sr(w, sr_marks, reader, times[1], date=date)


def measure_primary(w: PatientExport, lesions: list[dict], n_measure: int) -> list[dict]:
    """The primary reader measures ``n_measure`` lesions on the study date and saves them as GSPS and/or SR."""
    measured = measure(w, w.rng, lesions, n_measure, "primary measurement")
    _write(w, w.rng, measured, READERS[0], ("101500", "101600"), None)
    return measured


def measure_second(w: PatientExport, rng: np.random.Generator, lesions: list[dict], primary: list[dict]) -> list[dict]:
    """On a share of studies a second reader measures again, later, with its own choices and noise.

    Where a kept mark of the second reader overlaps a kept primary mark on the same image (IoU >=
    the duplicate rule), mining merges it into the earlier one: the record says "duplicate".
    Its own rng: turning the second reader on or off leaves every other object unchanged.
    """
    if not lesions or rng.random() >= w.cfg.p_second_reader:
        return []
    marks = measure(w, rng, lesions, int(rng.integers(1, w.cfg.max_measured + 1)), "second reader")
    _write(w, rng, marks, READERS[3], ("091500", "091600"), w.later_date())
    for rec in marks:
        twin = next((p for p in primary if p["status"] == "kept" and _same_image(p, rec) and _dup(w, p, rec)), None)
        if rec["status"] == "kept" and twin is not None:
            rec["status"], rec["duplicate_of"] = "duplicate", twin["sop_instance_uid"]
    return marks


def _same_image(a: dict, b: dict) -> bool:
    return a["referenced_sop_instance_uid"] == b["referenced_sop_instance_uid"]


def _dup(w: PatientExport, a: dict, b: dict) -> bool:
    return iou(a["box"], b["box"]) >= w.rules.duplicate_iou
