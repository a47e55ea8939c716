"""The replicate experiment: arms (a) mined only, (b) self-trained, (c) oracle, (c') oracle inside the size rule,
and the untrained floor, over data seeds x training seeds; pooled with spreads and a two-level bootstrap.

Why in bundle/demo/: it needs the simulator's truth (oracle boxes, the fully labelled test cohort). One data
seed's export, de-identification and mining are shared by its training seeds; each training seed trains every
arm. Results land in `<work_dir>/replicates.json` and the results page (bundle/demo/replicate_page.py).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bundle.datalist.rules import SizeRule
from bundle.datalist.schema import read_datalist, write_datalist
from bundle.demo.replicate_page import write_page
from bundle.demo.run import DemoOptions, Paths, deidentify, evaluate, make_data, mine, save_untrained
from bundle.metrics.bootstrap import patient_counts
from bundle.metrics.breakdown import long_axis_mm
from bundle.metrics.replicates import mean_sd, two_level_difference
from bundle.metrics.report import patient_pictures, score_model
from bundle.paths import ROOT
from bundle.selftrain.loop import Schedule, run_self_training
from bundle.selftrain.pseudo import PseudoRules
from bundle.steps import provenance
from bundle.steps.runner import bundle_run

ARMS = ("mined_only", "self_trained", "oracle", "oracle_size_rule", "untrained")
METRICS = ("f1", "precision", "recall")


@dataclass
class ReplicatePlan:
    """What one replicate run does. The reporting data seeds were never used in development (docs/results_key_slices.md)."""

    data_seeds: list[int] = field(default_factory=lambda: [2027, 2028, 2029])
    train_seeds: list[int] = field(default_factory=lambda: [0, 1])
    size: str = "default"
    epochs: int = 15  # train.yaml's default
    rounds: int = 1
    score_threshold: float | str = PseudoRules.score_threshold
    target_precision: float = Schedule.target_precision
    n_bootstrap: int = 1000
    iou_threshold: float = 0.5  # the evaluation's matching (configs/evaluate.yaml)
    criterion: str = "iou"
    size_rule: SizeRule = field(default_factory=SizeRule)
    train_overrides: dict = field(default_factory=dict)  # any train.yaml key for every training (tests: tiny patches)
    pictures: int = 3  # test patients drawn for the results page (first replicate, self-trained arm)

    def __post_init__(self) -> None:
        if isinstance(self.size_rule, dict):  # from a config override (--plan#size_rule "{'min_long_mm': 5}")
            self.size_rule = SizeRule(**self.size_rule)


def restrict_to_size_rule(oracle: str, out: Path, rule: SizeRule) -> str:
    """(c'): the oracle's training boxes whose long side (mm) is inside the mining size rule; other sections unchanged."""
    doc = read_datalist(oracle)
    for it in doc["training"]:
        mm = long_axis_mm(np.asarray(it["box"], dtype=float).reshape(-1, 4), it["spacing"][:2]) if it["box"] else []
        keep = [i for i, v in enumerate(mm) if rule.contains(float(v))]
        for key in ("box", "label", "box_source"):
            if key in it:
                it[key] = [it[key][i] for i in keep]
    return str(write_datalist(doc, out))


def _train(datalist: str, out: Path, log: Path, overrides: dict) -> Path:
    bundle_run(
        "configs/train.yaml",
        ROOT,
        log,
        bundle_root=ROOT,
        data_list_file_path=datalist,
        dataset_dir=Path(datalist).parent,
        ckpt_dir=out / "models",
        output_dir=out / "train_eval",
        **{k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in overrides.items()},
    )
    return out / "models" / "model.pt"


def train_arms(plan: ReplicatePlan, exp: dict, rdir: Path, seed: int) -> tuple[dict[str, Path], dict]:
    """Every arm's checkpoint for one training seed; and the self-training state."""
    log = rdir / "replicate.log"
    over = plan.train_overrides | {"epochs": plan.epochs, "seed": seed}
    st = run_self_training(
        str(rdir / "selftrain"),
        exp["mined"],
        PseudoRules(score_threshold=plan.score_threshold),
        Schedule(rounds=plan.rounds, target_precision=plan.target_precision),
        truth=exp["truth_map"],
        train_overrides=over,
    )
    c_prime = restrict_to_size_rule(exp["oracle"], Path(exp["oracle"]).with_name("oracle_size_rule.json"), plan.size_rule)
    models = {
        "mined_only": Path(st["rounds"][0]["dir"]) / "models" / "model.pt",
        "self_trained": Path(st["best_model"]),
        "oracle": _train(exp["oracle"], rdir / "oracle", log, over),
        "oracle_size_rule": _train(c_prime, rdir / "oracle_size_rule", log, over),
        "untrained": rdir / "untrained" / "model.pt",
    }
    save_untrained(models["untrained"], seed)
    return models, {"best_round": st["best_round"], "stopped": st["stopped"]}


def score_arms(plan: ReplicatePlan, models: dict[str, Path], datalist: str, rdir: Path, seed: int) -> dict[str, dict]:
    """Each arm on the held-out test cohort: its metrics.json figures and per-patient counts at its validation threshold."""
    out = {}
    for arm, ckpt in models.items():
        edir = rdir / "eval" / arm
        m = evaluate(arm, ckpt, datalist, edir, rdir / "replicate.log", seed)
        s = score_model(datalist, edir / "predictions_validation.json", edir / "predictions_test.json", plan.criterion, plan.iou_threshold)
        patients, counts = patient_counts(s.matches, s.patients, s.threshold)
        out[arm] = {
            "test": m["test"],
            "test_size_rule": m.get("test_size_rule", {}),
            "test_mAP": m["test_mAP"],
            "cpm_per_patient": m.get("test_froc_per_patient", {}).get("cpm"),
            "operating_threshold": m["operating_threshold"],
            "patients": patients,
            "counts": counts.tolist(),
        }
    return out


def pool(plan: ReplicatePlan, reps: list[dict]) -> dict:
    """Mean and SD per arm and metric; (b) - (a) and (c) - (a) with the two-level bootstrap."""
    pooled = {arm: {k: mean_sd([r["arms"][arm]["test"][k] for r in reps]) for k in METRICS} for arm in ARMS}
    for arm in ARMS:
        inside = [r["arms"][arm]["test_size_rule"].get("f1") for r in reps]
        if all(v is not None for v in inside):
            pooled[arm]["f1_size_rule"] = mean_sd([v["value"] if isinstance(v, dict) else v for v in inside])
        pooled[arm]["mAP"] = mean_sd([r["arms"][arm]["test_mAP"] for r in reps])

    def diff(better: str) -> dict:
        return two_level_difference(
            [np.asarray(r["arms"][better]["counts"]) for r in reps],
            [np.asarray(r["arms"]["mined_only"]["counts"]) for r in reps],
            plan.n_bootstrap,
            seed=0,
        )

    return {"arms": pooled, "b_vs_a": diff("self_trained"), "c_vs_a": diff("oracle"), "c_prime_vs_a": diff("oracle_size_rule")}


def run(plan: ReplicatePlan, work_dir: str, results: str | None = None) -> dict:
    """Every replicate (resumable: a finished replicate's replicate.json is reused), then the pooled figures and the page."""
    work = Path(work_dir) if Path(work_dir).is_absolute() else ROOT / work_dir
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    reps = []
    for ds in plan.data_seeds:
        # unread_share 0: the export docs/results_key_slices.md was written from (every study with lesions measured)
        o = DemoOptions(
            size=plan.size, seed=ds, work=str(work / f"data{ds}" / "prep"), data=str(work / f"data{ds}" / "data"), unread_share=0.0
        )
        p = Paths.of(o)
        exp = None
        for ts in plan.train_seeds:
            rdir = work / f"data{ds}" / f"train{ts}"
            done = rdir / "replicate.json"
            code = {"git": provenance.git_state(), "plan": asdict(plan)}  # a replicate written by other code or plan runs again
            if done.is_file() and json.loads(done.read_text()).get("code") == code:
                reps.append(json.loads(done.read_text()))
                continue
            if exp is None:
                shutil.rmtree(p.work, ignore_errors=True)
                p.work.mkdir(parents=True)
                make_data(o, p)
                deidentify(p, ds)
                _, exp = mine(p)
            rdir.mkdir(parents=True, exist_ok=True)
            t = time.time()
            models, st = train_arms(plan, exp, rdir, ts)
            rep = {"data_seed": ds, "train_seed": ts, "datalist": exp["mined"], "self_training": st}
            rep["arms"] = score_arms(plan, models, exp["mined"], rdir, ts)
            rep["seconds"] = round(time.time() - t, 1)
            rep["code"] = code
            done.write_text(json.dumps(rep, indent=1))
            reps.append(rep)
    summary = {
        "plan": asdict(plan),
        "defaults": asdict(ReplicatePlan()),
        "replicates": reps,
        "pooled": pool(plan, reps),
        "seconds": round(time.time() - t0, 1),
    }
    (work / "replicates.json").write_text(json.dumps(summary, indent=1))
    if results:
        page = ROOT / results if not Path(results).is_absolute() else Path(results)
        write_page(summary, page, _rel(work / "replicates.json", page.parent), pictures(plan, reps[0], work, page))
    return summary


def _rel(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(path, start)


def pictures(plan: ReplicatePlan, rep: dict, work: Path, page: Path) -> list[str]:
    """PNGs of a few test patients (self-trained arm, its operating point), next to the results page; paths relative to it."""
    if plan.pictures <= 0:
        return []
    arm = rep["arms"]["self_trained"]
    edir = work / f"data{rep['data_seed']}" / f"train{rep['train_seed']}" / "eval" / "self_trained"
    out = page.parent / f"{page.stem}_pictures"
    shown = patient_pictures(
        rep["datalist"], str(edir / "predictions_test.json"), arm["operating_threshold"], str(out), arm["patients"][: plan.pictures]
    )
    return [_rel(Path(p["path"]), page.parent) for p in shown]
