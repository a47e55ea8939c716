"""Why a lesion is missed and where a false box sits, at one operating point (the strict rule's terms).

Why: a sensitivity says how many lesions >= 10 mm were missed, not whether the network never saw them, saw them
too weakly, or drew the wrong box; each asks for a different fix (training, the threshold, or the box: linking and
the grid). The same split on each protocol variant shows what a protocol breaks (issue 24: 6 mm slices).

Each lesion >= 10 mm that no kept box finds is, in this order of precedence:
- ``below_threshold``: a box that the rule would accept scores below the threshold;
- ``taken``: a kept box would accept it, but found another lesion first (greedy by score);
- ``misplaced``: boxes overlap it (3D IoU > 0), none meets the rule; its best overlap is split into in-plane IoU
  and IoU along z, to tell a box drawn wrong in the slice from one with the wrong slices;
- ``unseen``: no box touches it at any score.
Each kept false box is ``on_lesion`` (it overlaps a lesion, any size, but finds none), ``normal_volume`` (on a volume
without lesions) or ``elsewhere``.
"""

from __future__ import annotations

import numpy as np

from bundle.metrics.volume import LARGE_MM, MatchRule, hit_matrix, match_volume, volume_truth
from bundle.transforms.grid import spacing_of_affine

MISS_KINDS = ("below_threshold", "taken", "misplaced", "unseen")
FP_KINDS = ("on_lesion", "normal_volume", "elsewhere")
BINS = ((10.0, 20.0, "10-20 mm"), (20.0, np.inf, ">= 20 mm"))


def _overlap(a: np.ndarray, b: np.ndarray, axes: list[int]) -> float:
    """IoU of two xyzxyz boxes over the given axes only."""
    lo, hi = np.maximum(a[axes], b[axes]), np.minimum(a[[i + 3 for i in axes]], b[[i + 3 for i in axes]])
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    va = float(np.prod(a[[i + 3 for i in axes]] - a[axes]))
    vb = float(np.prod(b[[i + 3 for i in axes]] - b[axes]))
    return inter / (va + vb - inter) if va + vb - inter > 0 else 0.0


def _miss_kind(j: int, ok: np.ndarray, iou: np.ndarray, kept: np.ndarray) -> str:
    if (ok[:, j] & ~kept).any():
        return "below_threshold"
    if (ok[:, j] & kept).any():
        return "taken"
    return "misplaced" if (iou[:, j] > 0).any() else "unseen"


def volume_misses(
    pred_boxes, scores, gt: np.ndarray, long_mm: np.ndarray, threshold: float, rule: MatchRule, spacing=(1.0, 1.0, 1.0)
) -> dict:
    """One volume: each lesion >= 10 mm as found or its miss kind; each kept false box's kind and size (mm, the
    boxes' grid ``spacing``); for misplaced lesions the best overlap in-plane and along z."""
    p = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 6)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    m, ignored = match_volume(p, s, gt, rule, long_mm=long_mm)
    kept = s >= threshold
    found = set(m.matched_truth[kept & m.tp].tolist())
    out: dict = {"lesions": [], "false_boxes": [], "overlaps": [], "false_box_mm": [], "gaps": []}
    none = np.zeros((len(p), len(gt)), dtype=bool)
    ok, iou = hit_matrix(p, gt, rule)[:2] if len(p) and len(gt) else (none, none)
    for j in np.flatnonzero(long_mm >= LARGE_MM):
        kind = "found" if j in found else _miss_kind(j, ok, iou, kept)
        out["lesions"].append((float(long_mm[j]), kind))
        if kind == "below_threshold":
            out["gaps"].append(threshold - float(s[ok[:, j]].max()))
        if kind == "misplaced":
            best = int(np.argmax(iou[:, j]))
            out["overlaps"].append((_overlap(p[best], gt[j], [0, 1]), _overlap(p[best], gt[j], [2])))
    ext = (p[:, 3:] - p[:, :3]) * np.asarray(spacing, dtype=np.float64)
    for i in np.flatnonzero(kept & ~m.tp & ~ignored):
        on = bool(len(gt)) and bool((iou[i] > 0).any())
        out["false_boxes"].append("on_lesion" if on else ("normal_volume" if not len(gt) else "elsewhere"))
        out["false_box_mm"].append((float(max(ext[i, 0], ext[i, 1])), float(ext[i, 2])))
    return out


def analyse(datalist: str, predictions: str, threshold: float, section: str = "test", rule: MatchRule | None = None) -> dict:
    """Every volume of ``section``: misses of lesions >= 10 mm by kind and size, kept false boxes by kind and size."""
    rule = rule or MatchRule()
    lesions: dict[str, dict[str, int]] = {b[2]: dict.fromkeys(("found", *MISS_KINDS), 0) for b in BINS}
    fps, overlaps, fp_mm, gaps, volumes = dict.fromkeys(FP_KINDS, 0), [], [], [], 0
    for _, pred, gt, long_mm in volume_truth(datalist, predictions, section):
        spacing = spacing_of_affine(np.asarray(pred["affine"], dtype=np.float64)) if "affine" in pred else (1.0, 1.0, 1.0)
        v = volume_misses(pred["box"], pred["score"], gt, long_mm, threshold, rule, spacing)
        volumes += 1
        for mm, kind in v["lesions"]:
            lesions[next(lbl for lo, hi, lbl in BINS if lo <= mm < hi)][kind] += 1
        for kind in v["false_boxes"]:
            fps[kind] += 1
        overlaps += v["overlaps"]
        fp_mm += v["false_box_mm"]
        gaps += v["gaps"]
    return {
        "threshold": threshold,
        "match": rule.label(),
        "volumes": volumes,
        "lesions_ge10": lesions,
        "false_boxes": fps,
        "misplaced_overlap": overlaps,  # (IoU in-plane, IoU along z) of each misplaced lesion's best box
        "false_box_mm": fp_mm,  # (longest in-plane side, z extent) of each kept false box
        "below_gap": gaps,  # threshold minus the best accepted box's score, per lesion below the threshold
    }


def pool(results: list[dict]) -> dict:
    """Several analyses (replicates, each at its own operating point) as one: counts summed, lists joined."""
    out = {"threshold": None, "match": results[0]["match"], "volumes": sum(r["volumes"] for r in results)}
    out["lesions_ge10"] = {
        b: {k: sum(r["lesions_ge10"][b][k] for r in results) for k in results[0]["lesions_ge10"][b]} for b in results[0]["lesions_ge10"]
    }
    out["false_boxes"] = {k: sum(r["false_boxes"][k] for r in results) for k in FP_KINDS}
    out["misplaced_overlap"] = [o for r in results for o in r["misplaced_overlap"]]
    out["false_box_mm"] = [o for r in results for o in r["false_box_mm"]]
    out["below_gap"] = [o for r in results for o in r["below_gap"]]
    return out


def _medians(pairs: list[tuple[float, float]]) -> dict:
    if not pairs:
        return {"n": 0, "first": None, "second": None}
    a = np.asarray(pairs, dtype=np.float64)
    return {"n": len(a), "first": float(np.median(a[:, 0])), "second": float(np.median(a[:, 1]))}


def markdown_rows(name: str, r: dict) -> list[str]:
    """Two table rows for one analysed set: its lesions >= 10 mm by kind per size bin, and its kept false boxes."""
    rows = []
    for b in (lbl for _, _, lbl in BINS):
        c = r["lesions_ge10"][b]
        rows.append(f"| {name} | {b} | {sum(c.values())} | " + " | ".join(str(c[k]) for k in ("found", *MISS_KINDS)) + " |")
    return rows


def summary_markdown(results: dict[str, dict]) -> str:
    """Every analysed set (name -> analyse() result) as two tables: misses, then kept false boxes."""
    if not results:
        return "No predictions analysed.\n"
    first = next(iter(results.values()))
    at = "each replicate at its own operating point" if first["threshold"] is None else f"threshold {first['threshold']:.6g}"
    lines = [
        f"Every set at the shipped operating point ({at}). Hit rule: {first['match']}.",
        "",
        "| set | size | lesions | found | " + " | ".join(k.replace("_", " ") for k in MISS_KINDS) + " |",
        "|---|---|---|---|" + "---|" * len(MISS_KINDS),
    ]
    for name, r in results.items():
        lines += markdown_rows(name, r)
    lines += [
        "",
        "| set | volumes | "
        + " | ".join(k.replace("_", " ") for k in FP_KINDS)
        + " | below threshold: score gap to it, median (quartiles) | misplaced: median IoU in-plane / along z"
        + " | false box median size in-plane / z (mm) |",
        "|---|---|" + "---|" * len(FP_KINDS) + "---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['volumes']} | "
            + " | ".join(str(r["false_boxes"][k]) for k in FP_KINDS)
            + " | "
            + " | ".join(_details(r))
            + " |"
        )
    return "\n".join(lines) + "\n"


def _details(r: dict) -> list[str]:
    """How far below the threshold the missed lesions' boxes score; the misplaced boxes' overlaps; the false boxes' sizes."""
    g = np.asarray(r["below_gap"], dtype=np.float64)
    gap = f"{np.median(g):.2f} ({np.percentile(g, 25):.2f}-{np.percentile(g, 75):.2f}; n={len(g)})" if len(g) else "-"
    o, f = _medians(r["misplaced_overlap"]), _medians(r["false_box_mm"])
    ov = f"{o['first']:.2f} / {o['second']:.2f} (n={o['n']})" if o["n"] else "-"
    sz = f"{f['first']:.1f} / {f['second']:.1f}" if f["n"] else "-"
    return [gap, ov, sz]
