"""Volume-level evaluation (the primary result): 3D boxes per volume against every lesion of the volume.

Why: a radiologist sees every box the model draws on a series, so lesion sensitivity and false boxes
per volume (and per normal volume) decide whether the tool is usable; key-slice figures cannot see
the boxes on the slices nobody measured. Predictions come from configs/evaluate_volume.yaml, i.e. the
detector MONAI Label and the Deploy app run (configs/inference_volume.yaml).

Rules (docs/evaluation.md, "Volume level"):
- strict (the default, `MatchRule()`): a predicted 3D box finds a lesion when their 3D IoU >= `iou_threshold`
  (0.1) or the box's OWN centre lies inside the lesion's box (an oversized box no longer counts); greedy by
  descending score, lesions >= 10 mm taken before smaller ones, then the best IoU; a box that hits only
  lesions already found is a duplicate, neither TP nor FP (LUNA16's convention);
- the old rule (`OLD_RULE`, the second column): IoU >= 0.1 or the lesion's centre inside the box, any lesion
  by IoU, every unmatched box a false positive, as the pages before the strict rule were written;
- the operating point is chosen on validation volumes (`choose_operating_point`) and applied unchanged
  to test; a threshold keeps every box with score >= it (ties kept or dropped together);
- CIs and the paired test resample patients (bundle.metrics.volume_stats).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.data.box_utils import box_iou

from bundle.datalist.sections import load_truth, spacing_of
from bundle.inference.operating_point import float32_at_least
from bundle.inference.predictions import load_predictions, pair
from bundle.metrics import froc, volume_stats
from bundle.metrics.breakdown import SIZE_BINS_MM, long_axis_mm
from bundle.metrics.matching import ImageMatch, as_boxes, greedy

LARGE_MM = 10.0
GE_LABEL = ">=10 mm"
BIN_LABELS = [lbl for _, _, lbl in SIZE_BINS_MM]
CPM_LABEL = "CPM (LUNA16): mean sensitivity at 1/8, 1/4, 1/2, 1, 2, 4 and 8 false boxes per volume"


CRITERIA = ("strict", "iou", "box_center", "iou_or_center", "center")


@dataclass
class MatchRule:
    """How a predicted 3D box finds its lesion (configs/evaluate_volume.yaml: volume_match_criterion, volume_iou_threshold).

    criterion: "strict" (IoU or the box's own centre inside the lesion), "iou", "box_center" (the box's own
    centre inside the lesion), or the old, lenient "iou_or_center" / "center" (the LESION's centre inside the
    box, which any oversized box satisfies). large_first: lesions >= 10 mm are taken before smaller ones.
    duplicates "ignore": a box hitting only found lesions is neither TP nor FP; "fp": it is a false positive.
    """

    criterion: str = "strict"
    iou_threshold: float = 0.1
    large_first: bool = True
    duplicates: str = "ignore"

    def __post_init__(self) -> None:
        if self.criterion not in CRITERIA:
            raise ValueError(f"volume matching criterion {self.criterion!r}: use one of {', '.join(CRITERIA)}")
        if self.duplicates not in ("ignore", "fp"):
            raise ValueError(f"volume matching duplicates {self.duplicates!r}: use 'ignore' or 'fp'")

    def label(self) -> str:
        iou = f"3D IoU >= {self.iou_threshold:g}"
        own = "the box's own centre inside the lesion"
        centre = "the predicted box contains the lesion's centre"
        text = {"iou": iou, "box_center": own, "strict": f"{iou} or {own}", "center": centre, "iou_or_center": f"{iou} or {centre}"}
        extra = ["lesions >= 10 mm matched first"] if self.large_first else []
        extra += ["a second box on a found lesion ignored" if self.duplicates == "ignore" else "a second box on a found lesion a FP"]
        return f"{text[self.criterion]} ({'; '.join(extra)})"


OLD_RULE = MatchRule("iou_or_center", 0.1, large_first=False, duplicates="fp")  # the rule of the pages before the strict one


def match_volume(
    pred_boxes, pred_scores, gt_boxes, rule: MatchRule | None = None, where: str = "volume", long_mm=None
) -> tuple[ImageMatch, np.ndarray]:
    """One volume's 3D predictions (xyzxyz) against its lesions, greedy by score (matching.greedy).

    Returns the match of every box and which boxes are ignored duplicates (rule.duplicates "ignore"; their tp is False).
    long_mm: each lesion's long axis, for rule.large_first (None: all count as large).
    """
    rule = rule or MatchRule()
    p, g = as_boxes(pred_boxes, f"{where} predictions"), as_boxes(gt_boxes, f"{where} truth")
    s = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    if len(s) != len(p):
        raise ValueError(f"{where}: {len(p)} predicted boxes but {len(s)} scores")
    for arr, what in ((p, "predictions"), (g, "truth")):
        if len(arr) and arr.shape[1] != 6:
            raise ValueError(f"{where}: {what} must be 3D boxes [x0, y0, z0, x1, y1, z1], got {arr.shape[1]} numbers per box")
    none = np.zeros(len(p), dtype=bool)
    if not (len(p) and len(g)):
        return ImageMatch(scores=s, tp=none, n_truth=len(g), matched_truth=np.full(len(p), -1)), none
    ok, iou, contains = hit_matrix(p, g, rule)
    quality = iou + 1e-9 * contains  # among allowed lesions: highest IoU; a contained centre breaks ties
    if rule.large_first:
        large = np.ones(len(g), dtype=bool) if long_mm is None else np.asarray(long_mm, dtype=np.float64).reshape(-1) >= LARGE_MM
        quality = quality + 2.0 * large[None, :]  # IoU <= 1: any free large lesion outranks every small one
    tp, matched = greedy(ok, quality, s)
    ignored = ~tp & ok.any(axis=1) if rule.duplicates == "ignore" else none
    return ImageMatch(scores=s, tp=tp, n_truth=len(g), matched_truth=matched), ignored


def hit_matrix(p: np.ndarray, g: np.ndarray, rule: MatchRule) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(predictions, lesions) matrices: which box may find which lesion under ``rule``, their 3D IoU, and whether
    the box contains the lesion's centre (p, g: xyzxyz, both non-empty)."""
    iou = np.asarray(box_iou(p, g), dtype=np.float64)
    centre = (g[:, :3] + g[:, 3:]) / 2
    contains = np.all((p[:, None, :3] <= centre[None]) & (centre[None] <= p[:, None, 3:]), axis=2)
    own = (p[:, :3] + p[:, 3:]) / 2
    inside = np.all((g[None, :, :3] <= own[:, None]) & (own[:, None] <= g[None, :, 3:]), axis=2)
    hit = iou >= rule.iou_threshold
    ok = {"iou": hit, "box_center": inside, "strict": hit | inside, "center": contains, "iou_or_center": hit | contains}[rule.criterion]
    return ok, iou, contains


def without(m: ImageMatch, drop: np.ndarray) -> ImageMatch:
    """The match without the dropped boxes (ignored duplicates): they count neither as TP nor as FP anywhere."""
    keep = ~np.asarray(drop, dtype=bool)
    return ImageMatch(scores=m.scores[keep], tp=m.tp[keep], n_truth=m.n_truth, matched_truth=m.matched_truth[keep])


@dataclass
class Volume:
    """One scored volume: its match, patient and each lesion's long axis (mm)."""

    image: str
    patient: str
    match: ImageMatch  # scored boxes only (ignored duplicates left out)
    long_mm: np.ndarray
    shown: np.ndarray | None = None  # every box's score, duplicates included (boxes shown per volume); None: match.scores
    away: np.ndarray | None = None  # per scored box: it overlaps no lesion at all (a false box in normal tissue)

    @property
    def normal(self) -> bool:
        return self.match.n_truth == 0


def to_detector_grid(boxes, stored_affine, detector_affine) -> np.ndarray:
    """Truth boxes in the stored file's array coordinates -> the detector's grid (after its reorientation).

    Box corners are voxel edges (max exclusive), so they move as edge coordinates (index - 0.5).
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    t = np.linalg.inv(np.asarray(detector_affine, dtype=np.float64)) @ np.asarray(stored_affine, dtype=np.float64)
    if np.allclose(t, np.eye(4), atol=1e-4) or not len(b):
        return b
    corners = np.stack([b[:, [i, j + 1, k + 2]] for i in (0, 3) for j in (0, 3) for k in (0, 3)], axis=1) - 0.5  # (N, 8, 3)
    moved = corners @ t[:3, :3].T + t[:3, 3] + 0.5
    return np.round(np.concatenate([moved.min(1), moved.max(1)], axis=1), 6)


def _stored_affine(image: str, pred: dict) -> np.ndarray:
    """The affine of the grid the truth boxes are in: the NIfTI's own, or for DICOM in (a series or study folder,
    an Enhanced MR file) the grid volume inference read it in, which its prediction file records."""
    if Path(image).is_dir() or not image.endswith((".nii", ".nii.gz")):
        return np.asarray(pred["affine"], dtype=np.float64)
    return nib.load(image).affine


def _truth_boxes(item: dict, pred: dict) -> np.ndarray:
    boxes = np.asarray(item["box"], dtype=np.float64).reshape(-1, 6) if len(item["box"]) else np.zeros((0, 6))
    if "affine" in pred and len(boxes):
        boxes = to_detector_grid(boxes, _stored_affine(item["image"], pred), pred["affine"])
    return boxes


def volume_truth(datalist: str, predictions: str, key: str):
    """Each volume of a datalist section with its saved predictions: (item, prediction record, lesion boxes in the
    prediction's grid, each lesion's long axis in mm)."""
    for item, pred in pair(load_predictions(predictions), load_truth(datalist, key), str(predictions)):
        boxes = _truth_boxes(item, pred)
        if "long_mm" in item:
            long_mm = np.asarray(item["long_mm"], dtype=np.float64)
        else:
            long_mm = long_axis_mm(np.asarray(item["box"], dtype=float).reshape(-1, 6), spacing_of(item, 3)) if len(boxes) else np.zeros(0)
        yield item, pred, boxes, long_mm


def score_volumes(datalist: str, predictions: str, key: str, rule: MatchRule | None = None) -> list[Volume]:
    """Every volume of a datalist section matched to its saved predictions (VolumeDetectionSaver JSON)."""
    out = []
    for item, pred, boxes, long_mm in volume_truth(datalist, predictions, key):
        where = item["image"]
        m, ignored = match_volume(pred["box"], pred["score"], boxes, rule, where, long_mm)
        away = _away(pred["box"], boxes)[~ignored]
        out.append(Volume(where, str(item.get("patient", where)), without(m, ignored), long_mm, m.scores, away))
    return out


def _away(pred_boxes, gt: np.ndarray) -> np.ndarray:
    """Per predicted box: it overlaps no lesion (3D IoU 0 with every one); on a normal volume every box is away."""
    p = as_boxes(pred_boxes, "predictions")
    if not len(p) or not len(gt):
        return np.ones(len(p), dtype=bool)
    return ~(np.asarray(box_iou(p, gt), dtype=np.float64) > 0).any(axis=1)


def _kept(v: Volume, t: float) -> tuple[np.ndarray, set[int]]:
    keep = v.match.scores >= t
    return keep, set(v.match.matched_truth[keep & v.match.tp].tolist())


COLUMNS = [
    "tp",
    "n",
    "tp_ge10",
    "n_ge10",
    *[f"{k}_{b}" for b in BIN_LABELS for k in ("tp", "n")],
    "fp",
    "fp_normal",
    "boxes",
    "volumes",
    "normal",
]


def volume_counts(volumes: list[Volume], t: float) -> np.ndarray:
    """(V, len(COLUMNS)) counts at threshold t: found/all lesions overall, >= 10 mm and per size bin; FPs; volume flags."""
    out = np.zeros((len(volumes), len(COLUMNS)))
    col = {c: i for i, c in enumerate(COLUMNS)}
    for r, v in enumerate(volumes):
        keep, hit = _kept(v, t)
        found = np.array([j in hit for j in range(v.match.n_truth)], dtype=bool)
        ge = v.long_mm >= LARGE_MM
        fp = int((~v.match.tp[keep]).sum())
        row = {"tp": found.sum(), "n": len(found), "tp_ge10": found[ge].sum(), "n_ge10": ge.sum(), "fp": fp, "boxes": int(keep.sum())}
        if v.shown is not None:
            row["boxes"] = int((v.shown >= t).sum())
        for lo, hi, lbl in SIZE_BINS_MM:
            inb = (v.long_mm >= lo) & (v.long_mm < hi)
            row |= {f"tp_{lbl}": found[inb].sum(), f"n_{lbl}": inb.sum()}
        row |= {"fp_normal": fp if v.normal else 0, "volumes": 1, "normal": int(v.normal)}
        for k, val in row.items():
            out[r, col[k]] = val
    return out


def figures(sums: np.ndarray) -> dict[str, np.ndarray]:
    """Figures from summed counts (..., len(COLUMNS)): sensitivities, FP per volume and per normal volume."""
    c = {k: sums[..., i] for i, k in enumerate(COLUMNS)}
    out = {"sensitivity": volume_stats.ratio(c["tp"], c["n"]), f"sensitivity {GE_LABEL}": volume_stats.ratio(c["tp_ge10"], c["n_ge10"])}
    out |= {f"sensitivity {b}": volume_stats.ratio(c[f"tp_{b}"], c[f"n_{b}"]) for b in BIN_LABELS}
    out |= {
        "fp_per_volume": volume_stats.ratio(c["fp"], c["volumes"]),
        "fp_per_normal_volume": volume_stats.ratio(c["fp_normal"], c["normal"]),
        "boxes_per_volume": volume_stats.ratio(c["boxes"], c["volumes"]),
    }
    return out


def at_threshold(volumes: list[Volume], t: float) -> dict:
    """Point figures and counts at one threshold (NaN -> None where a population is empty)."""
    s = volume_counts(volumes, t).sum(0)
    f = {k: (float(v) if np.isfinite(v) else None) for k, v in figures(s).items()}
    c = dict(zip(COLUMNS, (int(x) for x in s)))
    return f | {
        "lesions": c["n"],
        "lesions_ge10": c["n_ge10"],
        "found": c["tp"],
        "found_ge10": c["tp_ge10"],
        "false_positives": c["fp"],
        "volumes": c["volumes"],
        "normal_volumes": c["normal"],
        "by_size": {b: {"lesions": c[f"n_{b}"], "found": c[f"tp_{b}"]} for b in BIN_LABELS},
    }


NORMAL_FP_FROM = ("normal_volumes", "all_volumes")


def _normal_fp_evidence(volumes: list[Volume], normal_fp_from: str) -> tuple[np.ndarray, int, str]:
    """Per scored box, whether it counts toward false boxes per normal volume, and over how many volumes.

    "normal_volumes": the false boxes of the volumes without lesions, per such volume (few: 2 of the demo's 16
    validation volumes). "all_volumes": every false box that overlaps no lesion, per volume of any kind: the same rate
    of false boxes in normal tissue, estimated on every volume (a mimic does not need the brain to be normal). Volumes
    built without their boxes' overlaps (``away`` None) can only be read the first way; the estimate used is returned."""
    if normal_fp_from not in NORMAL_FP_FROM:
        raise ValueError(f"normal_fp_from {normal_fp_from!r}: use one of {', '.join(NORMAL_FP_FROM)}")
    if normal_fp_from == "normal_volumes" or any(v.away is None for v in volumes):  # built without boxes: no overlap to read
        flags = [np.full(len(v.match.scores), v.normal) & ~v.match.tp for v in volumes]
        return np.concatenate(flags + [np.zeros(0, dtype=bool)]), sum(v.normal for v in volumes), "normal_volumes"
    flags = [v.away & ~v.match.tp for v in volumes]
    return np.concatenate(flags + [np.zeros(0, dtype=bool)]), len(volumes), "all_volumes"


def choose_operating_point(
    volumes: list[Volume], max_fp_per_volume: float = 0.5, max_fp_per_normal_volume: float = 0.25, normal_fp_from: str = "normal_volumes"
) -> dict:
    """The lowest score threshold whose FPs per volume and per normal volume stay within the targets (validation).

    Candidates are the distinct scores (a threshold keeps every tie of its score, as in matching.py) and one
    just above the highest score (keeps nothing). FPs only fall as the threshold rises, so the lowest
    feasible candidate keeps the most lesions within the targets. Without normal volumes the per-normal
    target cannot be checked and is recorded as such. ``normal_fp_from``: how FPs per normal volume are estimated
    (:func:`_normal_fp_evidence`).
    """
    if not volumes:
        raise ValueError("operating point: no validation volumes")
    scores = np.concatenate([v.match.scores for v in volumes] + [np.zeros(0)])
    fp = np.concatenate([~v.match.tp for v in volumes] + [np.zeros(0, dtype=bool)])
    normal_fp, n_norm, normal_fp_from = _normal_fp_evidence(volumes, normal_fp_from)
    n_vol = len(volumes)
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    cum_fp, cum_fpn = np.cumsum(fp[order]), np.cumsum(normal_fp[order])
    last = np.r_[s[1:] != s[:-1], True] if len(s) else np.zeros(0, dtype=bool)
    ok = last & (cum_fp <= max_fp_per_volume * n_vol + 1e-9)
    if n_norm:
        ok &= cum_fpn <= max_fp_per_normal_volume * n_norm + 1e-9
    feasible = np.flatnonzero(ok)
    # feasibility is monotone in the threshold: the last feasible position before the first infeasible tie group
    first_bad = np.flatnonzero(last & ~ok)
    feasible = feasible[feasible < first_bad[0]] if len(first_bad) else feasible
    if len(feasible):
        thr = float(s[feasible[-1]])
    else:  # just above the top score, in float32 too (the serving paths compare float32 scores)
        thr = float(np.nextafter(np.float32(float32_at_least(s[0])), np.float32(np.inf))) if len(s) else 0.0
    how = "" if normal_fp_from == "normal_volumes" else " (estimated from every volume's false boxes away from any lesion)"
    rule = (
        f"lowest score threshold with validation FP per volume <= {max_fp_per_volume:g} and FP per normal volume <= "
        f"{max_fp_per_normal_volume:g}{how} (a threshold keeps every box with score >= it; ties together)"
    )
    targets = {"max_fp_per_volume": max_fp_per_volume, "max_fp_per_normal_volume": max_fp_per_normal_volume}
    return {
        "score_threshold": thr,
        "rule": rule,
        "targets": targets | ({"normal_fp_from": normal_fp_from} if normal_fp_from != "normal_volumes" else {}),
        "normal_target_checked": bool(n_norm),
        "keeps_nothing_on_validation": not len(feasible),
        "validation": at_threshold(volumes, thr),
    }


def froc_figures(volumes: list[Volume], min_long_mm: float = 0.0) -> dict:
    """Sensitivity at 1/8 ... 8 FP per volume and the LUNA16 CPM, their mean (MONAI's curve and reading, bundle.metrics.froc).

    min_long_mm > 0: smaller lesions are ignore regions (not targets; a box matched to one is neither TP nor FP).
    """
    matches = [restrict(v, min_long_mm) for v in volumes]
    at = froc.sensitivity_at(matches, volume_stats.VOLUME_FP_RATES)
    return {
        "sensitivity_at_fp": at,
        "cpm": float(np.mean(list(at.values()))),
        "fp_rates": list(volume_stats.VOLUME_FP_RATES),
        "cpm_label": CPM_LABEL,
    }


def restrict(v: Volume, min_long_mm: float) -> ImageMatch:
    """The volume's match with lesions under min_long_mm turned into ignore regions."""
    m = v.match
    if min_long_mm <= 0:
        return m
    inside = v.long_mm >= min_long_mm
    keep = ~m.tp | inside[np.maximum(m.matched_truth, 0)] if len(inside) else np.ones(len(m.scores), dtype=bool)
    new_index = np.cumsum(inside) - 1
    matched = np.where(m.tp[keep], new_index[np.maximum(m.matched_truth[keep], 0)] if len(inside) else -1, -1)
    return ImageMatch(scores=m.scores[keep], tp=m.tp[keep], n_truth=int(inside.sum()), matched_truth=matched)
