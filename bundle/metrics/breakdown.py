"""Where a model succeeds and fails: by lesion size (long axis in mm) and by label.

Why: a single F1 hides that small metastases are missed; radiologists ask "how good is it on
lesions under 1 cm?" first.
"""

from __future__ import annotations

import numpy as np

from bundle.datalist.rules import SizeRule
from bundle.metrics.matching import ImageMatch

SIZE_BINS_MM = ((0.0, 10.0, "<10 mm"), (10.0, 20.0, "10-20 mm"), (20.0, 40.0, "20-40 mm"), (40.0, np.inf, ">40 mm"))


def long_axis_mm(boxes, spacing) -> np.ndarray:
    """Longest in-plane side of each box in mm (the RECIST-like long axis of a box)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, len(spacing) * 2) if len(boxes) else np.zeros((0, 2 * len(spacing)))
    d = len(spacing)
    ext = (b[:, d:] - b[:, :d]) * np.asarray(spacing, dtype=np.float64)
    return ext[:, :2].max(axis=1) if len(ext) else np.zeros(0)


def _bin(mm: float) -> str:
    return next(lbl for lo, hi, lbl in SIZE_BINS_MM if lo <= mm < hi)


def breakdown(
    matches: list[ImageMatch],
    truth_boxes: list,
    truth_labels: list,
    pred_boxes: list,
    pred_labels: list,
    spacings: list,
    threshold: float,
) -> dict:
    """Recall per truth size bin and label; precision per predicted size bin and label, at the threshold."""
    rows: dict[str, dict[str, dict[str, int]]] = {"size": {}, "label": {}}

    def cell(kind: str, key: str) -> dict[str, int]:
        return rows[kind].setdefault(key, {"truth": 0, "detected": 0, "predicted": 0, "true_positive": 0})

    for m, tb, tl, pb, pl, sp in zip(matches, truth_boxes, truth_labels, pred_boxes, pred_labels, spacings):
        keep = m.scores >= threshold
        hit = set(m.matched_truth[keep & m.tp].tolist())
        t_mm = long_axis_mm(tb, sp)
        for j, (mm, lab) in enumerate(zip(t_mm, np.asarray(tl).reshape(-1))):
            for c in (cell("size", _bin(mm)), cell("label", str(int(lab)))):
                c["truth"] += 1
                c["detected"] += int(j in hit)
        p_mm = long_axis_mm(pb, sp)
        for i in np.nonzero(keep)[0]:
            for c in (cell("size", _bin(p_mm[i])), cell("label", str(int(np.asarray(pl).reshape(-1)[i])))):
                c["predicted"] += 1
                c["true_positive"] += int(m.tp[i])
    order = {lbl: k for k, (_, _, lbl) in enumerate(SIZE_BINS_MM)}
    out: dict[str, dict] = {}
    for kind, cells in rows.items():
        keys = sorted(cells, key=lambda k: order.get(k, 99) if kind == "size" else int(k))
        out[kind] = {
            k: cells[k]
            | {
                "recall": cells[k]["detected"] / cells[k]["truth"] if cells[k]["truth"] else None,
                "precision": cells[k]["true_positive"] / cells[k]["predicted"] if cells[k]["predicted"] else None,
            }
            for k in keys
        }
    return out


def restrict_to_size(matches: list[ImageMatch], truth_boxes: list, spacings: list, rule: SizeRule) -> list[ImageMatch]:
    """The matches as if truth outside the size rule were ignore regions: scoring "inside the rule" fairly.

    Why: mined-only training never sees a lesion outside 10-70 mm, so a fair F1 for it counts only
    truth inside the rule. A truth outside it is neither missed (no FN) nor a target, and a
    prediction matched to it is neither TP nor FP (dropped); unmatched predictions stay FPs.
    """
    out = []
    for m, tb, sp in zip(matches, truth_boxes, spacings):
        inside = np.array([rule.contains(float(mm)) for mm in long_axis_mm(tb, sp)], dtype=bool)
        keep = ~m.tp | inside[np.maximum(m.matched_truth, 0)] if len(inside) else np.ones(len(m.scores), dtype=bool)
        new_index = np.cumsum(inside) - 1
        matched = np.where(m.tp[keep], new_index[np.maximum(m.matched_truth[keep], 0)] if len(inside) else -1, -1)
        out.append(ImageMatch(scores=m.scores[keep], tp=m.tp[keep], n_truth=int(inside.sum()), matched_truth=matched))
    return out
