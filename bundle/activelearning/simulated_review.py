"""Simulated review (issue 28): is reviewing the K studies the detector is least sure about worth more than K random ones?

Why: the MONAI Label strategy (``/activelearning/detection_uncertainty``) asks a radiologist to review the most
uncertain study first. Whether that beats reviewing any study is a claim to measure, not assume. On the demo the
truth is known, so the reader can be simulated: a reviewed study gets every lesion boxed, written as the Slicer
markups a reader would save and turned into complete labels by :mod:`bundle.activelearning.reviewed` (the boxes
positive, the rest of the series background). Three arms start from the same model trained on mined labels and
train the same epochs with the same seed:

- ``none``: the mined labels only (so a gain is not just more epochs);
- ``uncertain``: the K training studies :func:`bundle.activelearning.uncertainty.rank` puts first (the endpoint's
  ranking, at the starting model's operating point chosen on validation volumes), reviewed;
- ``random``: K training studies drawn with a fixed seed, reviewed the same way.

Each arm is evaluated on the test volumes at its own operating point chosen on validation volumes (the caller's
``evaluate``, configs/evaluate_volume.yaml), with patient-bootstrap CIs; ``uncertain`` - ``random`` (and each
against ``none``) is a paired bootstrap over the same test patients (bundle.metrics.volume_report.compare).
Test patients choose nothing: the ranking sees only training studies, the threshold only validation volumes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bundle.activelearning.reviewed import add_reviewed, reviewed_item
from bundle.activelearning.uncertainty import UncertaintyRule, rank
from bundle.datalist.schema import read_datalist
from bundle.inference.operating_point import SCORE_KIND
from bundle.inference.predictions import load_predictions
from bundle.metrics.volume_report import GE_KEY, compare
from bundle.paths import ROOT
from bundle.steps import provenance
from bundle.steps.runner import bundle_run
from bundle.transforms.world import voxel_to_world

ARMS = ("none", "uncertain", "random")
PAIRS = (("uncertain", "random"), ("uncertain", "none"), ("random", "none"))
SERIES = ["configs/train.yaml", "configs/train_series.yaml"]


@dataclass
class ReviewPlan:
    """K studies reviewed per arm, the fine-tuning epochs every arm gets, the random arm's seed."""

    k: int = 3
    epochs: int = 5
    seed: int = 0  # the random arm's draw (numpy default_rng)
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    rule: UncertaintyRule = field(default_factory=UncertaintyRule)  # configs/active_learning.yaml's uncertainty_rule

    def __post_init__(self) -> None:
        unknown = sorted(set(self.arms) - set(ARMS))
        if unknown or self.k < 1:
            raise ValueError(f"review arms {self.arms} (unknown {unknown}) or k {self.k}: arms are {ARMS}, k >= 1")


# ---- choosing the studies -----------------------------------------------------------------------------------


def study_scores(predictions: str | Path, images: Sequence[str]) -> dict[str, list[float]]:
    """Every box score of each training study in a volume prediction file (a study without boxes scores [])."""
    preds = load_predictions(predictions)
    return {im: [float(s) for s in preds.get(im, {}).get("score", [])] for im in images}


def uncertain_studies(scores: Mapping[str, Sequence[float]], threshold: float, k: int, rule: UncertaintyRule | None = None) -> list[str]:
    """The K studies the MONAI Label strategy would serve first (bundle.activelearning.uncertainty.rank)."""
    return [im for im, _ in rank(scores, threshold, rule or UncertaintyRule(), SCORE_KIND)[:k]]


def random_studies(images: Sequence[str], k: int, seed: int) -> list[str]:
    """K studies drawn without replacement with a fixed seed, in the datalist's order."""
    if k > len(images):
        raise ValueError(f"cannot review {k} of {len(images)} training studies")
    pick = set(np.random.default_rng(seed).choice(len(images), size=k, replace=False).tolist())
    return [im for i, im in enumerate(images) if i in pick]


# ---- the simulated reader -------------------------------------------------------------------------------------


def reader_markups(boxes: Sequence[Sequence[float]], affine: np.ndarray) -> dict:
    """What a reader who boxes every lesion saves in Slicer: one LPS ROI per truth box (array ``xyzxyz`` in)."""
    world = voxel_to_world(np.asarray(boxes, dtype=float).reshape(-1, 6), affine)
    return {"markups": [{"type": "ROI", "coordinateSystem": "LPS", "center": b[:3].tolist(), "size": b[3:].tolist()} for b in world]}


def review(items: Sequence[dict], truth: Mapping[str, list], labels_dir: Path) -> list[dict]:
    """Each study reviewed by the simulated reader: its markups saved, read back by reviewed.py as complete labels."""
    labels_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for i, it in enumerate(items):
        image = Path(it["image"])
        if it["image"] not in truth:
            raise KeyError(f"{image}: no demo truth for this training study")
        label = labels_dir / f"study{i:03d}.json"
        label.write_text(json.dumps(reader_markups(truth[it["image"]], nib.load(str(image)).affine)))
        out.append(reviewed_item(image, label, image_ref=it["image"], patient=it["patient"], reader="simulated: demo truth"))
    return out


def arm_datalist(arm: str, mined: str | Path, chosen: Sequence[str], truth: Mapping[str, list], work: Path) -> Path:
    """The training datalist of one arm: ``none`` the mined datalist itself; else the chosen studies reviewed."""
    if arm == "none":
        return Path(mined)
    doc = read_datalist(mined, box_mode="xyzxyz")
    items = [it for it in doc["training"] if it["image"] in set(chosen)]
    if len(items) != len(chosen):
        raise ValueError(f"{mined}: {sorted(set(chosen) - {it['image'] for it in items})} are not training studies")
    out = work / arm / "datalist.json"
    add_reviewed(Path(mined), review(items, truth, work / arm / "labels"), out)
    return out


# ---- training, evaluating, comparing ------------------------------------------------------------------------


def score_studies(model_dir: Path, images: Sequence[str], lowest: float, out: Path, log: Path, over: Mapping[str, Any]) -> Path:
    """configs/inference_volume.yaml (MONAI Label's inference.yaml) on the training studies, every box >= ``lowest``."""
    listing = out.with_suffix(".inputs.json")
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text(json.dumps(list(images)))
    bundle_run(
        "configs/inference_volume.yaml",
        ROOT,
        log,
        bundle_root=ROOT,
        ckpt_dir=model_dir,
        input_list=listing,  # the studies' paths as a file, as the demo and self-training pass them
        output_path=out,
        score_threshold=repr(float(lowest)),
        **{k: v for k, v in over.items() if k in ("context_slices", "val_patch_size")},
    )
    return out


def fine_tune(start: Path, datalist: Path, out: Path, log: Path, over: Mapping[str, Any]) -> Path:
    """Whole-series training (train.yaml + train_series.yaml) from ``start``'s weights and grid; reused when stamped."""
    args = {
        "bundle_root": ROOT,
        "data_list_file_path": datalist,
        "dataset_dir": Path(datalist).parent,
        "ckpt_dir": out / "models",
        "output_dir": out / "train_eval",
        "pretrained_ckpt": Path(start) / "model.pt",
        **over,
    }
    done, now = out / "trained", provenance.stamp(SERIES, args, Path(start) / "model.pt")
    if done.is_file() and json.loads(done.read_text() or "null") == now:
        return out / "models"
    shutil.rmtree(out / "models", ignore_errors=True)
    (out / "models").mkdir(parents=True)
    shutil.copy(Path(start) / "grid.json", out / "models" / "grid.json")  # a fine-tuned model keeps its grid
    bundle_run(SERIES, ROOT, log, **args)
    done.write_text(json.dumps(now, indent=1))
    return out / "models"


def arm_figures(m: dict) -> dict:
    """One arm's test figures at its own validation operating point, with their patient-bootstrap 95% CIs."""
    a, ci = m["test"]["at_operating_point"], m["test"]["ci95"]
    return {
        "sensitivity_ge10": ci[GE_KEY],
        "found_ge10": a["found_ge10"],
        "lesions_ge10": a["lesions_ge10"],
        "fp_per_volume": ci["fp_per_volume"],
        "fp_per_normal_volume": ci["fp_per_normal_volume"],
        "cpm": ci["cpm"],
        "threshold": m["operating_point"]["score_threshold"],
        "validation_sensitivity_ge10": m["operating_point"].get("validation", {}).get(GE_KEY),
        "volumes": a["volumes"],
        "patients": m["test"]["patients"],
    }


def paired_differences(
    m_a: dict, m_b: dict, dir_a: Path, dir_b: Path, volume_datalist: str, out: Path, n_bootstrap: int, seed: int
) -> dict:
    """A - B on the same test patients, each model at its own validation operating point, by the rule each was scored with."""
    preds = [(str(d / "predictions_volume_validation.json"), str(d / "predictions_volume_test.json")) for d in (dir_a, dir_b)]
    r = compare(
        volume_datalist,
        preds[0],
        preds[1],
        str(out),
        names=(m_a["name"], m_b["name"]),
        criterion=m_a["match"]["criterion"],
        iou_threshold=m_a["match"]["iou_threshold"],
        n_bootstrap=n_bootstrap,
        seed=seed,
        **m_a["operating_point"]["targets"],
    )
    p = r["paired"]
    return {"sensitivity_ge10": p[GE_KEY], "fp_per_volume": p["fp_per_volume"], "cpm": p["cpm"], "n_patients": r["n_patients"]}


def run_review(
    plan: ReviewPlan,
    mined: str,
    truth_map: str,
    start: Path,
    work: Path,
    over: Mapping[str, Any],
    evaluate: Callable[[Path, Path], dict],
    volume_datalist: str,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """The whole simulated review from the starting model ``start`` (a model folder): choose, review, train, evaluate, compare.

    ``over``: the training overrides every arm shares (``epochs`` is the plan's); ``evaluate(model_dir, out_dir)`` returns
    that model's metrics_volume.json and leaves its validation and test predictions in ``out_dir``.
    """
    work.mkdir(parents=True, exist_ok=True)
    log = work / "review.log"
    base = evaluate(Path(start), work / "eval" / "start")
    threshold = float(base["operating_point"]["score_threshold"])
    images = [it["image"] for it in read_datalist(mined, box_mode="xyzxyz")["training"]]
    preds = score_studies(Path(start), images, plan.rule.lowest_score(threshold, SCORE_KIND), work / "scores_training.json", log, over)
    scores = study_scores(preds, images)
    ranked = rank(scores, threshold, plan.rule, SCORE_KIND)
    chosen = {
        "none": [],
        "uncertain": uncertain_studies(scores, threshold, plan.k, plan.rule),
        "random": random_studies(images, plan.k, plan.seed),
    }
    truth = json.loads(Path(truth_map).read_text())
    result: dict[str, Any] = {
        "k": plan.k,
        "epochs": plan.epochs,
        "random_seed": plan.seed,
        "train_seed": over.get("seed"),
        "band_logits": plan.rule.band_logits,
        "threshold": threshold,
        "training_studies": len(images),
        "ranking": [{"study": Path(im).name, **f} for im, f in ranked],
        "reviewed": {a: [Path(im).name for im in chosen[a]] for a in plan.arms},
        "overlap": len(set(chosen["uncertain"]) & set(chosen["random"])),
        "truth_boxes": {a: sum(len(truth.get(im, [])) for im in chosen[a]) for a in plan.arms},
        "start": arm_figures(base),
        "arms": {},
        "paired": {},
    }
    metrics, dirs = {}, {}
    for arm in plan.arms:
        dl = arm_datalist(arm, mined, chosen[arm], truth, work)
        model = fine_tune(Path(start), dl, work / arm, log, dict(over) | {"epochs": plan.epochs})
        dirs[arm] = work / "eval" / arm
        metrics[arm] = evaluate(model, dirs[arm])
        result["arms"][arm] = arm_figures(metrics[arm])
    for a, b in PAIRS:
        if a in metrics and b in metrics:
            out = work / "compare" / f"{a}_vs_{b}"
            result["paired"][f"{a} - {b}"] = paired_differences(
                metrics[a], metrics[b], dirs[a], dirs[b], volume_datalist, out, n_bootstrap, seed
            )
    (work / "review.json").write_text(json.dumps(result, indent=1))
    return result


def ci_text(c: dict | None, d: int = 3) -> str:
    """A figure with its 95% CI: ``0.500 [0.250, 0.750]``; ``-`` when undefined."""
    if not c or c.get("value") is None:
        return "-"
    lo, hi = c.get("ci_low"), c.get("ci_high")
    return f"{c['value']:.{d}f}" + ("" if lo is None else f" [{lo:.{d}f}, {hi:.{d}f}]")


def summary_lines(r: dict) -> list[str]:
    """The review's figures as short lines (the ablation command prints them)."""
    lines = [
        f"simulated review: K {r['k']} of {r['training_studies']} training studies, {r['epochs']} epochs from the start model, "
        f"random seed {r['random_seed']}, ranking threshold {r['threshold']:.3f} (logit, chosen on validation)"
    ]
    for arm, f in {"start": r["start"], **r["arms"]}.items():
        lines.append(
            f"  {arm:10s} sensitivity >= 10 mm {ci_text(f['sensitivity_ge10'])} ({f['found_ge10']}/{f['lesions_ge10']})  "
            f"FP/volume {ci_text(f['fp_per_volume'], 2)}  CPM {ci_text(f['cpm'])}"
        )
    for name, p in r["paired"].items():
        lines.append(
            f"  {name:18s} sensitivity >= 10 mm {ci_text(p['sensitivity_ge10'])} P {p['sensitivity_ge10']['p_value']:.3f}  "
            f"FP/volume {ci_text(p['fp_per_volume'], 2)}  CPM {ci_text(p['cpm'])}"
        )
    return lines
