"""Benchmarks written to docs/benchmarks.md: every figure a ratio measured side by side in one run.

Why ratios: the reference machine is a shared 2-core CPU whose load changes by the minute, so an
absolute time says more about the neighbours than about the code; the new and the old path run
interleaved, on the same data, in the same process. Absolute times are printed only on a GPU.
Each section runs in its own subprocess so that its peak memory (max RSS) is its own.

    python scripts/benchmark.py --size small                 # CPU, a few minutes
    python scripts/benchmark.py --size default --device cuda # GPU: adds ms per 512x512 slice
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
PATIENTS = {"tiny": 4, "small": 3, "default": 6}

from scripts.bench_time_to_f1 import bench_time_to_f1, render_row  # noqa: E402  (ROOT on sys.path first)
from scripts.bench_training import bench_training, render_rows  # noqa: E402
from scripts.bench_volume import _peak_mib, bench_volume, box_gap  # noqa: E402, F401  (box_gap: tests import it from here)


def machine(device: str) -> str:
    import torch

    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")),
        platform.processor(),
    )
    gpu = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else "none used"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {os.cpu_count()} cores (load average {load:.1f} at start), torch {torch.__version__}, CUDA: {gpu}"


def bench_deid(data: Path, pacs: Path, workers: int) -> dict:
    """De-identification files per second vs a plain pydicom read + write of the same files (the I/O floor)."""
    import pydicom
    from pydicom.misc import is_dicom

    from bundle.deid.deidentify import deidentify_folder

    files = sorted(p for p in pacs.rglob("*") if p.is_file() and is_dicom(p))
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        for i, f in enumerate(files):
            pydicom.dcmread(f).save_as(Path(tmp) / f"{i}.dcm")
        plain = time.perf_counter() - t
        t = time.perf_counter()
        deidentify_folder(pacs, Path(tmp) / "deid", key=b"benchmark-key-0123456789abcdef", workers=workers)
        deid = time.perf_counter() - t
    return {"files": len(files), "ratio": plain / deid, "deid_files_per_s": len(files) / deid, "plain_files_per_s": len(files) / plain}


def bench_mining(source: Path, out: Path, split: str) -> dict:
    """Both mining commands on `source` (cold, then warm page cache); objects/s as the miner reports it."""
    from bundle.mining.bench import mining_throughput

    res = mining_throughput(source, out, ["--split_file", split] if split else [])
    res["objects"] = json.loads((out / "lean" / "mining_report.json").read_text())["counts"]["objects_read"]
    return res


def run_section(args) -> None:
    """Child process: one section, its figures and peak memory as JSON on stdout."""
    warnings.filterwarnings("ignore")
    data, work = Path(args.data), Path(args.work)
    if args.section == "volume":
        res = bench_volume(data, args.device, args.repeats, args.model)
    elif args.section == "training":
        res = bench_training(data, args.device, args.iters, args.repeats)
    elif args.section == "time_to_f1":
        datalist = Path(args.ttf_datalist) if args.ttf_datalist else data / "datalist.json"
        res = bench_time_to_f1(datalist.resolve(), work / "time_to_f1", args.ttf_epochs, args.ttf_f1, args.device)
    elif args.section == "deid":
        res = bench_deid(data, work / "pacs" / "dicom", workers=min(2, os.cpu_count() or 1))
    else:
        src = Path(args.mining_source) if args.mining_source else work / "pacs" / "dicom"
        res = bench_mining(src, work / "mined", args.mining_split)
    res["peak_rss_mib"] = _peak_mib()
    print("BENCH " + json.dumps(res))


def prepare(size: str, work: Path) -> Path:
    from bundle.demo.pacs_export import export
    from bundle.demo.synth import generate

    data = work / "demo"
    if not (data / "datalist.json").is_file():
        generate(data, size=size, seed=1, n_patients=PATIENTS[size])
        export(data, work / "pacs", seed=0)
    return data


def child(args, section: str, data: Path, work: Path) -> dict:
    cmd = [sys.executable, "-W", "ignore", __file__, "--section", section, "--data", str(data), "--work", str(work), "--size", args.size]
    cmd += ["--device", args.device, "--repeats", str(args.repeats), "--iters", str(args.iters), "--model", args.model]
    cmd += ["--mining_source", args.mining_source, "--mining_split", args.mining_split]
    cmd += ["--ttf_datalist", args.ttf_datalist, "--ttf_epochs", str(args.ttf_epochs), "--ttf_f1", str(args.ttf_f1)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if proc.returncode or line is None:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    res = json.loads(line[6:])
    res["wall_s"] = time.perf_counter() - t
    return res


def _f(res: dict, key: str, fmt: str = "{:.2f}") -> str:
    return fmt.format(res[key]) if key in res else "not measured"


def render(results: dict, machine_line: str, args, command: str) -> str:
    """The markdown page. Why this long: one table row per figure, each with its own caveat."""
    gpu = args.device == "cuda"
    v, tr, m, d = (results.get(k, {"error": "not run"}) for k in ("volume", "training", "mining", "deid"))
    rows = ["| what | new vs previous (ratio, > 1 = faster) | detail | peak RSS (MiB) |", "|---|---|---|---|"]
    if "ratio" in v:
        detail = f"{v['slices']} slices in {v['volumes']} volumes; identical boxes: {'yes' if v['identical_boxes'] else 'NO'} ({v['n_boxes']} boxes"
        if not v["identical_boxes"] and "max_box_diff" in v:
            detail += f"; {v['count_mismatches']} volume(s) with another count, max |box diff| {v['max_box_diff']:.2g}, max |score diff| {v['max_score_diff']:.2g}"
        detail += ")"
        if gpu:
            detail += (
                f"; fp32 (TF32 off) {v['new_slices_per_s']:.0f} vs {v['old_slices_per_s']:.0f} slices/s, {v['volume_s']:.3f} s per volume"
            )
            if "amp_slices_per_s" in v:
                detail += f"; AMP {v['amp_slices_per_s']:.0f} slices/s, {v['amp_volume_s']:.3f} s per volume ({v['amp_n_boxes']} boxes)"
        rows.append(
            f"| volume inference, slices/s (batched channels-last slices + batch-wise box selection + vectorised scaling vs list of slices + per-slice MONAI scaling) | {v['ratio']:.2f}x | {detail} | {v['peak_rss_mib']:.0f} |"
        )
        su = f"start-up (imports, config, detector) = {v['startup_in_volumes']:.1f} volumes of inference" + (
            f" ({v['startup_s']:.1f} s)" if gpu else ""
        )
        rows.append(f"| process start-up, reported apart | - | {su} | - |")
        g = v.get("grid")
        if g:
            rows.append(
                f"| volume inference cost, 1 mm 3D volume on the canonical grid {g['grid_spacing']} mm vs the demo volume "
                f"on its own grid (s per volume, < 1 = cheaper) | {g['ratio_iso1mm_over_demo']:.2f}x | "
                f"{g['s_per_volume']['iso1mm_canonical']:.2f} s vs {g['s_per_volume']['demo_native']:.2f} s per volume; "
                f"{g['slices_per_volume']['iso1mm_canonical']} vs {g['slices_per_volume']['demo_native']} slices per volume "
                "(file reading, resampling and detection) | - |"
            )
        ps = v["per_slice"]
        line = f"TorchScript / eager fp32 speed {ps['torchscript_over_fp32']:.2f}x"
        if gpu:
            line += f"; ms per 512x512 slice: fp32 (TF32 off) {ps['fp32_ms']:.2f}, AMP {ps['amp_ms']:.2f}, TorchScript {ps['torchscript_ms']:.2f}"
        rows.append(f"| network on 512x512 slices (batch 16) | {ps['torchscript_over_fp32']:.2f}x | {line} | - |")
    else:
        rows.append(f"| volume inference | not measured | {v.get('error', '')} | - |")
    rows += render_rows(tr, gpu) + [render_row(results.get("time_to_f1", {"error": "not run"}), gpu)]
    if "lean" in m:
        lean, full = m["lean"], m["monai_bundle_run"]
        detail = (
            f"{m['objects']} objects ({args.mining_source or 'the generated export'}); lean command: {lean['objects_per_s_cold']:.0f} objects/s "
            f"cold, {lean['objects_per_s_warm']:.0f} warm, whole command {lean['command_wall_s_cold']:.1f} s cold / "
            f"{lean['command_wall_s_warm']:.1f} s warm (start-up {lean['startup_s']:.1f} s); monai.bundle run: "
            f"{full['command_wall_s_cold']:.1f} s cold (start-up {full['startup_s']:.1f} s); page cache dropped: "
            f"{'yes' if lean['cache_dropped'] else 'no'}; same files: {'yes' if m.get('outputs_identical') else 'NO'}; "
            f"load average {m['load_average_before'][0]:.1f} before, {m['load_average'][0]:.1f} after"
        )
        rows.append(
            f"| mining, whole command wall, cold cache (lean `python -m bundle.mining` vs `python -m monai.bundle run`, same config) | "
            f"{full['command_wall_s_cold'] / lean['command_wall_s_cold']:.2f}x | {detail} | {m.get('peak_rss_mib', 0):.0f} |"
        )
    else:
        rows.append(f"| mining | not measured in this run | {m.get('skipped') or m.get('error', '')} | - |")
    if "ratio" in d:
        detail = f"{d['files']} files" + (f"; {d['deid_files_per_s']:.0f} files/s" if gpu else "")
        rows.append(
            f"| de-identification, files/s (vs a plain pydicom read + write of the same files) | {d['ratio']:.2f}x | {detail} | {d['peak_rss_mib']:.0f} |"
        )
    else:
        rows.append(f"| de-identification | not measured | {d.get('error', '')} | - |")
    head = [
        "# Benchmarks",
        "",
        f"Written by `{command}`; do not edit by hand. Every ratio was measured side by side in this one run",
        "(the two paths interleaved, same data, same process; medians of the timed rounds). Absolute times are",
        "given only on a GPU: on the shared 2-core CPU they follow the neighbours' load, ratios much less so.",
        "",
        f"Machine: {machine_line}. Data: `--size {args.size}` demo generated into a temp dir. Volume inference uses",
        f"{'the weights in ' + args.model if args.model else 'a seeded untrained network (speed depends on the weights only through the slices with a candidate box)'}"
        f"{_volume_setting(results.get('volume', {}))}.",
        "",
    ]
    return "\n".join(head + rows) + "\n\n" + NOTES


def _volume_setting(v: dict) -> str:
    if "context_slices" not in v:
        return ""
    return f", {v['context_slices']} input slice(s), score threshold {v['score_threshold']:.4g}"


NOTES = """Notes
- Time to a validation F1 (scripts/bench_time_to_f1.py): two whole trainings, one per arm, the same seed; on one
  machine both draw the same batches, so the row says whether their F1 curves agreed (then the ratio is the pipeline's).
- Training (scripts/bench_training.py): a step can fall short of the network alone without waiting for data
  when the loader workers and the network share too few cores (the 2-core machine, busy with other jobs);
  with cores to spare the workers take nothing from the network and the waiting share is the whole gap.
- Peak RSS is each section's own subprocess (`resource.getrusage` max RSS), start-up included.
- GPU figures (ms per 512x512 slice with fp32, AMP and TorchScript) appear only with `--device cuda`.
  Run on a GPU machine: `python scripts/benchmark.py --size default --device cuda` (none was lent to this run
  unless the machine line above names one); `scripts/gpu_figures.sh` runs it there with a default-size
  self-training demo. GPU runs so far (an H200, two sessions): docs/benchmarks_gpu.md (the second) and docs/training.md, "On a GPU".
"""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=list(PATIENTS), default="small")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds per path (medians are compared)")
    ap.add_argument("--iters", type=int, default=20, help="training iterations per measurement")
    ap.add_argument("--model", default="", help="weights for the volume section (default: a seeded untrained network)")
    ap.add_argument("--sections", default="volume,training,time_to_f1,mining,deid")
    ap.add_argument(
        "--ttf_datalist",
        default="",
        help="key-slice datalist for time_to_f1 (default: the generated demo's), e.g. data/mined/datalist.json",
    )
    ap.add_argument("--ttf_epochs", type=int, default=20, help="epochs of each time_to_f1 training")
    ap.add_argument("--ttf_f1", type=float, default=0.5, help="the validation F1 time_to_f1 times")
    ap.add_argument("--work", default="", help="keep the generated data here (default: a temp dir)")
    ap.add_argument(
        "--mining_source", default="", help="mine this export (default: the generated one), e.g. a de-identified default demo export"
    )
    ap.add_argument("--mining_split", default="", help="its split file (--split_file of configs/mine.yaml)")
    ap.add_argument("--section", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.section:
        return run_section(args)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        data = prepare(args.size, work)
        results = {s: child(args, s, data, work) for s in args.sections.split(",")}
    Path(args.out).write_text(
        render(results, machine(args.device), args, " ".join(["python", "scripts/benchmark.py", *(argv or sys.argv[1:])]))
    )
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
