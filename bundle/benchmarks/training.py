"""The benchmark's training section (scripts/benchmark.py `--sections training`): is the data pipeline ever what a training step waits for?

For key-slice training (configs/train.yaml) and whole-series training (train_series.yaml over it), each
at 0 loader workers and at train.yaml's own `num_workers` (fixed, as a seed fixes the model with it):
- the loader alone, three arms: train.yaml now (LeanCacheDataset, NumPy hand-over); before (MONAI's
  CacheDataset: a deep copy of the cached item per draw, metadata tracked, every tensor handed over
  through a shared-memory file of its own); plain (a Dataset that decodes and normalises every draw);
- the network alone, on one batch held in memory: the speed a step would have if loading were free;
- full steps (loader + network) now, and before (CacheDataset, its 2 workers), with the share of each
  step's time spent waiting for the next batch.
On a CPU the network runs on one thread: on the shared 2-core machine more threads spin against the
neighbours' jobs and the figures swing tenfold. One epoch spans every timed batch, as in a real training
(the default demo's epochs are about 80 batches), so workers start once per measurement, before the clock.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from bundle.paths import config as config_path
from bundle.paths import read_config

CONFIGS = {"key_slices": ["train.yaml"], "series": ["train.yaml", "train_series.yaml"]}
SERIES_DATALIST = "datalist_volumes.json"
BEFORE_WORKERS = 2  # train.yaml's num_workers before the lean cache (the same fixed 2 it has now)
DATASETS = {  # overrides of train.yaml per arm
    "plain": {"train#dataset": {"_target_": "Dataset", "data": "@train_datalist", "transform": "@train#preprocessing"}},
    "monai_cache": {"train#dataset#_target_": "CacheDataset", "train#dataloader#collate_fn": "$monai.data.utils.no_collation"},
    "lean": {},  # train.yaml as it is
}


def write_series_datalist(data: Path) -> None:
    """The demo's training and validation volumes as a whole-series datalist, for train_series.yaml."""
    from bundle.demo.volumes import write_volume_datalist

    if not (data / SERIES_DATALIST).is_file():
        write_volume_datalist(data, data / SERIES_DATALIST, ("training", "validation"))


def train_parser(data: Path, device: str, config: str, workers: int, dataset: str, draws: int):
    """The training config with `dataset` as train#dataset and one epoch of `draws` items."""
    import torch
    from monai.bundle import ConfigParser

    parser = read_config(ConfigParser(), [config_path(c) for c in CONFIGS[config]])
    parser.update({"dataset_dir": str(data), "num_workers": workers, "device": torch.device(device), "amp": device == "cuda"})
    if config == "series":
        parser["data_list_file_path"] = str(data / SERIES_DATALIST)
    for key, value in DATASETS[dataset].items():
        parser[key] = value
    parser["train#dataloader#shuffle"] = False
    parser["train#dataloader#sampler"] = {
        "_target_": "torch.utils.data.RandomSampler",
        "data_source": "@train#dataset",
        "num_samples": draws,
    }
    return parser


def _stepper(parser):
    """One optimiser step of the config's detector on a batch (what DetectionTrainer does, without the engine)."""
    import torch

    from bundle.engines.detection import flatten_batch, split_inputs

    torch.manual_seed(0)
    det, opt = parser.get_parsed_content("detector"), parser.get_parsed_content("optimizer")
    parser.get_parsed_content("detector_ops")
    det.train()
    device = next(det.network.parameters()).device

    def step(batch) -> None:
        images, targets = split_inputs(flatten_batch(batch), device, "box", "label")
        losses = det(images, targets)
        opt.zero_grad()
        (losses[det.cls_key] + losses[det.box_reg_key]).backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def timed(loader, iters: int, step=None) -> tuple[float, float]:
    """(batches per second, share of the time spent waiting for batches) over `iters` batches after a first one."""
    it = iter(loader)
    batch = next(it)  # workers start and the first batch arrives before the clock
    if step is not None:
        step(batch)
    wait, t0 = 0.0, time.perf_counter()
    for _ in range(iters):
        t = time.perf_counter()
        batch = next(it)
        wait += time.perf_counter() - t
        if step is not None:
            step(batch)
    total = time.perf_counter() - t0
    return iters / total, wait / total


def network_alone(loader, iters: int, step) -> float:
    """Steps per second on one batch held in memory: the speed a training step would have if loading were free."""
    batch = next(iter(loader))
    step(batch)
    t = time.perf_counter()
    for _ in range(iters):
        step(batch)
    return iters / (time.perf_counter() - t)


def bench_config(data: Path, device: str, config: str, iters: int, repeats: int) -> dict:
    """One config's loader, network and step figures: medians over `repeats` interleaved rounds."""
    from monai.bundle import ConfigParser

    n = int(ConfigParser.load_config_file(config_path("train.yaml"))["num_workers"])  # what a training runs with
    draws = (iters + 2) * 4 * 2  # batch_size 4: every timed batch in one epoch, with room for the prefetched ones
    loaders = {
        f"loader_{ds}_w{w}": train_parser(data, device, config, w, ds, draws).get_parsed_content("train#dataloader")
        for ds in DATASETS
        for w in sorted({0, n})
    }
    steps = {f"step_lean_w{w}": ("lean", w) for w in sorted({0, n})} | {"step_before": ("monai_cache", BEFORE_WORKERS)}
    step_loaders = {
        k: train_parser(data, device, config, w, ds, draws).get_parsed_content("train#dataloader") for k, (ds, w) in steps.items()
    }
    step = _stepper(train_parser(data, device, config, 0, "lean", draws))
    runs: dict[str, list[float]] = {}
    for _ in range(repeats):
        for key, loader in loaders.items():
            runs.setdefault(key, []).append(timed(loader, iters)[0])
        runs.setdefault("network", []).append(network_alone(loaders[f"loader_lean_w{n}"], iters, step))
        for key, loader in step_loaders.items():
            speed, wait = timed(loader, iters, step)
            runs.setdefault(key, []).append(speed)
            runs.setdefault("wait_" + key[5:], []).append(wait)
    out = {k: statistics.median(v) for k, v in runs.items()}
    return out | {"workers": n, "before_workers": BEFORE_WORKERS, "items": len(loaders[f"loader_lean_w{n}"].dataset)}


def bench_training(data: Path, device: str, iters: int, repeats: int) -> dict:
    """Both training configs; the whole-series one needs the demo's volumes as a datalist (written if missing)."""
    import torch

    if device != "cuda":
        torch.set_num_threads(1)
    write_series_datalist(data)
    return {config: bench_config(data, device, config, iters, repeats) for config in CONFIGS}


def _loader_cells(r: dict, gpu: bool) -> tuple[str, str]:
    """Now vs before at each worker count; then each against a plain Dataset (and it/s on a GPU)."""
    ws = sorted({0, r["workers"]})
    ratio = ", ".join(f"{w} workers {r[f'loader_lean_w{w}'] / r[f'loader_monai_cache_w{w}']:.2f}x" for w in ws)
    vs_plain = ", ".join(
        f"{w} workers now {r[f'loader_lean_w{w}'] / r[f'loader_plain_w{w}']:.2f}x, before {r[f'loader_monai_cache_w{w}'] / r[f'loader_plain_w{w}']:.2f}x"
        + (f" ({r[f'loader_lean_w{w}']:.0f} vs {r[f'loader_monai_cache_w{w}']:.0f} vs {r[f'loader_plain_w{w}']:.0f} it/s)" if gpu else "")
        for w in ws
    )
    return ratio, vs_plain


def _step_cells(r: dict, gpu: bool) -> tuple[str, str]:
    """Now (train.yaml's workers) vs before (CacheDataset, 2 workers); then shares of the network alone's speed and waiting."""
    nw, net = r["workers"], r["network"]
    ratio = f"{r[f'step_lean_w{nw}'] / r['step_before']:.2f}x ({nw} workers vs {r['before_workers']})"
    detail = (
        f"speed as a share of the network alone: now {r[f'step_lean_w{nw}'] / net:.0%} (0 workers {r['step_lean_w0'] / net:.0%}), "
        f"before {r['step_before'] / net:.0%}; time waiting for the next batch: now {r[f'wait_lean_w{nw}']:.0%} "
        f"(0 workers {r['wait_lean_w0']:.0%}), before {r['wait_before']:.0%}"
    )
    return ratio, detail + (f"; network alone {net:.1f} it/s" if gpu else "")


def render_rows(tr: dict, gpu: bool) -> list[str]:
    """Two rows of docs/benchmarks.md: the loader alone, and the full step (with the network alone as the bar)."""
    if "error" in tr:
        return [f"| training | not measured | {tr['error']} | - |"]
    names = {"key_slices": "key slices", "series": "whole series"}
    cells = {c: (_loader_cells(tr[c], gpu), _step_cells(tr[c], gpu)) for c in CONFIGS if c in tr}
    loader = [f"{names[c]}: {v[0][0]}" for c, v in cells.items()], [f"{names[c]}: {v[0][1]}" for c, v in cells.items()]
    step = [f"{names[c]}: {v[1][0]}" for c, v in cells.items()], [f"{names[c]}: {v[1][1]}" for c, v in cells.items()]
    return [
        "| training data loader alone, it/s (LeanCacheDataset + NumPy hand-over vs MONAI CacheDataset as before) | "
        f"{'; '.join(loader[0])} | vs a plain Dataset (decoding every draw): {'; '.join(loader[1])} | {tr.get('peak_rss_mib', 0):.0f} |",
        f"| training step (loader + network), it/s (now vs before) | {'; '.join(step[0])} | {'; '.join(step[1])} | - |",
    ]
