"""One benchmark section in its own process: its figures and peak memory as one JSON line on stdout.

Why a process per section: its peak memory (max RSS) is its own. Run by bundle/benchmarks/run.py as
``python -m bundle.benchmarks.section '<options as JSON>'``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

from bundle.benchmarks.time_to_f1 import bench_time_to_f1
from bundle.benchmarks.training import bench_training
from bundle.benchmarks.volume import _peak_mib, bench_volume

PREFIX = "BENCH "  # the line of stdout that carries the section's results


def bench_deid(pacs: Path, workers: int) -> dict:
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


def run_section(o: dict) -> dict:
    """One section (``o["section"]``) with the benchmark's options ``o``; its figures and this process's peak memory."""
    warnings.filterwarnings("ignore")
    data, work, section = Path(o["data"]), Path(o["work"]), o["section"]
    if section == "volume":
        res = bench_volume(data, o["device"], o["repeats"], o["model"])
    elif section == "training":
        res = bench_training(data, o["device"], o["iters"], o["repeats"])
    elif section == "time_to_f1":
        datalist = Path(o["ttf_datalist"]) if o["ttf_datalist"] else data / "datalist.json"
        res = bench_time_to_f1(datalist.resolve(), work / "time_to_f1", o["ttf_epochs"], o["ttf_f1"], o["device"])
        if not o["ttf_datalist"]:  # the run's own temp folder, gone once it ends: name what it held, not where
            res["datalist"] = f"the run's generated {o['size']} demo's key-slice datalist"
    elif section == "deid":
        res = bench_deid(work / "pacs" / "dicom", workers=min(2, os.cpu_count() or 1))
    elif section == "mining":
        src = Path(o["mining_source"]) if o["mining_source"] else work / "pacs" / "dicom"
        res = bench_mining(src, work / "mined", o["mining_split"])
    else:
        raise ValueError(f"no benchmark section {section!r} (volume, training, time_to_f1, mining, deid)")
    res["peak_rss_mib"] = _peak_mib()
    return res


if __name__ == "__main__":
    print(PREFIX + json.dumps(run_section(json.loads(sys.argv[1]))))
