"""The README's main job, end to end on the built-in demo data.

demo data -> PACS export (DICOM, GSPS, SR) -> de-identification -> mining -> three trainings:
(a) mined boxes only, (b) self-trained, (c) oracle on complete boxes -> evaluation on held-out,
fully annotated test patients (F1 with 95% CI, paired bootstrap test of b vs a, FROC, COCO) ->
inference with the final model -> docs/results.md.

Every model step is a plain ``python -m monai.bundle run`` command, printed before it runs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundle.engines.runner import bundle_run  # noqa: E402
from bundle.selftrain.pseudo import parse_threshold  # noqa: E402

EVAL = ["configs/train.yaml", "configs/evaluate.yaml"]


def rel(p: Path) -> Path:
    """Paths on the results page: relative to the repository when they are inside it."""
    return p.relative_to(ROOT) if p.is_relative_to(ROOT) else p


def save_untrained(path: Path, seed: int) -> None:
    """The same network, same seed, no training: the floor every trained model must clear."""
    import torch
    from monai.bundle import ConfigParser
    from monai.utils import set_determinism

    parser = ConfigParser()
    parser.read_config(ROOT / "configs" / "train.yaml")
    set_determinism(seed=seed)
    net = parser.get_parsed_content("network_def")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": net.state_dict()}, path)


def evaluate(name: str, ckpt: Path, datalist: str, out: Path, log: Path, seed: int) -> dict:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="default", help="demo size: tiny, small, default, large (large is for a GPU machine)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=30, help="epochs of each training")
    ap.add_argument("--rounds", type=int, default=1, help="self-training rounds")
    ap.add_argument(
        "--score_threshold",
        type=parse_threshold,
        default="auto",
        help="pseudo-box score threshold, or 'auto': where each teacher reaches --target_precision on validation",
    )
    ap.add_argument("--target_precision", type=float, default=0.5, help="with 'auto' (docs/selftraining.md explains the choice)")
    ap.add_argument("--n_bootstrap", type=int, default=1000)
    ap.add_argument("--work", default="runs/demo", help="where every artefact goes (relative to the repository)")
    ap.add_argument("--results", default="docs/results.md", help="the results page this run writes")
    ap.add_argument("--model_dir", default="models", help="where the self-trained model is copied as model.pt (the bundle's model)")
    ap.add_argument("--data", default="data", help="where the demo data, export, de-identified copy and mined datalist go")
    a = ap.parse_args()
    t_start = time.time()
    work = ROOT / a.work
    data = ROOT / a.data
    model_out = ROOT / a.model_dir / "model.pt"
    log = work / "demo.log"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    times: dict[str, float] = {}

    def step(name: str, t0: float) -> None:
        times[name] = time.time() - t0
        print(f"  [{name}: {times[name]:.0f} s]", flush=True)

    # 1. data --------------------------------------------------------------------------------
    from bundle.demo.pacs_export import export
    from bundle.demo.synth import generate

    print(f"1/7 demo data ({a.size}, seed {a.seed}) and the simulated PACS export", flush=True)
    t0 = time.time()
    for d in ("demo", "pacs_export", "deid", "mined"):
        shutil.rmtree(data / d, ignore_errors=True)
    res = generate(data / "demo", size=a.size, seed=a.seed)
    # the test cohort stays out of the PACS: it is the separately, fully labelled test set
    record = export(data / "demo", data / "pacs_export", seed=a.seed, splits=("training", "validation"))
    n_files = sum(1 for p in (data / "pacs_export" / "dicom").rglob("*") if p.is_file())
    print(f"  demo images {res['counts']}; export: {n_files} files, {len(record['patients'])} studies", flush=True)
    step("data_and_export", t0)

    # 2. de-identification -------------------------------------------------------------------
    print("2/7 de-identify the export (PS3.15 Annex E; key and linkage table kept apart from the data)", flush=True)
    t0 = time.time()
    secure = data / "secure"
    secure.mkdir(parents=True, exist_ok=True)
    key = secure / "demo.key"
    if not key.exists():
        import secrets

        key.write_text(secrets.token_hex(32))
    bundle_run(
        "configs/deidentify.yaml",
        ROOT,
        log,
        input_dir=data / "pacs_export" / "dicom",
        output_dir=data / "deid",
        key_file=key,
        linkage_file=secure / "linkage.csv",
    )
    step("deidentify", t0)

    # 3. mining --------------------------------------------------------------------------------
    print("3/7 mine the de-identified export into a detection datalist", flush=True)
    t0 = time.time()
    from bundle.demo.experiment import build, load_linkage

    to_demo = load_linkage(secure / "linkage.csv")
    split = json.loads((data / "demo" / "truth.json").read_text())["split"]
    split_file = work / "split_pseudonyms.json"
    split_file.write_text(json.dumps({p: split[o] for p, o in to_demo.items()}, indent=1))
    bundle_run("configs/mine.yaml", ROOT, log, source_dir=data / "deid", output_dir=data / "mined", split_file=split_file, progress=False)
    mining = json.loads((data / "mined" / "mining_report.json").read_text())
    exp = build(data / "demo", data / "mined" / "datalist.json", work / "datalists", secure / "linkage.csv")
    print(f"  mining: {mining['counts']}", flush=True)
    print(
        f"  training images {exp['counts']['training_images']}: {exp['counts']['mined_boxes']} mined boxes, {exp['counts']['complete_boxes']} lesions in truth",
        flush=True,
    )
    step("mine", t0)

    # 4. (a) + (b): self-training (round 0 is the mined-only model) -----------------------------
    print(f"4/7 self-training: round 0 = (a) mined only; {a.rounds} round(s) of pseudo-boxes = (b)", flush=True)
    t0 = time.time()
    from bundle.selftrain.loop import run_self_training

    overrides = {"epochs": a.epochs, "seed": a.seed}
    st = run_self_training(
        str(work / "selftrain"),
        exp["mined"],
        rounds=a.rounds,
        score_threshold=a.score_threshold,
        target_precision=a.target_precision,
        truth=exp["truth_map"],
        train_overrides=overrides,
    )
    print((work / "selftrain" / "report.md").read_text(), flush=True)
    step("self_training", t0)

    # 5. (c) oracle ----------------------------------------------------------------------------
    print("5/7 (c) oracle: the same training images with every lesion boxed", flush=True)
    t0 = time.time()
    bundle_run(
        "configs/train.yaml",
        ROOT,
        log,
        bundle_root=ROOT,
        data_list_file_path=exp["oracle"],
        dataset_dir=Path(exp["oracle"]).parent,
        ckpt_dir=work / "oracle" / "models",
        output_dir=work / "oracle" / "train_eval",
        **overrides,
    )
    step("oracle", t0)

    # 6. evaluation ----------------------------------------------------------------------------
    print("6/7 evaluate on the held-out, fully annotated test patients", flush=True)
    t0 = time.time()
    from bundle.metrics.report import compare

    models = {
        "mined_only": Path(st["rounds"][0]["dir"]) / "models" / "model.pt",
        # (b) is the round validation chose; with no improving round it is (a) itself, as the loop ships it
        "self_trained": Path(st["best_model"]),
        "oracle": work / "oracle" / "models" / "model.pt",
        "untrained": work / "untrained" / "model.pt",
    }
    save_untrained(models["untrained"], a.seed)
    dl = exp["mined"]  # validation/test sections are the same complete truth in every experiment datalist
    metrics = {n: evaluate(n, ck, dl, work / "eval" / n, log, a.seed) for n, ck in models.items()}

    def preds(n: str) -> tuple[str, str]:
        return str(work / "eval" / n / "predictions_validation.json"), str(work / "eval" / n / "predictions_test.json")

    def paired(better: str, code: str) -> dict:
        return compare(
            dl,
            preds(better),
            preds("mined_only"),
            str(work / "eval" / code),
            (better, "mined_only"),
            n_bootstrap=a.n_bootstrap,
            seed=a.seed,
        )

    b_vs_a, c_vs_a = paired("self_trained", "b_vs_a"), paired("oracle", "c_vs_a")
    step("evaluate", t0)

    # 7. the bundle's model and inference -------------------------------------------------------
    print(f"7/7 the self-trained model becomes {rel(model_out)}; inference on the test split", flush=True)
    t0 = time.time()
    model_out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(models["self_trained"], model_out)
    bundle_run(
        "configs/inference.yaml",
        ROOT,
        log,
        bundle_root=ROOT,
        ckpt_dir=model_out.parent,
        data_list_file_path=dl,
        dataset_dir=Path(dl).parent,
        output_path=work / "predictions_test.json",
    )
    step("inference", t0)
    times["total"] = time.time() - t_start

    results = {
        "command": " ".join(shlex.quote(c) for c in [Path(sys.executable).name, "scripts/demo.py", *sys.argv[1:]]),
        "seed": a.seed,
        "size": a.size,
        "epochs": a.epochs,
        "rounds": a.rounds,
        "score_threshold": a.score_threshold,
        "target_precision": a.target_precision,
        "self_training_best_round": st["best_round"],
        "mining": mining["counts"],
        "experiment": exp["counts"],
        "self_training": [
            {k: r[k] for k in ("round", "validation")} | {"pseudo": r["pseudo"], "pseudo_quality": r.get("pseudo_quality")}
            for r in st["rounds"]
        ],
        "self_training_stopped": st["stopped"],
        "models": {
            n: {
                "f1": m["test"]["f1"],
                "f1_ci95": [m["test_ci95"]["f1"]["ci_low"], m["test_ci95"]["f1"]["ci_high"]],
                "precision": m["test"]["precision"],
                "recall": m["test"]["recall"],
                "mAP": m["test_mAP"],
                "cpm": m["test_froc"]["cpm"],
                "study_auc": m["test_study"]["auc"],
            }
            for n, m in metrics.items()
        },
        "b_vs_a": b_vs_a["paired_f1_test"],
        "c_vs_a": c_vs_a["paired_f1_test"],
        "test_images": metrics["oracle"]["test_images"],
        "test_patients": metrics["oracle"]["test_patients"],
        "seconds": {k: round(v) for k, v in times.items()},
        "froc_plot": str(rel(Path(b_vs_a["plots"]["froc"]))),
    }
    (work / "results.json").write_text(json.dumps(results, indent=2))
    from bundle.demo.results import write_results

    md = write_results(results, ROOT / a.results, rel(work / "results.json"))
    print("\n" + md)
    print(f"model: {rel(model_out)}   predictions: {rel(work / 'predictions_test.json')}   FROC plot: {results['froc_plot']}")
    print(f"total time: {times['total']:.0f} s")


if __name__ == "__main__":
    main()
