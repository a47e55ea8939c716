"""Benchmarks written to docs/benchmarks.md: every figure a ratio measured side by side in one run.

The sections, the run and the page are bundle/benchmarks/; each section runs in its own subprocess so that
its peak memory (max RSS) is its own.

    python scripts/benchmark.py --size small                 # CPU, a few minutes
    python scripts/benchmark.py --size default --device cuda # GPU: adds ms per 512x512 slice
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bundle.benchmarks.page import SECTIONS  # noqa: E402  (ROOT on sys.path first)
from bundle.benchmarks.run import PATIENTS, run  # noqa: E402


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's options (bundle/benchmarks/run.py reads them)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=list(PATIENTS), default="small")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds per path (medians are compared)")
    ap.add_argument("--iters", type=int, default=20, help="training iterations per measurement")
    ap.add_argument("--model", default="", help="weights for the volume section (default: a seeded untrained network)")
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument(
        "--ttf_datalist", default="", help="key-slice datalist for time_to_f1 (default: the demo's), e.g. data/mined/datalist.json"
    )
    ap.add_argument("--ttf_epochs", type=int, default=20, help="epochs of each time_to_f1 training")
    ap.add_argument("--ttf_f1", type=float, default=0.5, help="the validation F1 time_to_f1 times")
    ap.add_argument("--work", default="", help="keep the generated data here (default: a temp dir)")
    ap.add_argument(
        "--mining_source", default="", help="mine this export (default: the generated one), e.g. a de-identified default demo export"
    )
    ap.add_argument("--mining_split", default="", help="its split file (--split_file of configs/mine.yaml)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    results = run(parse(argv), " ".join(["python", "scripts/benchmark.py", *argv]))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
