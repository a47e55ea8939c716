"""Self-training from the command line (same function as configs/self_train.yaml)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundle.selftrain.loop import run_self_training  # noqa: E402
from bundle.selftrain.pseudo import parse_threshold  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datalist", required=True, help="mined datalist (training/validation sections)")
    ap.add_argument("--work_dir", default="runs/selftrain")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--score_threshold", type=parse_threshold, default="auto", help="a score, or 'auto': each teacher's validation operating point"
    )
    ap.add_argument(
        "--target_precision", type=float, default=0.5, help="with 'auto': the teacher's precision on validation at the threshold"
    )
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
        rounds=a.rounds,
        score_threshold=a.score_threshold,
        target_precision=a.target_precision,
        iou_max=a.iou_max,
        min_mm=a.min_mm,
        max_mm=a.max_mm,
        max_per_image=a.max_per_image,
        from_scratch=not a.from_teacher,
        cumulative=a.cumulative,
        truth=a.truth,
        train_overrides=json.loads(a.train_overrides),
    )
    print((Path(a.work_dir) / "report.md").read_text())
    print(f"stopped: {state['stopped']}")


if __name__ == "__main__":
    main()
