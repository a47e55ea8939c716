"""An ablation's arms under another operating-point rule, from their saved predictions (bundle/demo/rescore.py), and its page.

  python scripts/rescore_ablation.py --work_dir runs/ablation_default --max_fp_per_volume 0.5 \
      --max_fp_per_normal_volume 0.25 --results docs/results_default_target_rule.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundle.demo.ablation_page import write_page  # noqa: E402
from bundle.demo.rescore import rescore_ablation  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work_dir", required=True, help="an ablation's work_dir (its ablation.json and eval folders)")
    ap.add_argument("--max_fp_per_volume", type=float, required=True)
    ap.add_argument("--max_fp_per_normal_volume", type=float, required=True)
    ap.add_argument(
        "--normal_fp_from",
        default="normal_volumes",
        choices=["normal_volumes", "all_volumes"],
        help="how FPs per normal volume are estimated on validation",
    )
    ap.add_argument("--results", help="the page to write (none: print the pooled figures only)")
    a = ap.parse_args(argv)
    work = Path(a.work_dir) if Path(a.work_dir).is_absolute() else ROOT / a.work_dir
    limits = {"max_fp_per_volume": a.max_fp_per_volume, "max_fp_per_normal_volume": a.max_fp_per_normal_volume}
    limits |= {"normal_fp_from": a.normal_fp_from} if a.normal_fp_from != "normal_volumes" else {}
    try:
        summary = rescore_ablation(work, limits, " ".join(["python scripts/rescore_ablation.py", *map(shlex.quote, argv)]))
    except FileNotFoundError as e:
        raise SystemExit(f"rescore_ablation: {e}") from None
    for arm, v in summary["pooled"].items():
        p = v["pooled"]
        print(
            f"{arm:28s} sensitivity >= 10 mm {p['sensitivity_ge10']:.3f}  FP/volume {p['fp_per_volume']:.2f}  goal {'met' if p['meets_goal'] else 'not met'}"
        )
    if a.results:
        print("page:", write_page(summary, ROOT / a.results, work / "ablation.json"))


if __name__ == "__main__":
    main()
