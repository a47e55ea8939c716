"""The replicate experiment from the command line: configs/experiments/replicate.yaml with the given overrides.

Every option is a key of the config (the plan's defaults live in bundle/demo/replicate.py ReplicatePlan), e.g.
  python scripts/replicate.py                                   # 3 data seeds x 2 training seeds, docs/results_key_slices.md
  python scripts/replicate.py --plan#epochs 10 --work_dir runs/replicate_short --results None
  python scripts/replicate.py --experiment volume                # teacher vs self-trained on whole volumes (issue 25)
The volume experiment is configs/experiments/replicate_volume.yaml (plan: bundle/demo/replicate_volume.py VolumeReplicatePlan).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundle.steps.runner import config_overrides, run_experiment  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    overrides = config_overrides(list(sys.argv[1:] if argv is None else argv), __doc__)
    if overrides.pop("experiment", "key_slices") == "volume":
        return volume(overrides)
    summary, seconds = run_experiment("configs/experiments/replicate.yaml", ROOT, "runs/replicate", "replicates.json", overrides)
    pooled = summary["pooled"]
    for arm, m in pooled["arms"].items():
        print(f"{arm:18s} F1 {m['f1']['mean']:.3f} ± {m['f1']['sd']:.3f} (n={m['f1']['n']})")
    b = pooled["b_vs_a"]
    print(f"(b) - (a): {b['difference']:+.3f} [{b['ci_low']:+.3f}, {b['ci_high']:+.3f}], P = {b['p_value']:.3f}")
    print(f"wall time {seconds:.0f} s")


def volume(overrides: dict) -> None:
    """The volume-level replicate; prints each row (with the round it kept) and the pooled differences."""
    from bundle.demo.replicate_volume_page import row_line

    config = "configs/experiments/replicate_volume.yaml"
    summary, seconds = run_experiment(config, ROOT, "runs/replicate_volume", "replicates_volume.json", overrides)
    for r in summary["replicates"]:
        print(row_line(r))
    p = summary["pooled"]
    for key, what in (("volume_b_vs_a", "sensitivity >= 10 mm, whole volumes"), ("key_slices_b_vs_a", "F1, key slices")):
        if key in p:
            d = p[key]
            print(
                f"self-trained - teacher, {what}: {d['difference']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}], P = {d['p_value']:.3f}"
            )
    print(f"{p['identical_rows']} of {p['replicates']} rows kept round 0 (identical to their teacher)")
    print(f"wall time {seconds:.0f} s")


if __name__ == "__main__":
    main()
