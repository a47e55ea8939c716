"""An ablation's saved predictions under another operating-point rule: every arm rescored, nothing retrained or run again.

Why: the rule that picks a model's operating point on validation volumes (at most so many false boxes per volume and
per normal volume) is an evaluation choice, not a trained one. The shipped rule is issue 24's targets, 0.5 and 0.25
(1 and 0.5 until 0.8.7), and an ablation run under one rule can be read under another. Each arm's validation and test predictions (and its protocol variants' predictions) are already on
disk, so another rule is scored on the very same models in seconds, and a page shows what it costs in sensitivity.
"""

from __future__ import annotations

import json
from pathlib import Path

from bundle.demo.ablation_page import pool
from bundle.engines import protocols
from bundle.metrics import volume_report
from bundle.metrics.volume import MatchRule


def tag(limits: dict) -> str:
    """The folder suffix of one rule, e.g. ``fp0.5_normal0.25``."""
    how = "" if limits.get("normal_fp_from", "normal_volumes") == "normal_volumes" else "_from_all"
    return f"fp{limits['max_fp_per_volume']:g}_normal{limits['max_fp_per_normal_volume']:g}{how}"


def rescore_arm(eval_dir: Path, out_dir: Path, limits: dict) -> dict:
    """One evaluation (configs/evaluate_volume.yaml's output folder) with its operating point chosen again by ``limits``.

    Its own datalist, match rule, bootstrap count and seed are read back from its metrics_volume.json; the protocol
    variants, where it scored them, are scored again at the new threshold."""
    m = json.loads((eval_dir / "metrics_volume.json").read_text())
    cfg, match = m["provenance"]["config"], m["match"]
    scoring = cfg.get("scoring") or {}
    r = volume_report.evaluate(
        cfg["volume_datalist_file"],
        str(eval_dir / "predictions_volume_validation.json"),
        str(eval_dir / "predictions_volume_test.json"),
        str(out_dir),
        criterion=match["criterion"],
        iou_threshold=match["iou_threshold"],
        n_bootstrap=int(scoring.get("n_bootstrap", 1000)),
        seed=int(scoring.get("seed", 0)),
        name=m["name"],
        config=cfg | {"scoring": scoring | limits, "rescored_from": str(eval_dir)},
        **limits,
    )
    if (eval_dir / "metrics_protocols.json").is_file():
        rule = MatchRule(match["criterion"], match["iou_threshold"])
        r["protocols"] = protocols.rescore(eval_dir, out_dir, r["operating_point"]["score_threshold"], rule, reference=r["test"])
    return r


def rescore_ablation(work_dir: Path, limits: dict, command: str) -> dict:
    """Every arm of every replicate in ``work_dir/ablation.json`` rescored into ``eval/<arm>_<tag>``; the summary the page reads.

    The simulated review (its own rule inside) is left out: its arms are fine-tuned models this does not rescore."""
    if not (work_dir / "ablation.json").is_file():
        raise FileNotFoundError(
            f"{work_dir / 'ablation.json'}: no ablation summary here (run scripts/ablation.py with this work_dir first)"
        )
    summary = json.loads((work_dir / "ablation.json").read_text())
    reps = []
    for rep in summary["replicates"]:
        rdir = work_dir / f"data{rep['data_seed']}" / f"train{rep['train_seed']}" / "eval"
        missing = [a for a in rep["arms"] if not (rdir / a / "metrics_volume.json").is_file()]
        if missing:
            raise FileNotFoundError(f"{rdir / missing[0] / 'metrics_volume.json'}: arm {missing[0]!r} has no saved evaluation to rescore")
        arms = {arm: rescore_arm(rdir / arm, rdir / f"{arm}_{tag(limits)}", limits) for arm in rep["arms"]}
        reps.append({k: v for k, v in rep.items() if k != "review"} | {"arms": arms})
    return summary | {"replicates": reps, "pooled": pool(reps), "rescored": {"command": command, "limits": limits}}
