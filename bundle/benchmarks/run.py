"""The whole benchmark: the demo data generated once, each section in its own process, then the page.

Why ratios: the reference machine is a shared 2-core CPU whose load changes by the minute, so an
absolute time says more about the neighbours than about the code; the new and the old path run
interleaved, on the same data, in the same process. Absolute times are printed only on a GPU.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bundle.benchmarks.page import render
from bundle.benchmarks.section import PREFIX
from bundle.paths import ROOT

PATIENTS = {"tiny": 4, "small": 3, "default": 6}  # demo patients per --size


def machine(device: str) -> str:
    """The page's machine line: CPU, cores and load, torch, the GPU if one is used."""
    import torch

    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")),
        platform.processor(),
    )
    gpu = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else "none used"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {os.cpu_count()} cores (load average {load:.1f} at start), torch {torch.__version__}, CUDA: {gpu}"


def prepare(size: str, work: Path) -> Path:
    """The demo data and its PACS export under ``work`` (kept if already there); the demo folder."""
    from bundle.demo.pacs_export import export
    from bundle.demo.synth import generate

    data = work / "demo"
    if not (data / "datalist.json").is_file():
        generate(data, size=size, seed=1, n_patients=PATIENTS[size])
        export(data, work / "pacs", seed=0)
    return data


def child(options: dict, section: str, data: Path, work: Path) -> dict:
    """One section in a fresh process (bundle/benchmarks/section.py); its figures and wall time, or its last error line."""
    o = json.dumps(options | {"section": section, "data": str(data), "work": str(work)})
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-W", "ignore", "-m", "bundle.benchmarks.section", o], cwd=ROOT, capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(PREFIX)), None)
    if proc.returncode or line is None:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    res = json.loads(line[len(PREFIX) :])
    res["wall_s"] = time.perf_counter() - t
    return res


def run(args, command: str) -> dict:
    """Every section of ``args.sections`` on one generated demo; the page written to ``args.out``; the results.

    Each section's figures are stored with the run that measured them in ``<out>.json``; the sections this run did
    not measure keep their stored records (a GPU session measuring the volume section alone keeps the CPU rows)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        data = prepare(args.size, work)
        results = {s: child(vars(args), s, data, work) for s in args.sections.split(",")}
    records = merge_records(Path(args.out).with_suffix(".json"), results, vars(args), command, machine(args.device))
    Path(args.out).write_text(render(records))
    return results


def merge_records(path: Path, results: dict, options: dict, command: str, machine_line: str) -> dict:
    """The stored section records with this run's sections replaced; written back to ``path``.

    A stored record that no longer parses is not used (the page then says "not run" for it), never half-read."""
    try:
        records = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError as e:
        print(f"{path}: stored benchmark records unreadable ({e}); only this run's sections are kept", file=sys.stderr)
        records = {}
    when = time.strftime("%Y-%m-%d", time.gmtime())
    keep = {k: options[k] for k in ("size", "device", "repeats", "iters", "model", "mining_source", "ttf_epochs") if k in options}
    for section, res in results.items():
        records[section] = {"results": res, "options": keep, "command": command, "machine": machine_line, "when": when}
    path.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
    return records
