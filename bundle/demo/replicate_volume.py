"""The volume-level replicate (issue 25): the teacher against its self-trained model on whole test volumes, over
data seeds x training seeds, with the two-level bootstrap; the key-slice comparison of the same two models beside it.

Per replicate: one mean-teacher self-training on the mined series (bundle/selftrain/loop.py, rounds and checkpoints
kept by validation sensitivity >= 10 mm at the shipped false-box limits); the *teacher* is what round 0 kept, the
*self-trained* model what the loop kept over all rounds. When the loop kept round 0, the two are the same model:
that row is marked identical and adds a difference of exactly 0 (it is never shown as separate evidence).
Why in bundle/demo/: it needs the simulator's truth (fully labelled validation and test volumes).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bundle.demo.ablation import _rel, evaluate_volumes, prepare
from bundle.demo.replicate_volume_page import page, row_line
from bundle.demo.run import evaluate
from bundle.demo.volume_steps import add_unlabelled_truth
from bundle.metrics.bootstrap import patient_counts
from bundle.metrics.replicates import mean_sd, two_level_difference
from bundle.metrics.report import score_model
from bundle.metrics.volume import COLUMNS, score_volumes, volume_counts
from bundle.paths import ROOT
from bundle.selftrain.loop import Schedule, run_self_training
from bundle.selftrain.pseudo import PseudoRules
from bundle.steps import provenance

MODELS = ("teacher", "self_trained")
ARMS = ("self_trained", "score_weighted", "dynamic_count", "temporal_consistency")


@dataclass
class VolumeReplicatePlan:
    """What one volume-level replicate run does; the data seeds are the reporting seeds of docs/results_key_slices.md."""

    data_seeds: list[int] = field(default_factory=lambda: [2027, 2028, 2029])
    train_seeds: list[int] = field(default_factory=lambda: [0, 1])
    size: str = "default"
    epochs: int = 15
    rounds: int = 2
    target_precision: float = 0.8
    ignore_floor: float = 0.3
    max_pseudo_per_series: int = 50
    ema_decay: float | str = "auto"  # bundle/selftrain/ema.py auto_decay
    dynamic_count: bool = False
    temporal_consistency: bool = False
    context_slices: int = 1  # 1: the key-slice comparison can score the same models (2.5D needs whole volumes)
    unlabelled: bool = True  # self-training also labels the series nobody measured (the demo export's unread studies)
    # self_trained: the mean teacher; the others add one option against confirmation bias each, from the same round 0
    arms: list[str] = field(default_factory=lambda: ["self_trained", "score_weighted", "dynamic_count", "temporal_consistency"])

    def __post_init__(self) -> None:
        unknown = sorted(set(self.arms) - set(ARMS))
        if unknown or "self_trained" not in self.arms or self.arms[0] != "self_trained":
            raise ValueError(f"arms {self.arms}: start with 'self_trained', then any of {ARMS[1:]} (unknown: {unknown})")

    n_bootstrap: int = 1000
    train_overrides: dict = field(default_factory=dict)


def patient_volume_counts(volume_datalist: str, predictions: str, threshold: float) -> tuple[list[str], np.ndarray]:
    """Per test patient (sorted ids): (found >= 10 mm, false boxes, missed >= 10 mm) at the threshold.

    Why this shape: it is the (TP, FP, FN) the two-level bootstrap takes, so its 'recall' is the sensitivity for
    lesions >= 10 mm and the patients are resampled as whole patients.
    """
    vols = score_volumes(volume_datalist, predictions, "test")
    counts = volume_counts(vols, threshold)
    col = {c: i for i, c in enumerate(COLUMNS)}
    ids = sorted({v.patient for v in vols})
    row = {p: i for i, p in enumerate(ids)}
    out = np.zeros((len(ids), 3), dtype=np.int64)
    for v, c in zip(vols, counts):
        tp, n = int(c[col["tp_ge10"]]), int(c[col["n_ge10"]])
        out[row[v.patient]] += (tp, int(c[col["fp"]]), n - tp)
    return ids, out


def _volume_figures(m: dict) -> dict:
    a = m["test"]["at_operating_point"]
    return {
        "sensitivity_ge10": a.get("sensitivity >=10 mm"),
        "fp_per_volume": a.get("fp_per_volume"),
        "fp_per_normal_volume": a.get("fp_per_normal_volume"),
        "cpm": m["test"]["froc"]["cpm"],
        "threshold": m["operating_point"]["score_threshold"],
    }


def _arm_schedule(plan: VolumeReplicatePlan, arm: str, exp: dict, unlabelled: str | None) -> tuple[Schedule, dict]:
    """The schedule and rule changes of one arm: the base mean teacher plus the arm's option against confirmation bias."""
    schedule = Schedule(
        rounds=plan.rounds,
        target_precision=plan.target_precision,
        series=True,
        mean_teacher=True,
        ema_decay=plan.ema_decay,
        select="volume",
        volume_datalist=exp["volume_datalist"],
        dynamic_count=plan.dynamic_count or arm == "dynamic_count",
        temporal_consistency=plan.temporal_consistency or arm == "temporal_consistency",
        unlabelled_datalist=unlabelled,
    )
    return schedule, {"score_weighted": arm == "score_weighted"}


def _from_round0(base_state: dict, work: Path) -> None:
    """An arm's work folder that resumes after the base run's round 0: every arm starts from the same teacher."""
    if (work / "state.json").is_file():
        return
    work.mkdir(parents=True, exist_ok=True)
    state = {"rounds": base_state["rounds"][:1], "best_round": 0}
    (work / "state.json").write_text(json.dumps(state, indent=2))


def run_replicate(plan: VolumeReplicatePlan, exp: dict, rdir: Path, data_seed: int, train_seed: int) -> dict:
    """One (data seed, training seed): self-training per arm (all from one round 0), then every kept model per volume and
    on key slices; the teacher is round 0's kept checkpoint."""
    data = Path(exp["volume_datalist"]).parent.parent  # <data>/demo/datalist_volume.json
    unl_path = data / "mined" / "datalist_unlabelled.json"
    unlabelled = str(unl_path) if plan.unlabelled and unl_path.is_file() else None
    if unlabelled and exp.get("series_truth_map"):
        add_unlabelled_truth(data / "demo", unl_path, Path(exp["series_truth_map"]), data / "secure" / "linkage.csv")
    over = plan.train_overrides | {"epochs": plan.epochs, "seed": train_seed, "ignore_reach": True, "context_slices": plan.context_slices}
    states: dict[str, dict] = {}
    for arm in plan.arms:
        schedule, rule_over = _arm_schedule(plan, arm, exp, unlabelled)
        work = rdir / ("selftrain" if arm == "self_trained" else f"selftrain_{arm}")
        if arm != "self_trained":
            _from_round0(states["self_trained"], work)
        rules = PseudoRules(score_threshold="auto", ignore_floor=plan.ignore_floor, max_per_image=plan.max_pseudo_per_series, **rule_over)
        states[arm] = run_self_training(
            str(work), exp["series_mined"], rules, schedule, truth=exp.get("series_truth_map"), train_overrides=over
        )
    r0 = states["self_trained"]["rounds"][0]
    models = {"teacher": Path(r0["model"])} | {arm: Path(st["best_model"]) for arm, st in states.items()}
    base = states["self_trained"]
    out: dict = {
        "data_seed": data_seed,
        "train_seed": train_seed,
        "kept_round": base["best"]["round"],
        "kept_candidate": base["best"]["candidate"],
        "teacher_candidate": r0["kept"],
        "identical_to_teacher": base["best"]["round"] == 0,
        "stopped": base["stopped"],
        "arms": {
            arm: {
                "kept_round": st["best"]["round"],
                "kept_candidate": st["best"]["candidate"],
                "identical_to_teacher": st["best"]["round"] == 0,
            }
            for arm, st in states.items()
        },
        "pseudo": {arm: [{"round": e["round"], **e.get("pseudo_quality", {})} for e in st["rounds"][1:]] for arm, st in states.items()},
        "models": {k: str(v) for k, v in models.items()},
        "volume": {},
        "key_slices": {},
    }
    for name, ckpt in models.items():
        if name != "teacher" and out["arms"][name]["identical_to_teacher"]:  # the same model: evaluated once, shown twice
            out["volume"][name] = out["volume"]["teacher"]
            if "teacher" in out["key_slices"]:
                out["key_slices"][name] = out["key_slices"]["teacher"]
            continue
        _evaluate_model(plan, exp, rdir, out, name, ckpt)
    add_last_round(plan, exp, rdir, out)
    return out


def _evaluate_model(plan: VolumeReplicatePlan, exp: dict, rdir: Path, out: dict, name: str, ckpt: Path) -> None:
    """One model on the test volumes (at its own validation operating point) and, for 2D models, on key slices."""
    log, vdl, seed = rdir / "replicate.log", exp["volume_datalist"], out["train_seed"]
    edir = rdir / "eval_volume" / name
    m = evaluate_volumes(ckpt.parent, Path(vdl), edir, log, seed, {}, plan.n_bootstrap)  # input: the model's own
    _, counts = patient_volume_counts(vdl, str(edir / "predictions_volume_test.json"), m["operating_point"]["score_threshold"])
    out["volume"][name] = _volume_figures(m) | {"counts": counts.tolist()}
    if plan.context_slices == 1:
        kdir = rdir / "eval_key_slices" / name
        km = evaluate(name, ckpt, exp["mined"], kdir, log, seed)
        s = score_model(exp["mined"], kdir / "predictions_validation.json", kdir / "predictions_test.json", "iou", 0.5)
        _, kc = patient_counts(s.matches, s.patients, s.threshold)
        out["key_slices"][name] = {"f1": km["test"]["f1"], "counts": kc.tolist()}


def add_last_round(plan: VolumeReplicatePlan, exp: dict, rdir: Path, out: dict) -> bool:
    """The mean teacher's last trained round on test, kept or not (``last_round``); True when it was added now.

    Why: when validation keeps round 0 the self-trained row *is* the teacher, so the replicate says nothing about
    what a round of self-training did. This row shows it. It is never used to choose anything: each round's
    candidate (student or EMA teacher) was already chosen on validation, and the shipped model stays what the loop kept.
    """
    if "last_round" in out["volume"]:
        return False
    state = json.loads((rdir / "selftrain" / "state.json").read_text())
    last = state["rounds"][-1]
    if last["round"] == 0:
        return False
    out["last_round"] = {"round": last["round"], "candidate": last.get("kept", "student"), "kept": out["kept_round"] == last["round"]}
    if out["last_round"]["kept"]:  # the kept model: evaluated already
        out["volume"]["last_round"] = out["volume"]["self_trained"]
        if "self_trained" in out["key_slices"]:
            out["key_slices"]["last_round"] = out["key_slices"]["self_trained"]
    else:
        _evaluate_model(plan, exp, rdir, out, "last_round", Path(last["model"]))
    return True


def pool(plan: VolumeReplicatePlan, reps: list[dict]) -> dict:
    """Mean ± SD per model; each arm - teacher with the two-level bootstrap, per volume and on key slices."""
    arms = [a for a in plan.arms if all(a in r["volume"] for r in reps)]
    out: dict = {"volume": {}, "key_slices": {}, "arms": {}}
    for name in ["teacher", *arms]:
        out["volume"][name] = {k: mean_sd([r["volume"][name][k] for r in reps]) for k in ("sensitivity_ge10", "fp_per_volume", "cpm")}
    va = [np.asarray(r["volume"]["teacher"]["counts"]) for r in reps]
    keyed = all(r["key_slices"] for r in reps)
    for arm in arms:
        vb = [np.asarray(r["volume"][arm]["counts"]) for r in reps]
        a = {
            "volume_vs_teacher": two_level_difference(vb, va, plan.n_bootstrap, seed=0, metric="recall"),
            "cpm_difference": mean_sd([r["volume"][arm]["cpm"] - r["volume"]["teacher"]["cpm"] for r in reps]),
            "identical_rows": sum(
                bool(r.get("arms", {}).get(arm, {}).get("identical_to_teacher", r["identical_to_teacher"])) for r in reps
            ),
        }
        if keyed:
            ka = [np.asarray(r["key_slices"]["teacher"]["counts"]) for r in reps]
            kb = [np.asarray(r["key_slices"][arm]["counts"]) for r in reps]
            a["key_slices_vs_teacher"] = two_level_difference(kb, ka, plan.n_bootstrap, seed=0, metric="f1")
        out["arms"][arm] = a
    if keyed:
        for name in ["teacher", *arms]:
            out["key_slices"][name] = {"f1": mean_sd([r["key_slices"][name]["f1"] for r in reps])}
    base = out["arms"].get("self_trained", {})  # the headline: the base mean teacher against its teacher
    out["volume_b_vs_a"] = base.get("volume_vs_teacher")
    out["volume_cpm_difference"] = base.get("cpm_difference")
    if "key_slices_vs_teacher" in base:
        out["key_slices_b_vs_a"] = base["key_slices_vs_teacher"]
    if all("last_round" in r["volume"] for r in reps):  # what the round did, kept or not (add_last_round)
        lb = [np.asarray(r["volume"]["last_round"]["counts"]) for r in reps]
        out["last_round"] = {
            "volume_vs_teacher": two_level_difference(lb, va, plan.n_bootstrap, seed=0, metric="recall"),
            "cpm_difference": mean_sd([r["volume"]["last_round"]["cpm"] - r["volume"]["teacher"]["cpm"] for r in reps]),
            "fp_per_volume": mean_sd([r["volume"]["last_round"]["fp_per_volume"] for r in reps]),
        }
        if keyed:
            ka = [np.asarray(r["key_slices"]["teacher"]["counts"]) for r in reps]
            kb = [np.asarray(r["key_slices"]["last_round"]["counts"]) for r in reps]
            out["last_round"]["key_slices_vs_teacher"] = two_level_difference(kb, ka, plan.n_bootstrap, seed=0, metric="f1")
    out["identical_rows"] = sum(r["identical_to_teacher"] for r in reps)
    out["replicates"] = len(reps)
    return out


def run(plan: VolumeReplicatePlan, work_dir: str, results: str | None = None) -> dict:
    """Every replicate, pooled, and the page. Resumable: a finished replicate's replicate_volume.json is reused when
    written by the same code and plan; otherwise it runs again, its self-training resuming from its state.json (rounds
    are not retrained) and its evaluations reused only where stamped with the same code (bundle/steps/provenance.py)."""
    work = Path(work_dir) if Path(work_dir).is_absolute() else ROOT / work_dir
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    reps = []
    for ds in plan.data_seeds:
        exp = None
        for ts in plan.train_seeds:
            rdir = work / f"data{ds}" / f"train{ts}"
            done = rdir / "replicate_volume.json"
            code = {"git": provenance.git_state(), "plan": asdict(plan)}  # other code or another plan (an arm added): rerun
            if done.is_file() and json.loads(done.read_text()).get("code") == code:
                reps.append(json.loads(done.read_text()))
                continue
            exp = exp or prepare(plan, work, ds)  # type: ignore[arg-type]  # uses .size only
            rdir.mkdir(parents=True, exist_ok=True)
            t = time.time()
            rep = run_replicate(plan, exp, rdir, ds, ts)
            rep["seconds"], rep["code"] = round(time.time() - t, 1), code
            done.write_text(json.dumps(rep, indent=1))
            reps.append(rep)
            print(row_line(rep), flush=True)
    summary = {"plan": asdict(plan), "replicates": reps, "pooled": pool(plan, reps), "seconds": round(time.time() - t0, 1)}
    summary |= {"defaults": asdict(VolumeReplicatePlan()), "where": {"work_dir": _rel(work), "results": results and _rel(Path(results))}}
    (work / "replicates_volume.json").write_text(json.dumps(summary, indent=1))
    if results:
        path = ROOT / results if not Path(results).is_absolute() else Path(results)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page(summary, _rel(work / "replicates_volume.json")))
    return summary
