"""Anchors planned from the data: mined and truth box sizes in the canonical grid, fitted anchor shapes, and the share of
boxes MONAI's ATSS matcher gives a positive with today's and the fitted shapes (bundle/networks/anchors.py).

    python scripts/plan_anchors.py --mined runs/demo/datalists/series_mined.json --truth data/demo/datalist_volume.json \
        --spacing "[1.25, 1.25, 4.0]" [--anchors "[[6, 6], [10, 10], [16, 16]]"] [--out anchors.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundle.networks.anchors import box_sizes, fit_anchor_shapes, match_report  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mined", required=True, help="mined volume datalist (its training section is fitted)")
    ap.add_argument("--truth", default="", help="a fully labelled volume datalist (its test section is reported)")
    ap.add_argument("--spacing", default="null", help="canonical grid, JSON [x, y, z] mm (a grid.json's spacing); null: as stored")
    ap.add_argument("--anchors", default="[[6, 6], [10, 10], [16, 16]]", help="today's base_anchor_shapes (configs/network.yaml)")
    ap.add_argument("--small_lesion_mm", type=float, default=10.0)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    spacing = json.loads(a.spacing)
    today = json.loads(a.anchors)
    wh, mm = box_sizes(a.mined, ("training",), spacing)
    smallest = a.small_lesion_mm / spacing[0] if spacing else None
    fitted = fit_anchor_shapes(wh[mm >= a.small_lesion_mm], k=len(today), smallest_px=smallest)
    report = {
        "spacing": spacing,
        "mined_training_boxes": int(len(wh)),
        "anchors_today": today,
        "anchors_fitted": fitted,
        "mined": {},
        "truth": {},
    }
    sets = {"mined": (wh, mm)}
    if a.truth:
        sets["truth"] = box_sizes(a.truth, ("test",), spacing)
    for name, (w, m) in sets.items():
        for label, shapes in (("today", today), ("fitted", fitted)):
            report[name][label] = match_report(w, m, shapes)
    text = json.dumps(report, indent=1)
    if a.out:
        Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
