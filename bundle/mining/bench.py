"""Mining throughput as a benchmark script reports it: objects per second on a cold and a warm cache, and the
wall time of the whole `configs/mine.yaml` command, each measured in a fresh subprocess.

Why a subprocess: the command's wall time includes interpreter and library start-up (`import monai` loads
torch), which an in-process timing would hide. Why drop the page cache: a first mining run over an archive
reads from disk; dropping it needs root (`/proc/sys/vm/drop_caches`), else the result says the cache was warm.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def drop_page_cache() -> bool:
    """True when the kernel's page cache was dropped (root only)."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def _run(config: str, source_dir: str, out_dir: str, extra: list[str], python: str) -> tuple[float, dict[str, Any]]:
    cmd = [python, "-m", "monai.bundle", "run", "--config_file", config, "--source_dir", source_dir, "--output_dir", out_dir]
    t = time.perf_counter()
    subprocess.run(cmd + ["--progress", "false", *extra], cwd=ROOT, check=True, capture_output=True)
    wall = time.perf_counter() - t
    return wall, json.loads((Path(out_dir) / "mining_timing.json").read_text())


def mining_throughput(
    source_dir: str | Path,
    out_dir: str | Path,
    extra_args: list[str] | None = None,
    config: str = "configs/mine.yaml",
    python: str = sys.executable,
) -> dict[str, Any]:
    """Mine `source_dir` into `out_dir` twice (cold cache, then warm) and time start-up on its own.

    `extra_args`: more command-line keys, e.g. ["--split_file", "split.json", "--volumes", "false"].
    Returns objects/s (the read phase, as the miner reports it), command wall seconds, start-up seconds,
    whether the cache was really dropped, and the load average (a shared machine skews wall times).
    """
    extra = [str(a) for a in extra_args or []]
    cold = drop_page_cache()
    wall_cold, t_cold = _run(config, str(source_dir), str(out_dir), extra, python)
    wall_warm, t_warm = _run(config, str(source_dir), str(out_dir), extra, python)
    t = time.perf_counter()
    subprocess.run([python, "-c", "import monai.bundle, bundle.mining.pipeline"], cwd=ROOT, check=True)
    startup = time.perf_counter() - t
    return {
        "objects_per_s_cold": t_cold["objects_per_s"],
        "objects_per_s_warm": t_warm["objects_per_s"],
        "read_s_cold": t_cold["read_s"],
        "read_s_warm": t_warm["read_s"],
        "command_wall_s_cold": round(wall_cold, 2),
        "command_wall_s_warm": round(wall_warm, 2),
        "startup_s": round(startup, 2),
        "cache_dropped": cold,
        "workers": t_warm["workers"],
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
