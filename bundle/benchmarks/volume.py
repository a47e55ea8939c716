"""The benchmark's volume inference section: today's path against the batched one, the canonical grid's cost, start-up.

Run through scripts/benchmark.py (`--sections volume`), which writes docs/benchmarks.md (bundle/benchmarks/page.py).
"""

from __future__ import annotations

import atexit
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bundle.paths import ROOT, config, read_config


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _volume_parser(device: str, model: str):
    import torch
    from monai.bundle import ConfigParser

    from bundle.engines.checkpoints import input_channels

    parser = read_config(ConfigParser(), config("inference_volume.yaml"))
    # the model's own input slices and the operating point shipped beside it, as inference_volume.yaml reads them;
    # without a model an empty folder: 2D and the config's default threshold, whatever the checkout's models/ holds
    parser["ckpt_dir"] = str(Path(model).resolve().parent) if model else _empty_dir()
    if model:
        parser["context_slices"] = input_channels(Path(model).resolve())  # the file itself: it need not be <ckpt_dir>/model.pt
    parser["slice_sliding_window"] = False
    parser["device"] = torch.device(device)
    parser["amp"] = device == "cuda"
    return parser


def _empty_dir() -> str:
    """An empty model folder, removed when the process exits (each benchmark child made one and left it in /tmp)."""
    path = tempfile.mkdtemp(prefix="bench_no_model_")
    atexit.register(shutil.rmtree, path, True)
    return path


def _detector(parser, model: str):
    import torch

    torch.manual_seed(0)
    det = parser.get_parsed_content("detector")
    if model:
        det.network.load_state_dict(torch.load(model, map_location="cpu", weights_only=True))
    parser.get_parsed_content("detector_ops")
    return det.eval()


def bench_volume(data: Path, device: str, repeats: int, model: str) -> dict:
    """Slices per second, previous path (a list of slices, MONAI's per-image box selection and NMS, per-slice MONAI scaling) vs the new one.

    One interleaved loop times both paths on the same volumes and checks their boxes."""
    import torch

    if device == "cuda":  # fp32 means fp32: cuDNN's default TF32 rounds each path's own algorithm differently
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    parser = _volume_parser(device, model)
    det, pre = _detector(parser, model), parser.get_parsed_content("preprocessing")
    scale = pre.transforms[-1]
    images = sorted(str(p) for p in data.glob("*/t1c.nii.gz"))
    new_cfg = dict(
        stack=True, slice_batch=det.slice_batch, channels_last=det.channels_last, batched_select=True, vectorised=True, amp=False
    )
    old_cfg = dict(stack=False, slice_batch=8, channels_last=False, batched_select=False, vectorised=False, amp=False)
    paths = {"old": old_cfg, "new": new_cfg}
    if device == "cuda":  # AMP changes the arithmetic, so it is timed beside the fp32 pair whose boxes are compared
        paths["new_amp"] = new_cfg | {"amp": True}
    times, boxes, n_slices = _time_paths(paths, det, scale, pre, images, device, repeats)
    out = _path_figures(times, boxes, n_slices, len(images), det, float(parser.get_parsed_content("score_threshold")))
    out["startup_s"] = _startup_seconds(device)
    out["startup_in_volumes"] = out["startup_s"] / out["volume_s"]
    out["per_slice"] = _per_slice_512(det, device)
    _configure(det, scale, new_cfg)
    out["grid"] = bench_grid(det, pre, images, device, repeats, Path(parser["ckpt_dir"]))
    return out


def _configure(det, scale, cfg: dict) -> None:
    """One path's settings on the detector (the scaling transform's own: vectorised)."""
    for key, value in cfg.items():
        setattr(scale if key == "vectorised" else det, key, value)


def _time_paths(paths: dict, det, scale, pre, images: list[str], device: str, repeats: int) -> tuple[dict, dict, int]:
    """Each path's timed rounds (the first round warms up every path and is not timed), its last boxes, the slices."""
    import torch

    times: dict[str, list[float]] = {name: [] for name in paths}
    boxes: dict[str, list] = {}
    n_slices = 0
    for rep in range(repeats + 1):
        for name, cfg in paths.items():
            _configure(det, scale, cfg)
            t = time.perf_counter()
            outs = []
            for img in images:
                vol = pre({"image": img})["image"].to(device)
                outs.append(det([vol])[0])
                n_slices += vol.shape[-1] if (rep == 1 and name == "new") else 0
            if device == "cuda":
                torch.cuda.synchronize()
            if rep:
                times[name].append(time.perf_counter() - t)
            boxes[name] = [{k: v.cpu() for k, v in o.items()} for o in outs]
    return times, boxes, n_slices


def _path_figures(times: dict, boxes: dict, n_slices: int, n_volumes: int, det, score_threshold: float) -> dict:
    """The section's figures from the timed rounds: slices per second of each path, their ratio, how alike their boxes are."""
    old, new = statistics.median(times["old"]), statistics.median(times["new"])
    out = {
        "slices": n_slices,
        "volumes": n_volumes,
        "ratio": old / new,
        **box_gap(boxes["old"], boxes["new"]),
        "n_boxes": sum(len(b["box"]) for b in boxes["new"]),
        "context_slices": int(det.context_slices),
        "score_threshold": score_threshold,
    }
    out["old_slices_per_s"], out["new_slices_per_s"] = n_slices / old, n_slices / new
    out["volume_s"] = new / n_volumes
    if "new_amp" in times:
        amp = statistics.median(times["new_amp"])
        out["amp_slices_per_s"], out["amp_volume_s"], out["amp_n_boxes"] = (
            n_slices / amp,
            amp / n_volumes,
            sum(len(b["box"]) for b in boxes["new_amp"]),
        )
    return out


def bench_grid(det, pre, images: list[str], device: str, repeats: int, ckpt_dir: Path) -> dict:
    """Seconds per volume: a 1 mm 3D volume (the demo volume resampled to 1 x 1 x 1 mm, as an MPRAGE stores it) read,
    resampled to the canonical grid and detected, against today's path (the demo volume on its own grid), as a ratio.

    Why: the canonical grid (bundle/transforms/grid.py) makes every protocol cost what the grid costs, plus the resampling;
    the grid is the model's grid.json, else the one the demo's series would plan."""
    import numpy as np

    from bundle.transforms import grid

    spacing = grid.spacing(ckpt_dir)
    if min(spacing) <= 0:
        spacing = grid.choose_spacing(np.stack([grid.ras_spacing(p) for p in images]))["spacing"]
    resampler = next(t for t in pre.transforms if hasattr(t, "spacing_transform")).spacing_transform  # the config's Spacing
    with tempfile.TemporaryDirectory(prefix="bench_grid_") as tmp:
        paths = {"demo_native": (images, [-1.0, -1.0, -1.0]), "iso1mm_canonical": (_iso1mm_copies(images, Path(tmp)), spacing)}
        times, slices = _time_grids(paths, resampler, det, pre, device, repeats)
    resampler.pixdim = np.asarray(grid.spacing(ckpt_dir), dtype=np.float64)
    per = {k: statistics.median(v) / len(images) for k, v in times.items()}
    return {
        "grid_spacing": spacing,
        "s_per_volume": per,
        "slices_per_volume": slices,
        "ratio_iso1mm_over_demo": per["iso1mm_canonical"] / per["demo_native"],
    }


def _iso1mm_copies(images: list[str], tmp: Path) -> list[str]:
    """The same brains as 1 mm volumes, written as files in ``tmp`` (reading them is part of the cost)."""
    import nibabel as nib
    import numpy as np
    from monai.transforms import LoadImage

    from bundle.inference.protocols import resample

    iso = []
    for i, img in enumerate(images):
        v = resample(LoadImage(image_only=True, ensure_channel_first=True)(img), [1.0, 1.0, 1.0])
        nib.save(nib.Nifti1Image(np.asarray(v[0], dtype=np.float32), np.asarray(v.affine)), tmp / f"{i}.nii.gz")
        iso.append(str(tmp / f"{i}.nii.gz"))
    return iso


def _time_grids(paths: dict, resampler, det, pre, device: str, repeats: int) -> tuple[dict, dict]:
    """Each grid's timed rounds (the first warms up) and its slices per volume."""
    import numpy as np
    import torch

    times: dict[str, list[float]] = {k: [] for k in paths}
    slices: dict[str, int] = {}
    for rep in range(repeats + 1):
        for name, (files, pixdim) in paths.items():
            resampler.pixdim = np.asarray(pixdim, dtype=np.float64)
            t = time.perf_counter()
            n = 0
            for f in files:
                vol = pre({"image": f})["image"].to(device)
                det([vol])
                n += vol.shape[-1]
            if device == "cuda":
                torch.cuda.synchronize()
            if rep:
                times[name].append(time.perf_counter() - t)
            slices[name] = n // len(files)
    return times, slices


def box_gap(old: list[dict], new: list[dict]) -> dict:
    """Are the two paths' boxes the same (counts equal, boxes within 1e-3, scores within 1e-4)? And if not, how far apart."""
    counts = sum(len(a["box"]) != len(b["box"]) for a, b in zip(old, new))
    pairs = [(a, b) for a, b in zip(old, new) if len(a["box"]) == len(b["box"]) and len(a["box"])]
    d_box = max((float((a["box"] - b["box"]).abs().max()) for a, b in pairs), default=0.0)
    d_score = max((float((a["label_scores"] - b["label_scores"]).abs().max()) for a, b in pairs), default=0.0)
    return {
        "identical_boxes": counts == 0 and d_box <= 1e-3 and d_score <= 1e-4,
        "count_mismatches": counts,
        "max_box_diff": d_box,
        "max_score_diff": d_score,
    }


def _startup_seconds(device: str) -> float:
    """A fresh interpreter: imports, config parsing and building the detector (what every command pays once)."""
    code = (
        "import sys; sys.path.insert(0, '.'); from bundle.benchmarks.volume import _volume_parser, _detector;"
        f"_detector(_volume_parser('{device}', ''), '')"
    )
    t = time.perf_counter()
    subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - t


def _per_slice_512(det, device: str, n: int = 16) -> dict:
    """Network time per 512x512 slice: fp32, AMP (CUDA only) and TorchScript, batches of 16."""
    import torch

    net = det.network
    x = torch.rand(n, net.feature_extractor.body.conv1.in_channels, 512, 512, device=device)
    scripted = torch.jit.script(net)

    def once(fn, amp: bool = False) -> float:
        """Median of timed calls after three warm-ups (TorchScript's profiling executor optimises on the second call)."""
        times = []
        with torch.inference_mode(), torch.autocast(device, enabled=amp):
            for i in range(3 + (5 if device == "cuda" else 1)):
                if device == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                fn(x)
                if device == "cuda":
                    torch.cuda.synchronize()
                if i >= 3:
                    times.append(time.perf_counter() - t)
        return statistics.median(times) / n * 1000

    fp32, ts = once(net), once(scripted)
    res = {"torchscript_over_fp32": fp32 / ts}
    if device == "cuda":
        res.update(fp32_ms=fp32, torchscript_ms=ts, amp_ms=once(net, amp=True))
    return res
