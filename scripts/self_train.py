"""Self-training from the command line (same function as configs/self_train.yaml)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundle.selftrain.loop import run_self_training  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datalist", required=True, help="mined datalist (training/validation sections)")
    ap.add_argument("--work_dir", default="runs/selftrain")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--score_threshold", type=float, default=0.95)
    ap.add_argument("--iou_max", type=float, default=0.1)
    ap.add_argument("--min_mm", type=float, default=10.0)
    ap.add_argument("--max_mm", type=float, default=70.0)
    ap.add_argument("--max_per_image", type=int, default=3)
    ap.add_argument("--from_teacher", action="store_true", help="students start from the teacher's weights")
    ap.add_argument("--cumulative", action="store_true")
    ap.add_argument("--truth", default=None, help="demo only: complete truth boxes per image, to score pseudo-boxes")
    ap.add_argument("--train_overrides", default="{}", help="JSON of train.yaml keys, e.g. '{\"epochs\": 20}'")
    a = ap.parse_args()
    state = run_self_training(
        a.work_dir,
        a.datalist,
        a.rounds,
        a.score_threshold,
        a.iou_max,
        a.min_mm,
        a.max_mm,
        a.max_per_image,
        not a.from_teacher,
        a.cumulative,
        a.truth,
        json.loads(a.train_overrides),
    )
    print((Path(a.work_dir) / "report.md").read_text())
    print(f"stopped: {state['stopped']}")


if __name__ == "__main__":
    main()
