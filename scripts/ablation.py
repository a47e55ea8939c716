"""The whole-volume ablation from the command line: configs/experiments/ablation.yaml with the given overrides.

Every option is a key of the config (the plan's defaults live in bundle/demo/ablation.py AblationPlan), e.g.
  python scripts/ablation.py                                    # the reporting run, docs/results.md
  python scripts/ablation.py --plan#epochs 10 --work_dir runs/ablation_short --results None
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundle.steps.runner import bundle_run, config_overrides, one_line_on_failed_step  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    overrides = config_overrides(list(sys.argv[1:] if argv is None else argv), __doc__)
    work = Path(overrides.get("work_dir", "runs/ablation"))
    work = work if work.is_absolute() else ROOT / work
    overrides["work_dir"] = work
    t0 = time.time()
    with one_line_on_failed_step():
        bundle_run("configs/experiments/ablation.yaml", ROOT, work / "ablation_command.log", **overrides)
    pooled = json.loads((work / "ablation.json").read_text())["pooled"]
    for arm, a in pooled.items():
        p = a["pooled"]
        print(
            f"{arm:28s} sensitivity >= 10 mm {p['sensitivity_ge10']:.3f}  FP/volume {p['fp_per_volume']:.2f}  "
            f"FP/normal volume {p['fp_per_normal_volume'] if p['fp_per_normal_volume'] is not None else float('nan'):.2f}  "
            f"goal {'met' if p['meets_goal'] else 'not met'}"
        )
    print(f"wall time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
