"""Compare two models' saved predictions on the same test set (paired bootstrap test of F1).

Each model is given by its validation and test prediction files (written by configs/evaluate.yaml):
the operating point of each is chosen on its validation predictions, then both are scored on test.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundle.metrics.report import compare  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datalist", required=True)
    ap.add_argument("--a", nargs=2, metavar=("VAL_PREDICTIONS", "TEST_PREDICTIONS"), required=True)
    ap.add_argument("--b", nargs=2, metavar=("VAL_PREDICTIONS", "TEST_PREDICTIONS"), required=True)
    ap.add_argument("--names", nargs=2, default=("A", "B"))
    ap.add_argument("--output_dir", default="eval/compare")
    ap.add_argument("--iou_threshold", type=float, default=0.5)
    ap.add_argument("--criterion", choices=("iou", "center"), default="iou")
    ap.add_argument("--n_bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    r = compare(a.datalist, tuple(a.a), tuple(a.b), a.output_dir, tuple(a.names), a.iou_threshold, a.criterion, a.n_bootstrap, a.seed)
    print((Path(a.output_dir) / "compare.md").read_text())
    print(json.dumps(r["paired_f1_test"], indent=1))


if __name__ == "__main__":
    main()
