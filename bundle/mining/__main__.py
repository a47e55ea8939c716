"""`python -m bundle.mining`: run configs/mine.yaml as `python -m monai.bundle run` does, without importing monai.

    python -m bundle.mining --config_file configs/mine.yaml --source_dir EXPORT --output_dir OUT \\
        [--split_file split.json] [--shard_index $SLURM_ARRAY_TASK_ID --shard_count N] [--key value ...]

Why: start-up. `python -m monai.bundle run` imports monai (every submodule, torch among them: ~5 s) before
the first object is read; mining needs none of it, and a SLURM array or a Kubernetes job of many short shards
pays that start-up per shard. This command reads the same YAML (defaults stay there) with the lean reader in
bundle/mining/config.py, builds the same Miner and writes the same files. What the reader cannot evaluate is
one line (exit 2) pointing at `python -m monai.bundle run`, which takes the same arguments.
"""

from __future__ import annotations

import logging.config
import sys
from pathlib import Path
from typing import Any

from bundle.mining.config import Config, Unsupported, literal, load_file

FALLBACK = "python -m monai.bundle run"
WORKFLOW_KEYS = ("args_file", "workflow_type", "workflow_name", "tracking", "properties_path", "init_id", "run_id", "final_id")


def parse_argv(argv: list[str]) -> dict[str, Any]:
    """`--key value`, `--key=value` and a bare `--flag` (True), in order; values read as `fire` reads them."""
    pairs: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        tok = argv[i]
        if not tok.startswith("--") or tok == "--":
            raise Unsupported(f"argument {tok!r}: only --key value pairs (a positional workflow id needs {FALLBACK})")
        key, eq, value = tok[2:].partition("=")
        if not eq:
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value, i = argv[i + 1], i + 1
            else:
                value = "True"
        pairs[key] = literal(value)
        i += 1
    return pairs


def build(argv: list[str]) -> tuple[Config, Any]:
    """The config file, its metadata (as `_meta_`), then the overrides; returns it and the logging file (None: none)."""
    pairs = parse_argv(argv)
    config_file = pairs.pop("config_file", None)
    if not isinstance(config_file, str):
        raise Unsupported("give one --config_file (a list of config files to merge needs " + FALLBACK + ")")
    for k in WORKFLOW_KEYS:
        if k in pairs:
            raise Unsupported(f"--{k}")
    if not Path(config_file).is_file():
        raise SystemExit(f"error: {config_file}: no such config file")
    root = Path(config_file).parent
    content = load_file(config_file)
    meta_file = pairs.pop("meta_file", str(root / "metadata.json"))
    content["_meta_"] = load_file(meta_file) if Path(meta_file).is_file() else {}
    logging_file = pairs.pop("logging_file", str(root / "logging.conf"))
    cfg = Config(content)
    for k, v in pairs.items():
        cfg.set(k, v)
    return cfg, logging_file if logging_file is not False and Path(str(logging_file)).is_file() else None


def run_item(cfg: Config, id: str) -> None:
    """An `initialize` / `run` / `finalize` item: each entry of a list in turn, or the one expression."""
    if id not in cfg:
        return
    if isinstance(cfg.raw(id), list):
        for i in range(len(cfg.raw(id))):
            cfg.get(f"{id}#{i}")
    else:
        cfg.get(id)


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, logging_file = build(sys.argv[1:] if argv is None else argv)
        if logging_file:
            logging.config.fileConfig(logging_file, disable_existing_loggers=False)
        if "run" not in cfg:
            raise Unsupported("the config has no 'run' item")
        for id in ("initialize", "run", "finalize"):
            run_item(cfg, id)
    except Unsupported as exc:
        print(f"error: {exc}: not supported by python -m bundle.mining; run the same arguments with {FALLBACK}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
