"""The benchmark's time-to-validation-F1 section (scripts/benchmark.py): whole trainings, now (train.yaml) vs before (MONAI CacheDataset).

Why whole trainings: a faster step only matters if the model gets as good as soon. Both arms are the
command a user runs, `python -m monai.bundle run --config_file configs/train.yaml`, on the same key-slice
datalist with the same seed, validating after every epoch; the clock runs from the command's launch
(start-up included) to the first validation at or above the target F1 (key slices, IoU 0.5). The arms
draw the same batches (tests/engines/test_loader.py), so on one machine their F1 curves should agree epoch for
epoch, and the page says whether they did: if they do, the time ratio is the pipeline's alone.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from bundle.paths import ROOT, config

ARMS = {  # overrides of train.yaml per arm (the "before" arm as bundle/benchmarks/training.py builds it)
    "now": [],
    "before": ["--train#dataset#_target_", "CacheDataset", "--train#dataloader#collate_fn", "$monai.data.utils.no_collation"],
}
METRICS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - .*Epoch\[(\d+)\] Metrics -- .*?val_mAP_F1: ([0-9.]+)", re.M)


def f1_curve(log: str, t0: float) -> list[tuple[int, float, float]]:
    """(epoch, validation F1, seconds since launch) for every validation line of a training log."""
    out = []
    for stamp, epoch, f1 in METRICS.findall(log):
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()  # the log's local time, as time.time() counts
        out.append((int(epoch), float(f1), round(at - t0, 2)))
    return out


def reached(curve: list[tuple[int, float, float]], target: float) -> tuple[int, float] | None:
    """(epoch, seconds) of the first validation at or above `target`, or None."""
    return next(((e, s) for e, f1, s in curve if f1 >= target), None)


def train_arm(arm: str, datalist: Path, out: Path, epochs: int, device: str) -> dict:
    """One whole training of configs/train.yaml in a fresh process; its F1 curve and wall time."""
    cmd = [sys.executable, "-W", "ignore", "-m", "monai.bundle", "run", "--config_file", config("train.yaml")]
    cmd += ["--bundle_root", str(ROOT), "--dataset_dir", str(datalist.parent), "--data_list_file_path", str(datalist)]
    cmd += ["--ckpt_dir", str(out / arm / "models"), "--output_dir", str(out / arm / "eval"), "--epochs", str(epochs)]
    cmd += [
        "--val_interval",
        "1",
        "--seed",
        "0",
        "--train_state_interval",
        "0",
        "--device",
        device,
    ]  # a name: the engines take it as a device
    t0 = time.time()
    proc = subprocess.run(cmd + ARMS[arm], cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - t0
    log = proc.stdout + proc.stderr
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{arm}.log").write_text(log)
    if proc.returncode:
        raise RuntimeError(f"{arm} training failed (exit {proc.returncode}): {(log.strip().splitlines() or ['no output'])[-1]}")
    return {"wall_s": round(wall, 2), "curve": f1_curve(log, t0)}


def _median_hit(hits: list[tuple[int, float] | None]) -> list[float] | None:
    """[median epoch, median seconds] over an arm's trainings; None if any of them missed the target."""
    if not hits or not all(hits):
        return None
    return [statistics.median_low(h[0] for h in hits), statistics.median(h[1] for h in hits)]


def bench_time_to_f1(datalist: Path, out: Path, epochs: int, target: float, device: str, repeats: int = 2) -> dict:
    """`repeats` trainings per arm in ABBA order (now, before, before, now, ...): whichever runs first on a cold
    machine pays its start-up (imports from disk, CUDA), so neither arm always does. Medians per arm."""
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for r in range(repeats):
        for arm in list(ARMS)[:: 1 if r % 2 == 0 else -1]:
            runs[arm].append(train_arm(arm, datalist, out / f"run{r}", epochs, device))
    curves = [[c[:2] for c in run["curve"]] for arm_runs in runs.values() for run in arm_runs]
    res: dict = {"datalist": str(datalist), "epochs": epochs, "target_f1": target, "repeats": repeats, "runs": runs}
    res["same_curve"] = all(c == curves[0] for c in curves)
    res["best_f1"] = {arm: max((f1 for run in rs for _, f1, _ in run["curve"]), default=0.0) for arm, rs in runs.items()}
    res["reached"] = {arm: _median_hit([reached(run["curve"], target) for run in rs]) for arm, rs in runs.items()}
    if all(res["reached"].values()):
        res["ratio"] = res["reached"]["before"][1] / res["reached"]["now"][1]
    walls = {arm: statistics.median(run["wall_s"] for run in rs) for arm, rs in runs.items()}
    res["training_ratio"] = walls["before"] / walls["now"]
    return res


def render_row(r: dict, gpu: bool) -> str:
    """One row of docs/benchmarks.md."""
    what = "training, time to a validation F1 (whole `monai.bundle run` of train.yaml from launch: now vs MONAI CacheDataset as before)"
    if "error" in r:
        return f"| {what} | not measured | {r['error']} | - |"
    best = r["best_f1"]
    detail = f"{r['datalist']}, {r['epochs']} epochs, validation every epoch, {r['repeats']} trainings per arm (ABBA order, medians); "
    got = r["reached"]
    if "ratio" in r:
        detail += f"F1 >= {r['target_f1']} at epoch {got['now'][0]} (now) and {got['before'][0]} (before)"
        if gpu:
            detail += f", {got['now'][1]:.0f} vs {got['before'][1]:.0f} s"
        cell = f"{r['ratio']:.2f}x"
    else:
        missed = " and ".join(a for a in ("now", "before") if not got[a])
        detail += f"F1 {r['target_f1']} not reached by {missed} (best F1 now {best['now']:.3f}, before {best['before']:.3f})"
        cell = "-"
    detail += f"; F1 curves epoch for epoch the same: {'yes' if r['same_curve'] else 'NO'}; whole training {r['training_ratio']:.2f}x"
    return f"| {what} | {cell} | {detail} | - |"
