"""The demo's whole-volume steps: (b) trained on whole series and self-trained over every slice, models scored per volume.

Why apart from run.py: the seed study's key-slice experiment (run.py) stays as it was; these steps add what the
model is used for, whole volumes: (b) learns from every slice of the mined series with a measured lesion's reach
as an ignore region, the teacher labels every slice (confident -> pseudo-box, uncertain -> ignore region), and
(a) and (b) are scored on the held-out test volumes at their own validation operating points
(configs/evaluate_volume.yaml), the figure docs/results.md leads with.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bundle.demo.experiment import build_series
from bundle.demo.options import DemoOptions, Paths
from bundle.demo.volumes import write_volume_datalist
from bundle.inference import operating_point
from bundle.paths import ROOT
from bundle.selftrain.loop import Schedule, run_self_training
from bundle.selftrain.pseudo import PseudoRules
from bundle.steps import provenance
from bundle.steps.runner import bundle_run

VOLUME_EVAL = ["configs/inference_volume.yaml", "configs/evaluate_volume.yaml"]


def series_datalists(p: Paths) -> dict:
    """The whole-series experiment datalists and the demo's fully labelled validation/test volumes."""
    secure = p.data / "secure"
    exp = build_series(p.data / "demo", p.data / "mined" / "datalist_volumes.json", p.work / "datalists", secure / "linkage.csv")
    exp["volume_datalist"] = str(write_volume_datalist(p.data / "demo"))
    unlabelled = p.data / "mined" / "datalist_unlabelled.json"
    if unlabelled.is_file():  # series nobody measured (mining's unlabelled: true): their truth scores the pseudo-boxes put on them
        exp["unlabelled"] = str(unlabelled)
        add_unlabelled_truth(p.data / "demo", unlabelled, Path(exp["series_truth_map"]), secure / "linkage.csv")
    return exp


def add_unlabelled_truth(demo_dir: Path, unlabelled: Path, truth_map: Path, linkage: Path) -> int:
    """Every lesion cross-section of each unlabelled volume joins the series truth map (demo data only); how many volumes."""
    from bundle.datalist.sections import absolute_datalist
    from bundle.demo.experiment import load_linkage, slice_truth

    truth = json.loads((demo_dir / "truth.json").read_text())
    by_id = {q["patient_id"]: q for q in truth["patients"]}
    to_demo = load_linkage(linkage)
    tm = json.loads(truth_map.read_text())
    items = absolute_datalist(unlabelled).get("unlabelled", [])
    for it in items:
        tm[it["image"]] = slice_truth(demo_dir, by_id[to_demo.get(it["patient"], it["patient"])], 5.0)
    truth_map.write_text(json.dumps(tm))
    return len(items)


def train_overrides(o: DemoOptions) -> dict:
    """(b)'s training settings; ``context_slices`` is set here only: every later step reads it from the trained model."""
    return {"epochs": o.epochs, "seed": o.seed, "ignore_reach": True, "context_slices": o.context_slices}


def series_schedule(rounds: int, target_precision: float, volume_datalist: str, unlabelled: str | None = None) -> Schedule:
    """The demo's self-training recipe on whole series (the ablation's self-trained arm uses it too): mean teacher (EMA
    teacher, strong augmentation for the student); rounds and checkpoints kept by validation sensitivity >= 10 mm at the
    shipped false-box limits on the fully labelled validation volumes."""
    return Schedule(
        rounds=rounds,
        target_precision=target_precision,
        series=True,
        mean_teacher=True,
        select="volume",
        volume_datalist=volume_datalist,
        unlabelled_datalist=unlabelled,
    )


def self_train_series(o: DemoOptions, p: Paths, series: dict) -> dict:
    """(b): round 0 on the mined series (ignore regions at each lesion's reach), then ``series_rounds`` mean-teacher rounds
    over every slice; what validation keeps is (b), the round-0 teacher when no round wins."""
    st = run_self_training(
        str(p.work / "selftrain_series"),
        series["series_mined"],
        PseudoRules(score_threshold=o.score_threshold, ignore_floor=o.ignore_floor, max_per_image=o.max_pseudo_per_series),
        series_schedule(o.series_rounds, o.series_target_precision, series["volume_datalist"], series.get("unlabelled")),
        truth=series["series_truth_map"],
        train_overrides=train_overrides(o),
    )
    print((p.work / "selftrain_series" / "report.md").read_text(), flush=True)
    return st


def train_key_slices(o: DemoOptions, p: Paths, datalist: str) -> Path:
    """(a): the seed study's model, mined key slices only."""
    out = p.work / "mined_only"
    bundle_run(
        "configs/train.yaml",
        ROOT,
        p.log,
        bundle_root=ROOT,
        data_list_file_path=datalist,
        dataset_dir=Path(datalist).parent,
        ckpt_dir=out / "models",
        output_dir=out / "train_eval",
        epochs=o.epochs,
        seed=o.seed,
    )
    return out / "models" / "model.pt"


def evaluate_volumes(
    name: str,
    model: Path,
    o: DemoOptions,
    p: Paths,
    volume_datalist: str,
    protocols: bool = True,
    ship: bool = True,
) -> dict:
    """One model per volume, stamped with the code and settings it ran (bundle.steps.provenance); its input (one slice
    or a 2.5D stack) is the model's own (configs/inference_volume.yaml reads it from the checkpoint). ``ship``: its
    operating_point.json lands next to it, unless the point keeps nothing on validation: then it is refused, the
    result says why under ``shipped`` and the demo goes on without shipping; False for models that are only
    compared. ``protocols``: also the test volumes as other protocols store them (evaluate_volume.yaml's protocol
    variants; metrics_protocols.json under ``protocols``)."""
    out = p.work / "eval_volume" / name
    extra = {} if protocols else {"protocol_variants": "{}"}
    m = provenance.run_or_reuse(
        VOLUME_EVAL,
        out,
        "metrics_volume.json",
        p.log,
        model,
        bundle_root=ROOT,
        ckpt_dir=model.parent,
        volume_datalist_file=volume_datalist,
        output_dir=out,
        n_bootstrap=o.n_bootstrap,
        seed=o.seed,
        model_name=name,
        write_operating_point=False,  # written below: a refusal must not stop the demo's report
        **extra,
    )
    if ship:
        m["shipped"] = ship_operating_point(model.parent, m["operating_point"])
    if protocols and (out / "metrics_protocols.json").is_file():
        m["protocols"] = json.loads((out / "metrics_protocols.json").read_text())
    return m


def ship_operating_point(ckpt_dir: Path, op: dict) -> dict:
    """operating_point.write, or its refusal (a point keeping nothing on validation) as a result: {"ok", "path" or "reason"}."""
    (ckpt_dir / operating_point.FILENAME).unlink(missing_ok=True)  # never leave an earlier model's point beside this one
    try:
        return {"ok": True, "path": str(operating_point.write(ckpt_dir, op))}
    except ValueError as e:
        print(f"  not shipped: {e}", flush=True)
        return {"ok": False, "reason": str(e)}


def train_volume_oracle(o: DemoOptions, p: Paths, series: dict) -> Path:
    """The volume-level ceiling: (b)'s recipe (whole series, same epochs, seed and 2.5D context) on every lesion
    cross-section of the same training series boxed (series_oracle.json). What it misses, complete labels did not
    teach; the gap from (b) to it is the labels', the rest the network's."""
    out = p.work / "oracle_volume"
    bundle_run(
        ["configs/train.yaml", "configs/train_series.yaml"],
        ROOT,
        p.log,
        bundle_root=ROOT,
        data_list_file_path=series["series_oracle"],
        dataset_dir=Path(series["series_oracle"]).parent,
        ckpt_dir=out / "models",
        output_dir=out / "train_eval",
        **(train_overrides(o) | {"ignore_reach": False}),  # every cross-section is boxed: nothing unknown to ignore
    )
    return out / "models" / "model.pt"


def compare_volumes(p: Paths, volume_datalist: str, names: tuple[str, str], n_bootstrap: int, seed: int) -> dict:
    """Paired per-volume test of two models, each at its own validation operating point."""
    from bundle.metrics.volume_report import compare
    from bundle.selftrain.scoring import shipped_limits

    def preds(n: str) -> tuple[str, str]:
        d = p.work / "eval_volume" / n
        return str(d / "predictions_volume_validation.json"), str(d / "predictions_volume_test.json")

    return compare(
        volume_datalist,
        preds(names[0]),
        preds(names[1]),
        str(p.work / "eval_volume" / "compare"),
        names,
        n_bootstrap=n_bootstrap,
        seed=seed,
        **shipped_limits(),  # each model's point as the shipped rule chooses it
    )


def ship(model: Path, model_out: Path) -> None:
    """The bundle's model and the operating point chosen for it on validation volumes, side by side."""
    model_out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(model, model_out)
    for name in ("operating_point.json", "grid.json"):  # its threshold, and the canonical grid every serving path resamples to
        if (model.parent / name).is_file():
            shutil.copy(model.parent / name, model_out.parent / name)


def infer_volumes(p: Paths, model_out: Path, volume_datalist: str) -> Path:
    """Volume inference on the test volumes at the shipped operating point, the way MONAI Label and the Deploy app run;
    the test volumes' paths go to the config as a file (``input_list``), the model's input is its own."""
    out = p.work / "predictions_volume_test.json"
    listing = p.work / "test_volumes.json"
    doc = json.loads(Path(volume_datalist).read_text())
    listing.write_text(json.dumps([str(Path(volume_datalist).parent / it["image"]) for it in doc["test"]]))
    bundle_run(
        "configs/inference_volume.yaml",
        ROOT,
        p.log,
        bundle_root=ROOT,
        ckpt_dir=model_out.parent,
        input_list=listing,
        output_path=out,
    )
    return out
