"""Runs a bundle config as its own process, the way a user would type it.

Why: pipelines (demo, self-training) chain several trainings; a fresh process per step keeps
memory and global state (determinism, thread pools) from leaking between steps, and the printed
command is one a user can copy.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


class StepFailed(RuntimeError):
    """A ``monai.bundle run`` step exited non-zero; its own traceback is in the step's log."""


@contextlib.contextmanager
def one_line_on_failed_step() -> Iterator[None]:
    """For the thin scripts: a failed step ends the command with its one line (command, exit code, log), exit 1.

    Why: the pipeline's Python stack above the step says nothing the user can act on; the log does."""
    try:
        yield
    except StepFailed as exc:
        raise SystemExit(f"error: {exc}") from None


def bundle_run(config: str | list[str], cwd: str | Path, log_path: str | Path, quiet: bool = False, **overrides) -> float:
    """``python -m monai.bundle run --config_file ... --key value``; output appended to log_path; seconds taken."""
    cfg = config if isinstance(config, str) else "[" + ",".join(f"'{c}'" for c in config) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", cfg]
    for k, v in overrides.items():
        cmd += [f"--{k}", str(v)]
    if not quiet:
        print("\n$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    t0 = time.time()
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        log.write("\n$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
        log.flush()
        proc = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise StepFailed(f"step failed (exit {proc.returncode}): {' '.join(cmd)}; see {log_path}")
    dt = time.time() - t0
    if not quiet:
        print(f"  done in {dt:.0f} s", flush=True)
    return dt


def config_overrides(argv: list[str], usage: str) -> dict[str, str]:
    """``--key value`` pairs of a thin script's command line, passed on to a config as overrides.

    Why: scripts take what the config gives; they add no options of their own. Prints ``usage`` and exits
    (0 for --help, 2 for an odd number of arguments) instead of guessing. ``None`` is passed as ``$None``:
    ``monai.bundle run`` drops an override whose value parses to None and keeps the config's value, so
    ``--results None`` would otherwise still write the results page.
    """
    if any(a in ("-h", "--help") for a in argv) or len(argv) % 2:
        print(usage)
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    return {argv[i].removeprefix("--"): "$None" if argv[i + 1] == "None" else argv[i + 1] for i in range(0, len(argv), 2)}


def run_experiment(config: str, root: Path, default_work: str, summary: str, overrides: dict) -> tuple[dict, float]:
    """An experiment config run as one step into its work folder; its summary JSON and the seconds taken.

    Why one function: the experiment commands (ablation, replicates) differ only in their config, their
    folder and what they print; the work folder, the log and the one-line failure are the same for all.
    """
    work = Path(overrides.get("work_dir", default_work))
    work = work if work.is_absolute() else root / work
    overrides["work_dir"] = work
    t0 = time.time()
    with one_line_on_failed_step():
        bundle_run(config, root, work / f"{Path(config).stem}_command.log", **overrides)
    return json.loads((work / summary).read_text()), time.time() - t0
