"""Mining throughput as a benchmark script reports it: objects per second on a cold and a warm cache, and the
wall time of the whole `configs/mine.yaml` command, each measured in a fresh subprocess, for both commands that
run it: `python -m monai.bundle run` and the lean `python -m bundle.mining` (no monai import; docs/mining.md).

Why a subprocess: the command's wall time includes interpreter and library start-up (`import monai` loads
torch), which an in-process timing would hide. Why drop the page cache: a first mining run over an archive
reads from disk; dropping it needs root (`/proc/sys/vm/drop_caches`), else the result says the cache was warm.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bundle.paths import ROOT

COMMANDS = {  # name -> (the command before its arguments, what it imports before mining starts)
    "monai_bundle_run": (["-m", "monai.bundle", "run"], "import monai.bundle, bundle.mining.pipeline"),
    "lean": (["-m", "bundle.mining"], "import bundle.mining.__main__, bundle.mining.pipeline, yaml"),
}
NOT_COMPARED = ("mining_timing.json",)


def drop_page_cache() -> bool:
    """True when the kernel's page cache was dropped (root only)."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(command: list[str], config: str, source_dir: str, out_dir: str, extra: list[str], python: str) -> tuple[float, float, dict]:
    """(wall s, CPU s of the command and its worker processes, mining_timing.json): CPU time is what a busy machine does not skew."""
    cmd = [python, *command, "--config_file", config, "--source_dir", source_dir, "--output_dir", out_dir]
    t, cpu = time.perf_counter(), _children_cpu()
    subprocess.run(cmd + ["--progress", "false", *extra], cwd=ROOT, check=True, capture_output=True)
    wall = time.perf_counter() - t
    return wall, _children_cpu() - cpu, json.loads((Path(out_dir) / "mining_timing.json").read_text())


def _tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and p.name not in NOT_COMPARED}


def _measure(name: str, config: str, source_dir: str, out_dir: Path, extra: list[str], python: str) -> dict[str, Any]:
    """One command: cold run (page cache dropped first), warm run, then its start-up alone."""
    command, imports = COMMANDS[name]
    cold = drop_page_cache()
    wall_cold, cpu_cold, t_cold = _run(command, config, source_dir, str(out_dir), extra, python)
    wall_warm, cpu_warm, t_warm = _run(command, config, source_dir, str(out_dir), extra, python)
    t = time.perf_counter()
    subprocess.run([python, "-c", imports], cwd=ROOT, check=True)
    startup = time.perf_counter() - t
    return {
        "objects_per_s_cold": t_cold["objects_per_s"],
        "objects_per_s_warm": t_warm["objects_per_s"],
        "read_s_cold": t_cold["read_s"],
        "read_s_warm": t_warm["read_s"],
        "miner_total_s_cold": t_cold["total_s"],
        "miner_total_s_warm": t_warm["total_s"],
        "command_wall_s_cold": round(wall_cold, 2),
        "command_wall_s_warm": round(wall_warm, 2),
        "command_cpu_s_cold": round(cpu_cold, 2),
        "command_cpu_s_warm": round(cpu_warm, 2),
        "startup_s": round(startup, 2),
        "cache_dropped": cold,
        "workers": t_warm["workers"],
    }


def mining_throughput(
    source_dir: str | Path,
    out_dir: str | Path,
    extra_args: list[str] | None = None,
    config: str = "configs/mine.yaml",
    python: str = sys.executable,
    commands: tuple[str, ...] = tuple(COMMANDS),
) -> dict[str, Any]:
    """Mine `source_dir` with each command into `out_dir/<command>`, twice each (cold cache, then warm), and time start-up.

    `extra_args`: more command-line keys, e.g. ["--split_file", "split.json", "--volumes", "false"].
    Returns per command objects/s (the read phase, as the miner reports it), the miner's total seconds, command
    wall and CPU seconds (the command with its worker processes) and start-up seconds; whether the commands wrote the same files (all but mining_timing.json);
    and the load average before and after (a shared machine skews wall times).
    """
    extra = [str(a) for a in extra_args or []]
    load_before = [round(v, 2) for v in os.getloadavg()]
    out: dict[str, Any] = {}
    for name in commands:
        out[name] = _measure(name, config, str(source_dir), Path(out_dir) / name, extra, python)
    if len(commands) > 1:
        trees = [_tree(Path(out_dir) / name) for name in commands]
        out["outputs_identical"] = all(t == trees[0] for t in trees[1:])
    out["load_average_before"] = load_before
    out["load_average"] = [round(v, 2) for v in os.getloadavg()]
    return out
