"""Where a pseudo-box is born: the teacher's detections on its own training images.

Why: radiologists measure one to three lesions per study; the rest are unlabeled tumors that a
detector is trained to call background. The seed study let the trained model label them
("self-labeling", +18,562 boxes on 11,880 mined) and retrained. A prediction becomes a
pseudo-box only when it is confident, does not overlap a box the image already has, and passes
the same size rule as mining.
"""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from monai.data.box_utils import box_iou

from bundle.datalist import schema
from bundle.datalist.rules import SizeRule
from bundle.datalist.sections import absolute_datalist
from bundle.metrics.breakdown import long_axis_mm


@dataclass
class PseudoRules(SizeRule):
    """When a prediction becomes a pseudo-box; the size range is the mining size rule (`SizeRule`) unless overridden."""

    # a number, or "auto": where the teacher reaches the schedule's target precision on validation (loop.SelfTraining.rules_for)
    score_threshold: float | str = "auto"
    iou_max: float = 0.1  # a prediction overlapping an existing box by more than this is that box
    max_per_image: int = 3  # per training item: a key slice, or a whole series (schedule.series)
    # predictions scoring in [ignore_floor, score_threshold) become ignore regions (neither lesion nor background);
    # None: no ignore band (below the threshold is background, as in the seed study)
    ignore_floor: float | None = None
    # a confident prediction that a rule rejects (size, per-item cap, temporal consistency) becomes an ignore region:
    # it is likely a lesion the rules will not vouch for, and training it as background would teach the model to miss it
    ignore_rejected: bool = True
    consistency_iou: float = 0.3  # temporal consistency: the earlier checkpoint's box must overlap this much
    # score-weighted background (an ablation arm): an uncertain-band prediction is ignored with probability = its score,
    # drawn once per round and item (seeded), so the background loss there is weighted (1 - score) in expectation
    score_weighted: bool = False
    # set by the loop, not by users: the teacher's scores are classification logits (the volume path's), so the
    # score-weighted probability is their sigmoid; thresholds given as probabilities are converted by the loop
    logit_scores: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.score_threshold, str):  # from a config or a command line: a number or "auto"
            self.score_threshold = parse_threshold(self.score_threshold)
        for name in ("ignore_rejected", "score_weighted"):  # "false" from a command line is not True
            if isinstance(getattr(self, name), str):
                setattr(self, name, getattr(self, name).strip().lower() in ("1", "true", "yes"))
        if isinstance(self.ignore_floor, str):
            self.ignore_floor = None if self.ignore_floor.strip().lower() in ("", "none", "null") else float(self.ignore_floor)


def parse_threshold(value: str | float) -> float | str:
    """A score threshold from a command line or config: a number in [0, 1] or "auto"."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    t = float(value)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"score_threshold: {value!r} is neither 'auto' nor a score in [0, 1]")
    return t


def select_pseudo(pred_boxes, pred_scores, existing_boxes, spacing, rules: PseudoRules) -> tuple[list[tuple[list[float], float]], Counter]:
    """Pseudo-boxes for one image, most confident first, and the count of each rejection reason."""
    out, _, why = select_pseudo_and_rejected(pred_boxes, pred_scores, existing_boxes, spacing, rules)
    return out, why


def select_pseudo_and_rejected(
    pred_boxes, pred_scores, existing_boxes, spacing, rules: PseudoRules, previous=None
) -> tuple[list[tuple[list[float], float]], list[list[float]], Counter]:
    """(pseudo-boxes, confident predictions a rule rejected, rejection counts) for one item.

    previous: the boxes an earlier checkpoint of the teacher kept (temporal consistency); None: no such rule.
    A confident prediction is rejected when outside the size rule, over the per-item cap, or (with ``previous``)
    not overlapping any earlier box by ``consistency_iou``; overlapping an existing box is that box, not a rejection.
    """
    if isinstance(rules.score_threshold, str):
        raise ValueError("score_threshold 'auto' is resolved per teacher by the self-training loop; pass a number here")
    p = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 2 * len(spacing))
    s = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    taken = [np.asarray(b, dtype=np.float64) for b in existing_boxes]
    prev = None if previous is None else np.asarray(previous, dtype=np.float64).reshape(-1, p.shape[1])
    why: Counter = Counter()
    out: list[tuple[list[float], float]] = []
    rejected: list[list[float]] = []
    mm = long_axis_mm(p, spacing)
    for i in np.argsort(-s, kind="stable"):
        if s[i] < rules.score_threshold:
            why["below score threshold"] += 1
            continue
        if taken and float(np.max(box_iou(p[i : i + 1], np.stack(taken)))) > rules.iou_max:
            why["overlaps an existing box"] += 1
            continue
        reason = None
        if not rules.contains(mm[i]):
            reason = "outside the size rule"
        elif prev is not None and not (len(prev) and float(np.max(box_iou(p[i : i + 1], prev))) >= rules.consistency_iou):
            reason = "not predicted by the earlier checkpoint"
        elif len(out) >= rules.max_per_image:
            reason = "over the per-image limit"
        if reason:
            why[reason] += 1
            rejected.append([float(v) for v in p[i]])
            continue
        out.append(([float(v) for v in p[i]], float(s[i])))
        taken.append(p[i])
    return out, rejected, why


def select_ignore(pred_boxes, pred_scores, existing_boxes, threshold: float, rules: PseudoRules, rng=None) -> list[list[float]]:
    """The uncertain band: predictions in [ignore_floor, threshold) that are not already a box of the item.

    rng (score-weighted background, ``rules.score_weighted``): each band prediction is an ignore region with probability
    equal to its score and background otherwise, so its background loss is weighted (1 - score) in expectation.
    """
    if rules.ignore_floor is None:
        return []
    if not len(pred_boxes):
        return []
    p = np.asarray(pred_boxes, dtype=np.float64)
    p = p.reshape(-1, p.shape[-1])
    s = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    band = (s >= rules.ignore_floor) & (s < threshold)
    if len(existing_boxes) and band.any():
        iou = np.asarray(box_iou(p[band], np.asarray(existing_boxes, dtype=np.float64)))
        keep = iou.max(axis=1) <= rules.iou_max
        idx = np.nonzero(band)[0][keep]
    else:
        idx = np.nonzero(band)[0]
    if rng is not None and len(idx):
        prob = 1.0 / (1.0 + np.exp(-s[idx])) if rules.logit_scores else s[idx]
        idx = idx[rng.random(len(idx)) < prob]
    return [[float(v) for v in p[i]] for i in idx]


def _provenance(item: dict) -> dict:
    """Per-box provenance lists; mined boxes that carry none get 'mined', round 0, no score."""
    n = len(item.get("box", []))
    return {
        "box_source": list(item.get("box_source", ["mined"] * n)),
        "box_round": list(item.get("box_round", [0] * n)),
        "box_score": list(item.get("box_score", [None] * n)),
    }


def _extend_per_box(item: dict, box: list[float], score: float, round_index: int, spacing) -> None:
    """Keep the item's other per-box lists (schema.PER_BOX) one entry per box: what a pseudo-box can say of itself."""
    for name in schema.PER_BOX:
        if name in ("box_source", "box_round", "box_score") or name not in item:
            continue
        if name == "long_mm":
            value = round(float(long_axis_mm(np.asarray([box], dtype=np.float64), spacing)[0]), 3)
        elif name == "provenance":
            value = {"source": "pseudo", "round": round_index, "score": round(score, 4), "rule": "self-training pseudo-box"}
        else:
            value = None
        item[name] = [*item[name], value]  # a new list: the teacher's datalist item is left as it was


def expand_datalist(
    datalist: dict,
    predictions: dict[str, dict],
    spacings: dict[str, tuple],
    round_index: int,
    rules: PseudoRules,
    previous: dict[str, list] | None = None,
) -> tuple[dict, dict]:
    """A new datalist with pseudo-boxes added to *training* items only; other sections are copied as they are.

    predictions: absolute image path -> {"box", "score"}; datalist image paths must be absolute.
    previous: absolute image path -> the boxes an earlier teacher checkpoint kept (temporal consistency), or None.
    Ignore regions: the uncertain band (``ignore_floor``) and, with ``ignore_rejected``, every confident
    prediction a rule rejected.
    """
    out = {k: v for k, v in datalist.items() if k != "training"}
    added_scores: list[float] = []
    reasons: Counter = Counter()
    training = []
    for item in datalist.get("training", []):
        new = dict(item) | _provenance(item)
        pred = predictions.get(str(Path(item["image"]).resolve()))
        if pred is not None:
            prev = None if previous is None else previous.get(str(Path(item["image"]).resolve()), [])
            chosen, rejected, why = select_pseudo_and_rejected(
                pred["box"], pred["score"], item.get("box", []), spacings[item["image"]], rules, prev
            )
            reasons.update(why)
            for box, score in chosen:
                new["box"] = list(new.get("box", [])) + [box]
                new["label"] = list(new.get("label", [])) + [0]
                new["box_source"].append("pseudo")
                new["box_round"].append(round_index)
                new["box_score"].append(round(score, 4))
                _extend_per_box(new, box, score, round_index, spacings[item["image"]])
                added_scores.append(score)
            rng = np.random.default_rng([round_index, zlib.crc32(str(item["image"]).encode())]) if rules.score_weighted else None
            ignore = select_ignore(pred["box"], pred["score"], new.get("box", []), float(rules.score_threshold), rules, rng)
            if ignore:
                reasons["uncertain: ignore region"] += len(ignore)
            if rules.ignore_rejected and rejected:
                ignore = ignore + rejected
                reasons["rejected confident: ignore region"] += len(rejected)
            if ignore:
                new["ignore_box"] = list(item.get("ignore_box", [])) + ignore
        training.append(new)
    out["training"] = training
    scores = np.asarray(added_scores)
    stats = {
        "round": round_index,
        "boxes_added": len(added_scores),
        "images_with_added": sum(
            1 for it in training if any(s == "pseudo" and r == round_index for s, r in zip(it["box_source"], it["box_round"]))
        ),
        "score_quantiles": {q: float(np.quantile(scores, float(q))) for q in ("0", "0.25", "0.5", "0.75", "1")} if len(scores) else {},
        # of the probabilities (the sigmoid of logit scores), so rounds and paths read alike
        "score_histogram": np.histogram(1.0 / (1.0 + np.exp(-scores)) if rules.logit_scores else scores, bins=10, range=(0.0, 1.0))[
            0
        ].tolist(),
        "score_kind": "logit" if rules.logit_scores else "probability",
        "rejected": dict(sorted(reasons.items())),
    }
    return out, stats


def threshold_for_count(
    datalist: dict,
    predictions: dict[str, dict],
    spacings: dict[str, tuple],
    rules: PseudoRules,
    target: int,
    previous: dict[str, list] | None = None,
) -> float:
    """The highest score threshold at which the rules keep at least ``target`` pseudo-boxes (dynamic threshold).

    Why: a student is surer than its teacher, so a fixed threshold lets the pseudo-box count (and its share of
    wrong boxes) grow round after round; holding the count at the first round's keeps each round's labels
    comparable. Fewer than ``target`` available at any threshold: the lowest score (keep all there are).
    """
    scores = np.unique(np.concatenate([np.asarray(p["score"], dtype=np.float64).reshape(-1) for p in predictions.values()] + [np.zeros(0)]))
    if not len(scores) or target <= 0:
        return float(np.nextafter(scores[-1], np.inf)) if len(scores) else 1.0

    def count(t: float) -> int:
        return expand_datalist(datalist, predictions, spacings, 0, replace(rules, score_threshold=float(t), ignore_floor=None), previous)[
            1
        ]["boxes_added"]

    lo, hi = 0, len(scores) - 1  # count falls as the threshold rises: the last index whose count >= target
    if count(scores[lo]) < target:
        return float(scores[lo])
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(scores[mid]) >= target:
            lo = mid
        else:
            hi = mid - 1
    return float(scores[lo])


def with_unlabelled(datalist: dict, unlabelled: str | None) -> dict:
    """The datalist with the unlabelled series (section ``unlabelled``) added to training, each flagged ``unlabelled``.

    A copy: the mined datalist is never changed; a series already in training is not added twice."""
    if not unlabelled:
        return datalist
    have = {it["image"] for it in datalist.get("training", [])}
    extra = [it | {"unlabelled": True} for it in absolute_datalist(unlabelled).get("unlabelled", []) if it["image"] not in have]
    return datalist | {"training": list(datalist.get("training", [])) + extra}


def write_datalist(datalist: dict, path: str | Path) -> str:
    """A round's datalist, validated against the schema as it is written."""
    return str(schema.write_datalist(datalist, path))
