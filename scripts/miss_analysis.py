"""An ablation arm's misses and false boxes by kind, from its saved predictions (bundle/demo/misses_page.py).

python scripts/miss_analysis.py --work_dir runs/ablation_60ep --arm context --results docs/misses_60ep.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundle.demo.misses_page import write_page  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work_dir", required=True, help="an ablation's work_dir (data*/train*/eval/<arm>)")
    ap.add_argument("--arm", default="context", help="the arm whose evaluations are read")
    ap.add_argument("--results", required=True, help="the page to write")
    a = ap.parse_args(argv)
    work = Path(a.work_dir) if Path(a.work_dir).is_absolute() else ROOT / a.work_dir
    command = " ".join(["python scripts/miss_analysis.py", *map(shlex.quote, argv)])
    try:
        print(write_page(work, a.arm, ROOT / a.results, command))
    except FileNotFoundError as e:
        raise SystemExit(f"miss_analysis: {e}") from None


if __name__ == "__main__":
    main()
