"""The whole-volume ablation from the command line: configs/experiments/ablation.yaml with the given overrides.

Every option is a key of the config (the plan's defaults live in bundle/demo/ablation.py AblationPlan), e.g.
  python scripts/ablation.py                                    # the reporting run, docs/results.md
  python scripts/ablation.py --plan#epochs 10 --work_dir runs/ablation_short --results None
  python scripts/ablation.py --plan#review_k 3 ...              # + the simulated review (issue 28), K = 3 studies
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundle.activelearning.simulated_review import summary_lines  # noqa: E402
from bundle.steps.runner import config_overrides, run_experiment  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    overrides = config_overrides(list(sys.argv[1:] if argv is None else argv), __doc__)
    summary, seconds = run_experiment("configs/experiments/ablation.yaml", ROOT, "runs/ablation", "ablation.json", overrides)
    pooled = summary["pooled"]
    for arm, a in pooled.items():
        p = a["pooled"]
        print(
            f"{arm:28s} sensitivity >= 10 mm {p['sensitivity_ge10']:.3f}  FP/volume {p['fp_per_volume']:.2f}  "
            f"FP/normal volume {p['fp_per_normal_volume'] if p['fp_per_normal_volume'] is not None else float('nan'):.2f}  "
            f"goal {'met' if p['meets_goal'] else 'not met'}"
        )
    for rep in summary["replicates"]:
        if rep.get("review"):
            print(f"data seed {rep['data_seed']}, training seed {rep['train_seed']}:", *summary_lines(rep["review"]), sep="\n")
    print(f"wall time {seconds:.0f} s")


if __name__ == "__main__":
    main()
