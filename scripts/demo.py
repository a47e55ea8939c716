"""The README's main job: demo data -> train -> evaluate (vs. an untrained model) -> inference.

Every step is a plain ``python -m monai.bundle run`` command, printed before it runs, so a user
can repeat any one of them by hand.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRAIN = "configs/train.yaml"
EVAL = "['configs/train.yaml','configs/evaluate.yaml']"


def bundle_run(config: str, **overrides) -> float:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config]
    for k, v in overrides.items():
        cmd += [f"--{k}", str(v)]
    print("\n$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    t0 = time.time()
    with open(ROOT / "eval" / "demo.log", "a") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(f"step failed (exit {proc.returncode}); see eval/demo.log")
    dt = time.time() - t0
    print(f"  done in {dt:.0f} s", flush=True)
    return dt


def save_untrained(path: Path) -> None:
    """The same network, same seed, no training: the floor the trained model must clear."""
    import torch
    from monai.bundle import ConfigParser
    from monai.utils import set_determinism

    parser = ConfigParser()
    parser.read_config(ROOT / TRAIN)
    parser["bundle_root"] = str(ROOT)
    set_determinism(seed=parser["seed"])
    net = parser.get_parsed_content("network_def")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": net.state_dict()}, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", default="default", help="demo data size: tiny, small, default, large")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="override train.yaml's epochs")
    a = ap.parse_args()
    (ROOT / "eval").mkdir(exist_ok=True)
    (ROOT / "eval" / "demo.log").write_text("")
    t_start = time.time()
    times = {}

    from bundle.demo.synth import generate

    data = ROOT / "data" / "demo"
    print(f"1/5 demo data ({a.size}, seed {a.seed}) -> {data}", flush=True)
    t0 = time.time()
    res = generate(data, size=a.size, seed=a.seed)
    times["data"] = time.time() - t0
    print(f"  {res['counts']} images in {times['data']:.0f} s", flush=True)

    common = {"bundle_root": ROOT, "dataset_dir": data}
    print("2/5 train", flush=True)
    extra = {"epochs": a.epochs} if a.epochs else {}
    times["train"] = bundle_run(TRAIN, **common, **extra)

    print("3/5 evaluate an untrained model (same network, same seed)", flush=True)
    save_untrained(ROOT / "models" / "untrained.pt")
    times["eval_untrained"] = bundle_run(EVAL, **common, ckpt_path=ROOT / "models" / "untrained.pt", output_dir=ROOT / "eval" / "untrained")
    print("4/5 evaluate the trained model", flush=True)
    times["eval_trained"] = bundle_run(EVAL, **common, output_dir=ROOT / "eval" / "trained")
    print("5/5 inference on the test split", flush=True)
    times["inference"] = bundle_run("configs/inference.yaml", **common, output_path=ROOT / "eval" / "predictions.json")

    trained = json.loads((ROOT / "eval" / "trained" / "metrics.json").read_text())
    untrained = json.loads((ROOT / "eval" / "untrained" / "metrics.json").read_text())

    def figures(m: dict) -> dict:
        ci = m["test_ci95"]["f1"]
        return {
            "mAP": m["test_mAP"],
            "F1@IoU0.5": m["test"]["f1"],
            "F1_ci95": [ci["ci_low"], ci["ci_high"]],
            "precision": m["test"]["precision"],
            "recall": m["test"]["recall"],
            "cpm": m["test_froc"]["cpm"],
        }

    summary = {
        "test_images": trained["test_images"],
        "test_patients": trained["test_patients"],
        "trained": figures(trained),
        "untrained": figures(untrained),
        "seconds": {k: round(v) for k, v in times.items()} | {"total": round(time.time() - t_start)},
    }
    (ROOT / "eval" / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    print("\n== results (held-out test patients) ==")
    print(f"test images / patients: {summary['test_images']} / {summary['test_patients']}")
    for name in ("trained", "untrained"):
        f = summary[name]
        print(
            f"{name:9s}: COCO mAP {f['mAP']:.3f}  F1@IoU0.5 {f['F1@IoU0.5']:.3f} (95% CI {f['F1_ci95'][0]:.3f}-{f['F1_ci95'][1]:.3f})"
            f"  precision {f['precision']:.3f}  recall {f['recall']:.3f}  FROC CPM {f['cpm']:.3f}"
        )
    print("model      : models/model.pt")
    print("metrics    : eval/trained/metrics.json, eval/trained/summary.md")
    print(f"FROC plot  : {trained['plots']['froc']}")
    print("predictions: eval/predictions.json")
    print(f"total time : {summary['seconds']['total']} s")


if __name__ == "__main__":
    main()
