"""The replicate experiment from the command line: configs/experiments/replicate.yaml with the given overrides.

Every option is a key of the config (the plan's defaults live in bundle/demo/replicate.py ReplicatePlan), e.g.
  python scripts/replicate.py                                   # 3 data seeds x 2 training seeds, docs/results_key_slices.md
  python scripts/replicate.py --plan#epochs 10 --work_dir runs/replicate_short --results None
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
    work = Path(overrides.get("work_dir", "runs/replicate"))
    work = work if work.is_absolute() else ROOT / work
    overrides["work_dir"] = work
    t0 = time.time()
    with one_line_on_failed_step():
        bundle_run("configs/experiments/replicate.yaml", ROOT, work / "replicate_command.log", **overrides)
    pooled = json.loads((work / "replicates.json").read_text())["pooled"]
    for arm, m in pooled["arms"].items():
        print(f"{arm:18s} F1 {m['f1']['mean']:.3f} ± {m['f1']['sd']:.3f} (n={m['f1']['n']})")
    b = pooled["b_vs_a"]
    print(f"(b) - (a): {b['difference']:+.3f} [{b['ci_low']:+.3f}, {b['ci_high']:+.3f}], P = {b['p_value']:.3f}")
    print(f"wall time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
