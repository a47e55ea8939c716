"""Merge sharded mining runs into the output one run over the whole source would have written, byte for byte.

    python -m bundle.mining.merge OUT SHARD_DIR [SHARD_DIR ...] [--source_dir DIR] [--workers N]

Why it re-runs the miner: each shard leaves every object's reading (`mining_shard.json`, written last, so
only finished shards count) and its converted images. The merge replays the readings of all shards, in
source order, through the same `Miner` a single run uses (resolution, duplicates, the patient split over
every patient, items, report), and takes each converted file from the shard that wrote it. So the split
does not depend on the sharding: it is computed once, here, over all patients (or read from the split file
the shards were given, carried in their state). An image no shard converted (an AIM file in one shard
referencing an image in another) is converted here when `--source_dir` names the source, else reported.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from bundle.io.records import ObjectResult
from bundle.mining.pipeline import Miner
from bundle.mining.shard import read_state, result_from_dict
from bundle.pacs.folder import FolderSource
from bundle.pacs.source import Inspector, Source


class ReplaySource:
    """The shards' readings as a source: `collect` returns them; `read_bytes` falls back to the real source."""

    def __init__(self, kind: str, results: list[ObjectResult], source: Source | None = None):
        self.kind, self.results, self.source = kind, results, source

    def collect(self, inspect: Inspector, workers: int = 1, progress: bool = False) -> list[ObjectResult]:
        return list(self.results)

    def read_bytes(self, location: str) -> bytes:
        if self.source is None:
            raise FileNotFoundError(f"{location}: converted by no shard; give the merge the source (--source_dir) to convert it")
        return self.source.read_bytes(location)


def load_shards(shard_dirs: list[str | Path]) -> tuple[dict[str, Any], list[ObjectResult]]:
    """(settings, every reading in source order); refuses a set of shards that is incomplete or disagrees."""
    states = [read_state(Path(d)) for d in shard_dirs]
    counts = {s["shard_count"] for s in states}
    if len(counts) != 1:
        raise ValueError(f"shards come from runs with different shard_count: {sorted(counts)}")
    count = counts.pop()
    have = sorted(s["shard_index"] for s in states)
    if have != list(range(count)):
        raise ValueError(f"need shards 0..{count - 1} exactly once each, got {have}")
    settings = states[0]["settings"]
    for d, s in zip(shard_dirs, states, strict=True):
        if s["settings"] != settings:
            diff = sorted(k for k in settings if s["settings"].get(k) != settings[k])
            raise ValueError(f"{d}: shard mined with other settings than {shard_dirs[0]} ({', '.join(diff)})")
    results = [result_from_dict(r) for s in states for r in s["results"]]
    results.sort(key=lambda r: r.location)  # sources return objects sorted by location; shards partition them
    return settings, results


def merge_shards(
    output_dir: str | Path, shard_dirs: list[str | Path], source: Source | None = None, workers: int = 2, progress: bool = False
) -> dict[str, Any]:
    """Write the merged datalists, report and converted images into `output_dir`; returns what `Miner.run` returns."""
    settings, results = load_shards(shard_dirs)
    s = dict(settings)
    replay = ReplaySource(s.pop("source_kind"), results, source)
    miner = Miner(str(output_dir), replay, workers=workers, progress=progress, reuse_dirs=[str(d) for d in shard_dirs], **s)
    return miner.run()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bundle.mining.merge", description=__doc__.split("\n\n")[0])
    p.add_argument("output_dir")
    p.add_argument("shard_dirs", nargs="+")
    p.add_argument("--source_dir", default=None, help="folder source, to convert images no shard converted")
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = merge_shards(a.output_dir, a.shard_dirs, FolderSource(a.source_dir) if a.source_dir else None, a.workers)
    except (ValueError, FileNotFoundError) as exc:
        print(f"merge: {exc}", file=sys.stderr)
        return 2
    c = out["report"]["counts"]
    print(f"merged {len(a.shard_dirs)} shards into {a.output_dir}: {c['files_seen']} files, {c['boxes_kept']} boxes kept")
    return 0


if __name__ == "__main__":
    sys.exit(main())
