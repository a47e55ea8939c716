"""The README's main job, end to end on the built-in demo data (scripts/demo.py is its command line).

demo data -> PACS export (DICOM, GSPS, SR) -> de-identification -> mining -> three trainings:
(a) mined boxes only, (b) self-trained, (c) oracle on complete boxes -> evaluation on held-out,
fully annotated test patients (F1 with 95% CI, paired bootstrap test of b vs a, FROC, COCO) ->
inference with the final model -> runs/demo/results.md (one seed; docs/results.md is scripts/ablation.py's page).

Every model step is a plain ``python -m monai.bundle run`` command, printed before it runs. Why
this lives in bundle/demo/: it needs the simulator's truth (the oracle, pseudo-box scoring), which
no library layer may see.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from bundle.demo import volume_steps
from bundle.demo.clinic.config import ExportConfig
from bundle.demo.experiment import build, load_linkage, split_by_pseudonym
from bundle.demo.options import DemoOptions, Paths, option_problem, rel
from bundle.demo.pacs_export import export
from bundle.demo.results import assemble, write_results
from bundle.demo.synth import generate
from bundle.paths import ROOT
from bundle.selftrain.loop import Schedule, run_self_training
from bundle.selftrain.pseudo import PseudoRules
from bundle.steps.runner import bundle_run

EVAL = ["configs/train.yaml", "configs/evaluate.yaml"]
STEPS = 7


def save_untrained(path: Path, seed: int) -> None:
    """The same network, same seed, no training: the floor every trained model must clear."""
    import torch
    from monai.bundle import ConfigParser
    from monai.utils import set_determinism

    from bundle.paths import read_config

    parser = read_config(ConfigParser(), ROOT / "configs" / "train.yaml")  # network.yaml's keys from this bundle, any cwd
    set_determinism(seed=seed)
    net = parser.get_parsed_content("network_def")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)  # the zoo format models/model.pt uses


def evaluate(name: str, ckpt: Path, datalist: str, out: Path, log: Path, seed: int) -> dict:
    """One model through configs/evaluate.yaml; its metrics.json."""
    bundle_run(
        EVAL,
        ROOT,
        log,
        bundle_root=ROOT,
        ckpt_path=ckpt,
        data_list_file_path=datalist,
        dataset_dir=Path(datalist).parent,
        output_dir=out,
        model_name=name,
        seed=seed,
    )
    return json.loads((out / "metrics.json").read_text())


def make_data(o: DemoOptions, p: Paths) -> None:
    """Step 1: the demo set and its simulated PACS export; the test cohort stays out of the PACS."""
    for d in ("demo", "pacs_export", "deid", "mined"):
        shutil.rmtree(p.data / d, ignore_errors=True)
    res = generate(p.data / "demo", size=o.size, seed=o.seed)
    # the test cohort stays out of the PACS: it is the separately, fully labelled test set
    cfg = ExportConfig(p_unread=o.unread_share)  # some studies no reader measured: mining lists them as unlabelled data
    record = export(p.data / "demo", p.data / "pacs_export", seed=o.seed, config=cfg, splits=("training", "validation"))
    n_files = sum(1 for f in (p.data / "pacs_export" / "dicom").rglob("*") if f.is_file())
    print(f"  demo images {res['counts']}; export: {n_files} files, {len(record['patients'])} studies", flush=True)


def demo_key(seed: int) -> str:
    """The demo's de-identification key, derived from the seed: demo data only, never for patients.

    Why not random: pseudonyms come from the key and the datalist is ordered by pseudonym, so a random key
    gave every fresh clone a different training order, and so a different model, for the same seed. A
    hospital keeps a secret random key (docs/deidentification.md); the synthetic demo has nothing to protect.
    """
    return hashlib.sha256(f"brain-mri-tumor-detection demo key, seed {seed}".encode()).hexdigest()


def deidentify(p: Paths, seed: int) -> None:
    """Step 2: PS3.15 Annex E de-identification; key and linkage table kept apart from the data."""
    secure = p.data / "secure"
    secure.mkdir(parents=True, exist_ok=True)
    key = secure / "demo.key"
    key.write_text(demo_key(seed))
    bundle_run(
        "configs/deidentify.yaml",
        ROOT,
        p.log,
        input_dir=p.data / "pacs_export" / "dicom",
        output_dir=p.data / "deid",
        key_file=key,
        linkage_file=secure / "linkage.csv",
    )


def mine(p: Paths) -> tuple[dict, dict]:
    """Step 3: mine the de-identified export, then the experiment's datalists in demo coordinates; (mining report, experiment)."""
    data, work, log, secure = p.data, p.work, p.log, p.data / "secure"
    split_file = work / "split_pseudonyms.json"
    split = json.loads((data / "demo" / "truth.json").read_text())["split"]
    split_file.write_text(json.dumps(split_by_pseudonym(split, load_linkage(secure / "linkage.csv")), indent=1))
    bundle_run(
        "configs/mine.yaml",
        ROOT,
        log,
        source_dir=data / "deid",
        output_dir=data / "mined",
        split_file=split_file,
        progress=False,
        unlabelled=True,
    )
    mining = json.loads((data / "mined" / "mining_report.json").read_text())
    exp = build(data / "demo", data / "mined" / "datalist.json", work / "datalists", secure / "linkage.csv")
    print(f"  mining: {mining['counts']}", flush=True)
    print(
        f"  training images {exp['counts']['training_images']}: {exp['counts']['mined_boxes']} mined boxes, {exp['counts']['complete_boxes']} lesions in truth",
        flush=True,
    )
    return mining, exp


def self_train(o: DemoOptions, p: Paths, exp: dict) -> dict:
    """Step 4: (a) is round 0 (mined boxes only), (b) the round validation chose."""
    st = run_self_training(
        str(p.work / "selftrain"),
        exp["mined"],
        PseudoRules(score_threshold=o.score_threshold),
        Schedule(rounds=o.rounds, target_precision=o.target_precision),
        truth=exp["truth_map"],
        train_overrides={"epochs": o.epochs, "seed": o.seed},
    )
    print((p.work / "selftrain" / "report.md").read_text(), flush=True)
    return st


def train_oracle(o: DemoOptions, p: Paths, exp: dict) -> None:
    """Step 5: (c) the same training images with every lesion boxed."""
    bundle_run(
        "configs/train.yaml",
        ROOT,
        p.log,
        bundle_root=ROOT,
        data_list_file_path=exp["oracle"],
        dataset_dir=Path(exp["oracle"]).parent,
        ckpt_dir=p.work / "oracle" / "models",
        output_dir=p.work / "oracle" / "train_eval",
        epochs=o.epochs,
        seed=o.seed,
    )


def evaluate_models(o: DemoOptions, p: Paths, st: dict, exp: dict, a_model: Path | None = None) -> tuple[dict[str, Path], dict, dict, dict]:
    """Step 6: every model on the held-out test patients, and the paired tests (b) vs (a), (c) vs (a).

    Returns (model checkpoints, metrics per model, b_vs_a, c_vs_a).
    """
    from bundle.metrics.report import compare

    work = p.work
    models = {
        "mined_only": a_model or Path(st["rounds"][0]["dir"]) / "models" / "model.pt",
        # (b) is the round validation chose; with no improving round it is its round-0 teacher (eval folder: b_folder)
        "self_trained": Path(st["best_model"]),
        "oracle": work / "oracle" / "models" / "model.pt",
        "untrained": work / "untrained" / "model.pt",
    }
    save_untrained(models["untrained"], o.seed)
    dl = exp["mined"]  # validation/test sections are the same complete truth in every experiment datalist
    folder = {n: b_folder(st) if n == "self_trained" else n for n in models}
    metrics = {n: evaluate(folder[n], ck, dl, work / "eval" / folder[n], p.log, o.seed) for n, ck in models.items()}

    def preds(n: str) -> tuple[str, str]:
        d = work / "eval" / folder[n]
        return str(d / "predictions_validation.json"), str(d / "predictions_test.json")

    def paired(better: str, code: str) -> dict:
        return compare(
            dl,
            preds(better),
            preds("mined_only"),
            str(work / "eval" / code),
            (better, "mined_only"),
            n_bootstrap=o.n_bootstrap,
            seed=o.seed,
        )

    return models, metrics, paired("self_trained", "b_vs_a"), paired("oracle", "c_vs_a")


def b_folder(st: dict) -> str:
    """What model (b) is, as its evaluation folder says: self-trained only when a round after 0 was kept."""
    best = st.get("best") or {"round": st["best_round"], "candidate": "student"}
    return "self_trained" if best["round"] > 0 else "teacher_round0"


def infer(p: Paths, self_trained: Path, datalist: str) -> None:
    """Step 7: the self-trained model becomes the bundle's model; inference on the test split."""
    p.model_out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(self_trained, p.model_out)
    bundle_run(
        "configs/inference.yaml",
        ROOT,
        p.log,
        bundle_root=ROOT,
        ckpt_dir=p.model_out.parent,
        data_list_file_path=datalist,
        dataset_dir=Path(datalist).parent,
        output_path=p.work / "predictions_test.json",
    )


class _Clock:
    """Wall time per step, printed as each step ends and kept for the results page."""

    def __init__(self) -> None:
        self.t_start = self.t0 = time.time()
        self.times: dict[str, float] = {}

    def start(self, n: int, text: str) -> None:
        print(f"{n}/{STEPS} {text}", flush=True)
        self.t0 = time.time()

    def stop(self, name: str) -> None:
        self.times[name] = time.time() - self.t0
        print(f"  [{name}: {self.times[name]:.0f} s]", flush=True)


def run(o: DemoOptions, command: str) -> dict:
    """All seven steps; writes results.json and the results page; returns the results. ``command``: how it was called."""
    problem = option_problem(o)
    if problem:
        raise ValueError(problem)
    p = Paths.of(o)
    if p.work.exists():
        shutil.rmtree(p.work)
    p.work.mkdir(parents=True)
    clock = _Clock()
    clock.start(1, f"demo data ({o.size}, seed {o.seed}) and the simulated PACS export")
    make_data(o, p)
    clock.stop("data_and_export")
    clock.start(2, "de-identify the export (PS3.15 Annex E; key and linkage table kept apart from the data)")
    deidentify(p, o.seed)
    clock.stop("deidentify")
    clock.start(3, "mine the de-identified export into a detection datalist (key slices and whole series)")
    mining, exp = mine(p)
    series = volume_steps.series_datalists(p) if o.series else None
    clock.stop("mine")
    a_model = None
    if series is not None:
        clock.start(4, f"(a) mined key slices only; (b) whole series + ignore regions, then {o.series_rounds} self-training round(s)")
        a_model = volume_steps.train_key_slices(o, p, exp["mined"])
        st = volume_steps.self_train_series(o, p, series)
    else:
        clock.start(4, f"self-training: round 0 = (a) mined only; {o.rounds} round(s) of pseudo-boxes = (b)")
        st = self_train(o, p, exp)
    clock.stop("self_training")
    clock.start(
        5,
        "(c) oracle: the same training images with every lesion boxed"
        + ("; and (b)'s recipe on every slice boxed" if series and o.volume_oracle else ""),
    )
    train_oracle(o, p, exp)
    volume_oracle = volume_steps.train_volume_oracle(o, p, series) if series is not None and o.volume_oracle else None
    clock.stop("oracle")
    clock.start(6, "evaluate on the held-out, fully annotated test patients: per volume, then on key slices")
    models, metrics, b_vs_a, c_vs_a = evaluate_models(o, p, st, exp, a_model)
    if volume_oracle is not None:
        models["oracle_volume"] = volume_oracle
    volume = volume_figures(o, p, models, series["volume_datalist"], b_folder(st)) if series is not None else None
    clock.stop("evaluate")
    clock.start(7, f"(b) becomes {rel(p.model_out)}; inference on the test split")
    if series is not None and not (volume or {}).get("shipped", {}).get("ok", True):
        print(f"  (b) is not shipped: {volume['shipped']['reason']}", flush=True)  # the report stands; nothing to serve
    elif series is not None:
        volume_steps.ship(models["self_trained"], p.model_out)
        volume_steps.infer_volumes(p, p.model_out, series["volume_datalist"])
    else:
        infer(p, models["self_trained"], exp["mined"])
    clock.stop("inference")
    clock.times["total"] = time.time() - clock.t_start
    results = assemble(command, o, st, mining, exp, metrics, b_vs_a, c_vs_a, clock.times, str(rel(Path(b_vs_a["plots"]["froc"]))))
    results["volume"] = volume
    (p.work / "results.json").write_text(json.dumps(results, indent=2))
    md = write_results(results, ROOT / o.results, rel(p.work / "results.json"))
    print("\n" + md)
    print(f"model: {rel(p.model_out)}   FROC plot: {results['froc_plot']}")
    print(f"total time: {clock.times['total']:.0f} s")
    return results


def volume_figures(o: DemoOptions, p: Paths, models: dict[str, Path], volume_datalist: str, b_name: str = "self_trained") -> dict:
    """(a), (b) and, where trained, the volume-level oracle per volume at their own validation operating points, by
    lesion size (strict rule, and the old rule's sensitivity beside it), and the paired test (b) - (a).

    Only (b) ships: its operating_point.json is written; the others are compared. b_name: (b)'s evaluation folder
    (b_folder: 'teacher_round0' when no self-training round was kept)."""
    out = {}
    folder = {"mined_only": "mined_only", "self_trained": b_name, "oracle_volume": "oracle_volume"}
    for name in [n for n in ("mined_only", "self_trained", "oracle_volume") if n in models]:
        # each model's input (one slice or a 2.5D stack) is read from its checkpoint by the config;
        # the protocol variants for the shipped model (b) only: each costs a test set's inference
        m = volume_steps.evaluate_volumes(
            folder[name], models[name], o, p, volume_datalist, protocols=name == "self_trained", ship=name == "self_trained"
        )
        a = m["test"]["at_operating_point"]
        out[name] = {
            k: a.get(k) for k in ("sensitivity >=10 mm", "fp_per_volume", "fp_per_normal_volume", "found_ge10", "lesions_ge10", "volumes")
        }
        out[name] |= {"threshold": m["operating_point"]["score_threshold"], "cpm": m["test"]["froc"]["cpm"], "by_size": a.get("by_size")}
        out[name]["limits"] = m["operating_point"].get("targets")  # the rule the point was chosen by
        if "shipped" in m:
            out["shipped"] = m["shipped"]
        if "old_rule" in m:
            out[name]["old_rule"] = {k: m["old_rule"]["at_operating_point"].get(k) for k in ("sensitivity >=10 mm", "fp_per_volume")}
        if "protocols" in m:
            out["protocols"] = {
                k: v["at_operating_point"] | {"cpm >=10 mm": v.get("cpm >=10 mm")} for k, v in m["protocols"]["variants"].items()
            }
    cmp = volume_steps.compare_volumes(p, volume_datalist, (b_name, "mined_only"), o.n_bootstrap, o.seed)
    out["b_vs_a"] = cmp["paired"]
    return out
