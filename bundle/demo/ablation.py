"""The whole-volume ablation (issue 13): which training change moves the volume-level figures, over replicates.

Arms, each trained on the same mined data of a data seed with the same training seed and evaluated the way
the model is used (configs/evaluate_volume.yaml: every slice of every test volume, 3D boxes, the operating
point chosen on validation volumes):
- ``mined_only``: key slices only (configs/train.yaml on datalist.json), the seed study's setting;
- ``whole_series``: + every slice of the mined series (configs/train_series.yaml), unmeasured slices as background;
- ``ignore``: + a measured lesion's reach on neighbouring slices as ignore regions;
- ``lopsided`` / ``hard_pool``: ``ignore`` + the lopsided bootstrap loss / a 5x larger hard-negative pool;
- ``context``: ``ignore`` + 2.5D (3 slices as channels);
- ``focal``: ``context`` with the focal loss over every anchor instead of BCE on hard-negative samples;
- ``thick_slices`` / ``thick_resample`` / ``context5``: ``context`` with stronger thick-slice partial volume / slabs
  averaged to 4-6.4 mm and read back instead of the z blur / a 5-slice stack;
- ``oracle``: ``context`` trained on complete boxes (every lesion of the same series): the labels' ceiling, never chosen;
- ``mined_only_36ep``, ``ignore_36ep``, ``context_36ep``, ``context_60ep``: those arms with 36 (60) epochs, the
  training budget rather than a part (shown, never chosen as a combination);
- ``self_trained`` / ``self_trained_2d``: ``context`` / ``ignore`` as round 0 of the demo's mean-teacher self-training over
  every slice of the training series (confident -> pseudo-box, uncertain band and rejected -> ignore region); the round
  and candidate the loop keeps by validation sensitivity >= 10 mm on whole volumes, never the last one by default.
With ``review_k`` > 0, the simulated review (issue 28, bundle/activelearning/simulated_review.py): from the model of
``review_from``, K training studies reviewed by the demo truth, the most uncertain against K random ones against none.
Why in bundle/demo/: it needs the simulator's truth (fully labelled validation and test volumes).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bundle.activelearning.simulated_review import ReviewPlan, run_review
from bundle.demo.ablation_page import pool, write_page
from bundle.demo.experiment import build_series
from bundle.demo.run import DemoOptions, Paths, deidentify, make_data, mine
from bundle.demo.volume_steps import series_schedule
from bundle.demo.volumes import write_volume_datalist
from bundle.paths import ROOT
from bundle.selftrain.loop import run_self_training
from bundle.selftrain.pseudo import PseudoRules
from bundle.steps import provenance
from bundle.steps.runner import bundle_run

SERIES = ["configs/train.yaml", "configs/train_series.yaml"]
THICKNESS = {
    "_target_": "bundle.transforms.thickness.RandSliceThicknessd",
    "keys": "image",
    "prob": "@protocol_aug_prob",
    "factor": [1.0, 1.6],
}
# arm -> (training configs, experiment datalist, train.yaml overrides)
ARMS: dict[str, tuple[list[str], str, dict]] = {
    "mined_only": (["configs/train.yaml"], "mined", {}),
    "whole_series": (SERIES, "series_mined", {"ignore_reach": False}),
    "ignore": (SERIES, "series_mined", {"ignore_reach": True}),
    "lopsided": (SERIES, "series_mined", {"ignore_reach": True, "cls_loss": "lopsided_bootstrap"}),
    "hard_pool": (SERIES, "series_mined", {"ignore_reach": True, "hard_negative_pool_size": 100}),
    "context": (SERIES, "series_mined", {"ignore_reach": True, "context_slices": 3}),
    "focal": (SERIES, "series_mined", {"ignore_reach": True, "context_slices": 3, "cls_loss": "focal", "hard_negative_pool_size": 0}),
    # thick-slice partial volume drawn more often and up to thicker slices (the 6 mm variant's drop; docs/training.md)
    "thick_slices": (
        SERIES,
        "series_mined",
        {"ignore_reach": True, "context_slices": 3, "partial_volume#prob": 0.5, "partial_volume#sigma_z": [0.3, 1.2]},
    ),
    # thicker slices simulated as stored and read back (slab averages, bundle/transforms/thickness.py) instead of the z blur
    "thick_resample": (SERIES, "series_mined", {"ignore_reach": True, "context_slices": 3, "partial_volume": THICKNESS}),
    # a wider 2.5D stack: 2 neighbours each side (8 mm on the demo's 4 mm grid), for lesions spanning 3-5 slices
    "context5": (SERIES, "series_mined", {"ignore_reach": True, "context_slices": 5}),
    # the ceiling, not a part: the same recipe on every lesion of the same training series boxed (the demo's (c) on whole
    # volumes); what it still misses, complete labels did not teach (the network's share of the gap). Never chosen.
    "oracle": (SERIES, "series_oracle", {"ignore_reach": False, "context_slices": 3}),  # every cross-section boxed: nothing to ignore
    # the training budget, not a part: how far the chosen combination gets with 3x the epochs (never chosen by the page)
    "ignore_36ep": (SERIES, "series_mined", {"ignore_reach": True, "epochs": 36}),
    "mined_only_36ep": (["configs/train.yaml"], "mined", {"epochs": 36}),
    "context_36ep": (SERIES, "series_mined", {"ignore_reach": True, "context_slices": 3, "epochs": 36}),
    "context_60ep": (SERIES, "series_mined", {"ignore_reach": True, "context_slices": 3, "epochs": 60}),
}
# self-trained arm -> its teacher arm (round 0 of its self-training)
TEACHERS = {"self_trained": "context", "self_trained_2d": "ignore", "self_trained_36ep": "context_36ep"}
INFERENCE_KEYS = ("context_slices", "val_patch_size")


@dataclass
class AblationPlan:
    """What one ablation run does; the data seeds are the replicate experiment's reporting seeds (docs/results.md)."""

    data_seeds: list[int] = field(default_factory=lambda: [2027, 2028])
    train_seeds: list[int] = field(default_factory=lambda: [0])
    size: str = "default"
    epochs: int = 15
    arms: list[str] = field(
        default_factory=lambda: [
            "mined_only",
            "whole_series",
            "ignore",
            "lopsided",
            "hard_pool",
            "context",
            "focal",
            "self_trained_2d",
            "mined_only_36ep",
            "ignore_36ep",
            "context_36ep",
            "self_trained_36ep",
            "self_trained",  # last: linking's variants (min_slices, extent) are evaluated on it
        ]
    )
    rounds: int = 1
    target_precision: float = 0.8  # the teacher's validation precision (on every validation slice) for a pseudo-box
    ignore_floor: float = 0.3  # teacher scores in [ignore_floor, pseudo threshold) become ignore regions
    max_pseudo_per_series: int = 50
    link_min_slices: list[int] = field(default_factory=lambda: [1, 2])  # linking option evaluated on the last arm
    # a track's in-plane extent (bundle/inference/tracks.py) scored on the last arm besides the configs' own
    link_extents: list[str] = field(default_factory=lambda: ["union"])
    n_bootstrap: int = 1000
    train_overrides: dict = field(default_factory=dict)
    # the simulated review (issue 28): K studies reviewed (0: off), fine-tuning epochs of every arm, the random arm's seed;
    # review_from: the model trained on mined labels the arms start from, an arm of ARMS, or a model folder
    # ("{data_seed}" and "{train_seed}" filled in, e.g. an earlier run's round-0 teacher)
    review_k: int = 0
    review_epochs: int = 5
    review_seed: int = 0
    review_from: str = "ignore"


def _cli(overrides: dict) -> dict:
    return {k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in overrides.items()}


def evaluate_volumes(ckpt_dir: Path, volume_datalist: Path, out: Path, log: Path, seed: int, over: dict, n_bootstrap: int) -> dict:
    """configs/evaluate_volume.yaml for one model; its metrics_volume.json, stamped (bundle.steps.provenance).

    An arm is compared, not shipped: no operating_point.json is written beside it (a point that keeps nothing would
    be refused, and the ablation goes on). An arm already evaluated by the same code, configs, settings and model
    is read back (an interrupted replicate resumes per arm); any other cached result runs again.
    """
    m = provenance.run_or_reuse(
        ["configs/inference_volume.yaml", "configs/evaluate_volume.yaml"],
        out,
        "metrics_volume.json",
        log,
        Path(ckpt_dir) / "model.pt",
        bundle_root=ROOT,
        ckpt_dir=ckpt_dir,
        volume_datalist_file=volume_datalist,
        output_dir=out,
        seed=seed,
        n_bootstrap=n_bootstrap,
        model_name=out.name,
        write_operating_point=False,
        **_cli({k: v for k, v in over.items() if k in INFERENCE_KEYS or k.startswith("link_")}),
    )
    if (out / "metrics_protocols.json").is_file():  # the test volumes as other protocols store them (issue 24)
        m["protocols"] = json.loads((out / "metrics_protocols.json").read_text())
    return m


def train_arm(arm: str, exp: dict, rdir: Path, over: dict) -> Path:
    configs, datalist, arm_over = ARMS[arm]
    args = {
        "bundle_root": ROOT,
        "data_list_file_path": exp[datalist],
        "dataset_dir": Path(exp[datalist]).parent,
        "ckpt_dir": rdir / arm / "models",
        "output_dir": rdir / arm / "train_eval",
        **_cli(over | arm_over),
    }
    done, now = rdir / arm / "trained", provenance.stamp(configs, args)
    if done.is_file() and done.read_text().strip() and json.loads(done.read_text()) == now:
        return rdir / arm / "models"  # finished before an interruption, by the same code and settings
    bundle_run(configs, ROOT, rdir / "ablation.log", **args)
    done.write_text(json.dumps(now, indent=1))
    return rdir / arm / "models"


def self_train_arm(plan: AblationPlan, exp: dict, rdir: Path, over: dict, teacher: str) -> dict:
    """Round 0 is the teacher arm (same settings, same seed); the round the loop keeps is the self-trained model.

    The demo's recipe (bundle/demo/volume_steps.py series_schedule): mean teacher, rounds and candidates kept by
    validation sensitivity >= 10 mm on whole volumes. Until 0.8.2 this arm replaced the teacher by its student and kept
    rounds by key-slice F1, a recipe the demo no longer ships. Why the kept round and not the last: the loop chooses it
    on validation; the last round is what a rule that never looks at a student's validation figures would ship."""
    st = run_self_training(
        str(rdir / ("selftrain" if teacher == "context" else f"selftrain_{teacher}")),
        exp["series_mined"],
        PseudoRules(score_threshold="auto", ignore_floor=plan.ignore_floor, max_per_image=plan.max_pseudo_per_series),
        series_schedule(plan.rounds, plan.target_precision, exp["volume_datalist"]),
        truth=exp.get("series_truth_map"),
        train_overrides=over | ARMS[teacher][2],
    )
    first = st["rounds"][0]  # round 0's kept candidate (its student or its EMA teacher), as the demo's (b) round 0
    return {
        "teacher": Path(first.get("model") or Path(first["dir"]) / "models" / "model.pt").parent,
        "kept": Path(st["best_model"]).parent,
        "kept_round": st["best_round"],
    }


def arm_overrides(arm: str) -> dict:
    """An arm's training overrides; a self-trained arm's are its teacher's."""
    return ARMS[TEACHERS.get(arm, arm)][2]


def train_all(plan: AblationPlan, exp: dict, rdir: Path, over: dict) -> tuple[dict[str, Path], dict[str, int]]:
    """Every arm's model; a teacher arm not trained on its own is its self-training's round 0 (one training saved)."""
    models: dict[str, Path] = {}
    kept: dict[str, int] = {}
    student_of = {TEACHERS[a]: a for a in plan.arms if a in TEACHERS}
    for arm in plan.arms:
        if arm in models:
            continue
        student = arm if arm in TEACHERS else student_of.get(arm)
        if student is None or (arm not in TEACHERS and (rdir / arm / "trained").is_file()):
            models[arm] = train_arm(arm, exp, rdir, over)
            continue
        st = self_train_arm(plan, exp, rdir, over, TEACHERS[student])
        models.setdefault(TEACHERS[student], st["teacher"])
        models[student], kept[student] = st["kept"], st["kept_round"]
    return models, kept


def prepare(plan: AblationPlan, work: Path, seed: int) -> dict:
    """One data seed's demo data, export, de-identification, mining, experiment datalists (reused when present)."""
    o = DemoOptions(size=plan.size, seed=seed, work=str(work / f"data{seed}" / "prep"), data=str(work / f"data{seed}" / "data"))
    p = Paths.of(o)
    done = p.work / "experiment.json"
    if done.is_file():
        return json.loads(done.read_text())
    shutil.rmtree(p.work, ignore_errors=True)
    p.work.mkdir(parents=True)
    make_data(o, p)
    deidentify(p, seed)
    _, exp = mine(p)
    exp |= build_series(
        p.data / "demo", p.data / "mined" / "datalist_volumes.json", p.work / "datalists", p.data / "secure" / "linkage.csv"
    )
    exp["volume_datalist"] = str(write_volume_datalist(p.data / "demo"))
    done.write_text(json.dumps(exp, indent=1))
    return exp


def link_variants(plan: AblationPlan) -> list[tuple[str, dict]]:
    """Linking settings scored on the last arm besides the configs' own: inference only, nothing retrained."""
    return [(f"min_slices{k}", {"link_min_slices": k}) for k in plan.link_min_slices if k != 1] + [
        (f"extent_{e}", {"link_extent": e}) for e in plan.link_extents
    ]


def run_replicate(plan: AblationPlan, exp: dict, rdir: Path, data_seed: int, train_seed: int) -> dict:
    """Every arm of one (data seed, training seed): trained, evaluated per volume; linking's variants on the last arm."""
    log = rdir / "ablation.log"
    over = plan.train_overrides | {"epochs": plan.epochs, "seed": train_seed}
    models, kept = train_all(plan, exp, rdir, over)
    out: dict = {"data_seed": data_seed, "train_seed": train_seed, "kept_round": kept, "arms": {}}
    vdl = Path(exp["volume_datalist"])
    for arm in plan.arms:
        out["arms"][arm] = evaluate_volumes(
            models[arm], vdl, rdir / "eval" / arm, log, train_seed, over | arm_overrides(arm), plan.n_bootstrap
        )
    if plan.review_k:
        out["review"] = simulated_review(plan, exp, rdir, models, over, data_seed, train_seed)
    last = plan.arms[-1] if plan.arms else None
    for name, extra in link_variants(plan) if last else []:
        o = over | arm_overrides(last) | extra
        out["arms"][f"{last}_{name}"] = evaluate_volumes(
            models[last], vdl, rdir / "eval" / f"{last}_{name}", log, train_seed, o, plan.n_bootstrap
        )
    return out


def simulated_review(plan: AblationPlan, exp: dict, rdir: Path, models: dict, over: dict, data_seed: int, train_seed: int) -> dict:
    """The simulated review from ``review_from``'s model: every arm fine-tuned with that arm's settings, scored per volume."""
    arm = plan.review_from
    if arm in ARMS:
        start = models.get(arm) or train_arm(arm, exp, rdir, over)
    else:  # a model folder: trained as the ``ignore`` arm is (whole series, ignore regions), as round 0 of self-training
        start = Path(arm.format(data_seed=data_seed, train_seed=train_seed))
        start = start if start.is_absolute() else ROOT / start
    o = over | ARMS[arm if arm in ARMS else "ignore"][2]
    vdl = Path(exp["volume_datalist"])

    def evaluate(ckpt: Path, out: Path) -> dict:
        return evaluate_volumes(ckpt, vdl, out, rdir / "ablation.log", train_seed, o, plan.n_bootstrap)

    review = ReviewPlan(k=plan.review_k, epochs=plan.review_epochs, seed=plan.review_seed)
    return run_review(
        review,
        exp["series_mined"],
        exp["series_truth_map"],
        start,
        rdir / "review",
        _cli(o),
        evaluate,
        str(vdl),
        plan.n_bootstrap,
        train_seed,
    ) | {"start_model": str(start)}


def _rel(path: Path) -> str:
    """A path as the page prints it: relative to the repository when inside it."""
    return str(path.relative_to(ROOT)) if path.is_absolute() and path.is_relative_to(ROOT) else str(path)


def run(plan: AblationPlan, work_dir: str, results: str | None = None) -> dict:
    """Every replicate (resumable: a finished replicate's ablation.json is reused), pooled, and the results page."""
    work = Path(work_dir) if Path(work_dir).is_absolute() else ROOT / work_dir
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    reps = []
    for ds in plan.data_seeds:
        exp = None
        for ts in plan.train_seeds:
            rdir = work / f"data{ds}" / f"train{ts}"
            done = rdir / "ablation.json"
            code = {"git": provenance.git_state(), "plan": asdict(plan)}  # a replicate written by other code or plan runs again
            if done.is_file() and json.loads(done.read_text()).get("code") == code:
                reps.append(json.loads(done.read_text()))
                continue
            exp = exp or prepare(plan, work, ds)
            rdir.mkdir(parents=True, exist_ok=True)
            t = time.time()
            rep = run_replicate(plan, exp, rdir, ds, ts)
            rep["seconds"] = round(time.time() - t, 1)
            rep["code"] = code
            done.write_text(json.dumps(rep, indent=1))
            reps.append(rep)
    summary = {
        "plan": asdict(plan),
        "defaults": asdict(AblationPlan()),
        "where": {"work_dir": _rel(work), "results": results and _rel(Path(results))},  # named by the page's command when not the default
        "replicates": reps,
        "pooled": pool(reps),
        "seconds": round(time.time() - t0, 1),
    }
    (work / "ablation.json").write_text(json.dumps(summary, indent=1))
    if results:
        page = ROOT / results if not Path(results).is_absolute() else Path(results)
        write_page(summary, page, work / "ablation.json")
    return summary
