"""An ablation arm's misses and false boxes by kind, pooled over its replicates and protocol variants (bundle.metrics.misses).

Why: the results pages say how far each target is missed; this page says what kind of miss is left (no box, a box
below the threshold, a box in the wrong place) on the stored grid and on each protocol, so the next change aims at it.
It reads an ablation's saved predictions and operating points; nothing is trained or run again.
"""

from __future__ import annotations

import json
from pathlib import Path

from bundle.metrics.misses import analyse, pool, summary_markdown

STORED = "as stored"


def replicate_sets(eval_dir: Path, volume_datalist: str) -> dict[str, tuple[str, str]]:
    """One evaluated model's sets: name -> (datalist, test predictions); the stored grid first, then each protocol variant."""
    sets = {STORED: (volume_datalist, str(eval_dir / "predictions_volume_test.json"))}
    for v in sorted((eval_dir / "protocols").glob("*/predictions_volume_test.json")):
        sets[v.parent.name] = (str(v.parent / "datalist_volume.json"), str(v))
    return sets


def analyse_arm(work: Path, arm: str) -> tuple[dict[str, dict], list[str]]:
    """Every replicate of ``arm`` under an ablation work_dir, each at its own shipped operating point; pooled per set."""
    per_set: dict[str, list[dict]] = {}
    reps = []
    for eval_dir in sorted(work.glob(f"data*/train*/eval/{arm}")):
        metrics = eval_dir / "metrics_volume.json"
        if not metrics.is_file():
            continue
        threshold = json.loads(metrics.read_text())["operating_point"]["score_threshold"]
        exp = json.loads((eval_dir.parents[2] / "prep" / "experiment.json").read_text())
        for name, (dl, preds) in replicate_sets(eval_dir, exp["volume_datalist"]).items():
            per_set.setdefault(name, []).append(analyse(dl, preds, threshold))
        reps.append(f"{eval_dir.parents[2].name}/{eval_dir.parents[1].name} (threshold {threshold:.4f})")
    if not reps:
        raise FileNotFoundError(f"{work}: no evaluated replicate of arm {arm!r} (data*/train*/eval/{arm}/metrics_volume.json)")
    return {name: pool(rs) for name, rs in per_set.items()}, reps


def write_page(work: Path, arm: str, page: Path, command: str) -> str:
    """The page for ``arm``; returns its tables."""
    pooled, reps = analyse_arm(work, arm)
    tables = summary_markdown(pooled)
    text = [
        f"# Misses and false boxes by kind: arm `{arm}`",
        "",
        f"Written by `{command}` from the ablation's saved test predictions (nothing retrained or rerun).",
        f"Replicates pooled: {', '.join(reps)}.",
        "",
        "A lesion >= 10 mm that no kept box finds is `below threshold` (a box the rule accepts scores lower), `taken`",
        "(a kept box that would find it found another lesion first), `misplaced` (boxes overlap it, none meets the rule)",
        "or `unseen` (no box touches it at any score). A kept false box lies `on lesion` (it overlaps a lesion but finds",
        "none), on a `normal volume`, or `elsewhere`. Protocol variants are the same test brains stored as",
        "configs/evaluate_volume.yaml's `protocol_variants`, scored at the same operating point.",
        "",
        tables,
    ]
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(text))
    return tables
