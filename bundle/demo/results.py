"""docs/results.md, written by the demo command from its own results.json (never by hand)."""

from __future__ import annotations

from pathlib import Path

LABELS = {
    "mined_only": "(a) mined boxes only",
    "self_trained": "(b) self-trained",
    "oracle": "(c) oracle, complete boxes",
    "untrained": "untrained (same network, same seed)",
}


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def _threshold(r: dict) -> str:
    if r["score_threshold"] == "auto":
        return f"'auto' (each teacher's validation precision >= {r.get('target_precision')})"
    return str(r["score_threshold"])


def _thr(pseudo: dict) -> str:
    t = pseudo.get("threshold", {}).get("score_threshold")
    return "-" if t is None else f"{t:.4f}"


def write_results(r: dict, path: str | Path, source: str | Path = "runs/demo/results.json") -> str:
    m = r["models"]
    lines = [
        "# Results: the seed study's experiment on the demo data",
        "",
        f"Written by the command below from `{source}`; rerun it to reproduce.",
        "",
        f"    {r['command']}",
        "",
        f"Seed {r['seed']}, demo size `{r['size']}`, {r['epochs']} epochs per training, up to {r['rounds']} self-training round(s), "
        f"pseudo-box score threshold {_threshold(r)}. (b) is the round with the best validation F1 "
        f"(round {r.get('self_training_best_round', '-')}). Test: {r['test_images']} images of {r['test_patients']} held-out, "
        "fully annotated patients that never entered the PACS export; operating point of each model chosen on the fully annotated validation patients.",
        "",
        "Mining: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in r["mining"].items() if not isinstance(v, dict)) + ".",
        f"Training images: {r['experiment']['training_images']}, with {r['experiment']['mined_boxes']} mined boxes; "
        f"the complete truth has {r['experiment']['complete_boxes']} lesion boxes on them.",
        "",
        "| model | F1 (IoU >= 0.5) | 95% CI | precision | recall | COCO mAP | FROC CPM | study AUC |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n in ("mined_only", "self_trained", "oracle", "untrained"):
        x = m[n]
        lines.append(
            f"| {LABELS[n]} | {x['f1']:.3f} | {x['f1_ci95'][0]:.3f}-{x['f1_ci95'][1]:.3f} | {x['precision']:.3f} | {x['recall']:.3f} | "
            f"{x['mAP']:.3f} | {x['cpm']:.3f} | {_f(x['study_auc'])} |"
        )
    for key, title in (("b_vs_a", "(b) self-trained vs (a) mined only"), ("c_vs_a", "(c) oracle vs (a) mined only")):
        t = r[key]
        lines += [
            "",
            f"**{title}**: F1 difference {t['difference']:+.3f} (95% CI {t['ci_low']:+.3f} to {t['ci_high']:+.3f}), "
            f"paired bootstrap over {t['n_patients']} patients ({t['n_resamples']} resamples, seed {t['seed']}): two-sided P = {t['p_value']:.4f}.",
        ]
    lines += [
        "",
        "## Self-training rounds",
        "",
        "| round | score threshold | pseudo-boxes added | median score | validation F1 | pseudo-box precision | recall of unmeasured lesions |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in r["self_training"]:
        q = s.get("pseudo_quality") or {}
        med = s["pseudo"].get("score_quantiles", {}).get("0.5")
        lines.append(
            f"| {s['round']} | {_thr(s['pseudo'])} | {s['pseudo']['boxes_added']} | {_f(med)} | {s['validation']['f1']:.3f} | {_f(q.get('precision'))} | {_f(q.get('recall'))} |"
        )
    lines += [
        "",
        f"Stopped: {r['self_training_stopped']}. Pseudo-box precision/recall: IoU >= 0.3 against the lesions the simulated readers did not measure.",
        "",
        "Wall time on this machine (s): " + ", ".join(f"{k} {v}" for k, v in r["seconds"].items()) + ".",
        "",
        f"FROC plot: `{r['froc_plot']}`.",
    ]
    md = "\n".join(lines) + "\n"
    Path(path).write_text(md)
    return md
