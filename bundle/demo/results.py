"""The demo run's own page (runs/demo/results.md, DemoOptions.results), written by scripts/demo.py from its results.json
(never by hand); and that results.json. docs/results.md is not this page: scripts/ablation.py writes it (docs/README.md,
"Which command writes which page").
"""

from __future__ import annotations

from pathlib import Path

from bundle.demo.options import DemoOptions
from bundle.demo.targets import figures_of, section
from bundle.selftrain.scoring import shipped_limits

LABELS = {
    "mined_only": "(a) mined boxes only",
    "self_trained": "(b) self-trained",
    "oracle": "(c) oracle, complete boxes",
    "oracle_volume": "(c) volume oracle: (b)'s recipe, every lesion slice boxed (the ceiling)",
    "untrained": "untrained (same network, same seed)",
}


def label(name: str, r: dict) -> str:
    """A model's row label; (b) says what it is in this run (whole series, rounds of self-training, or key slices)."""
    if name != "self_trained" or not r.get("series"):
        return LABELS[name]
    rounds, k = r.get("series_rounds", 0), r.get("context_slices", 1)
    context = f" + 2.5D ({k} slices)" if k > 1 else ""
    kept = r.get("self_training_best_round", 0)
    if not rounds:
        return "(b) whole series + ignore regions" + context
    if kept:
        return f"(b) whole series + ignore regions{context}, self-trained (round {kept} of {rounds} kept on validation)"
    return f"(b) whole series + ignore regions{context}: the round-0 teacher ({rounds} self-training round(s) did not win on validation)"


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def _threshold(r: dict) -> str:
    if r["score_threshold"] == "auto":
        return f"'auto' (each teacher's validation precision >= {r.get('target_precision')})"
    return str(r["score_threshold"])


def _thr(pseudo: dict) -> str:
    t = pseudo.get("threshold", {}).get("score_threshold")
    return "-" if t is None else f"{t:.4f}"


def assemble(
    command: str,
    o: DemoOptions,
    st: dict,
    mining: dict,
    exp: dict,
    metrics: dict[str, dict],
    b_vs_a: dict,
    c_vs_a: dict,
    seconds: dict[str, float],
    froc_plot: str,
) -> dict:
    """results.json: the run's options, mining and experiment counts, self-training rounds and each model's test figures.

    ``metrics``: each model's metrics.json.
    """
    return {
        "command": command,
        "seed": o.seed,
        "size": o.size,
        "epochs": o.epochs,
        "rounds": o.series_rounds if o.series else o.rounds,
        "series": o.series,
        "series_rounds": o.series_rounds,
        "context_slices": o.context_slices,
        "score_threshold": o.score_threshold,
        "target_precision": o.series_target_precision if o.series else o.target_precision,
        "self_training_best_round": st["best_round"],
        "mining": mining["counts"],
        "experiment": exp["counts"],
        "self_training": [
            {k: r[k] for k in ("round", "validation")} | {"pseudo": r["pseudo"], "pseudo_quality": r.get("pseudo_quality")}
            for r in st["rounds"]
        ],
        "self_training_stopped": st["stopped"],
        "models": {
            n: {
                "f1": m["test"]["f1"],
                "f1_ci95": [m["test_ci95"]["f1"]["ci_low"], m["test_ci95"]["f1"]["ci_high"]],
                "precision": m["test"]["precision"],
                "recall": m["test"]["recall"],
                "mAP": m["test_mAP"],
                "cpm": m["test_froc"]["cpm"],
                "study_auc": m["test_study"]["auc"],
            }
            for n, m in metrics.items()
        },
        "b_vs_a": b_vs_a["paired_f1_test"],
        "c_vs_a": c_vs_a["paired_f1_test"],
        "test_images": metrics["oracle"]["test_images"],
        "test_patients": metrics["oracle"]["test_patients"],
        "seconds": {k: round(v) for k, v in seconds.items()},
        "froc_plot": froc_plot,
    }


def _volume_lines(r: dict) -> list[str]:
    """The primary figure: whole test volumes at each model's validation operating point (configs/evaluate_volume.yaml)."""
    v = r.get("volume")
    if not v:
        return []
    models = [n for n in ("mined_only", "self_trained", "oracle_volume") if n in v]
    lim = next((v[n]["limits"] for n in models if v[n].get("limits")), None) or shipped_limits()
    lines = [
        "## Whole volumes (primary)",
        "",
        "Every slice of each test volume through configs/inference_volume.yaml; strict rule: a lesion is found when a 3D box has "
        "IoU >= 0.1 with it or the box's own centre lies inside it (lesions >= 10 mm matched first; a second box on a found lesion "
        f"ignored); operating point: lowest logit with <= {lim['max_fp_per_volume']:g} false boxes per validation volume and "
        f"<= {lim['max_fp_per_normal_volume']:g} per normal validation volume"
        + (" (estimated from every volume's false boxes away from any lesion). " if lim.get("normal_fp_from") == "all_volumes" else ". ")
        + "Old rule (IoU >= 0.1 or the box contains the lesion's centre; earlier pages), same boxes: last column. "
        "CPM: LUNA16, mean sensitivity at 1/8 ... 8 false boxes per volume.",
        "",
        "| model | sensitivity, lesions >= 10 mm | FP / volume | FP / normal volume | operating logit | CPM | old rule: sens >= 10 mm |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n in models:
        x = v[n]
        lines.append(
            f"| {label(n, r)} | {_f(x['sensitivity >=10 mm'])} ({x['found_ge10']}/{x['lesions_ge10']}) | {_f(x['fp_per_volume'])} | "
            f"{_f(x['fp_per_normal_volume'])} | {x['threshold']:.4f} | {_f(x['cpm'])} | {_f((x.get('old_rule') or {}).get('sensitivity >=10 mm'))} |"
        )
    if not v.get("shipped", {}).get("ok", True):
        lines += ["", f"**(b) is not shipped**: {v['shipped']['reason']}"]
    if all(v[n].get("by_size") for n in models):  # the ceiling by lesion size: how much of the gap is the network, how much the labels
        bins = list(v[models[0]]["by_size"])
        lines += [
            "",
            "By lesion long axis, found / lesions (sensitivity), each model at its own operating point:",
            "",
            "| model | " + " | ".join(bins) + " |",
            "| --- |" + " --- |" * len(bins),
        ]
        for n in models:
            cells = []
            for b in bins:
                c = v[n]["by_size"][b]
                cells.append(f"{c['found']}/{c['lesions']} ({_f(c['found'] / c['lesions'] if c['lesions'] else None)})")
            lines.append(f"| {label(n, r)} | " + " | ".join(cells) + " |")
    if v.get("protocols"):  # the shipped model (b) on the same test brains as other protocols store them, same threshold
        lines += [
            "",
            "(b) on the same test volumes stored as other protocols store them (resampled; truth moved into each grid), at its "
            "shipped operating point (configs/evaluate_volume.yaml `protocol_variants`):",
            "",
            "| stored as | sensitivity, lesions >= 10 mm | 10-20 mm | FP / volume | FP / normal volume | CPM >= 10 mm |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for name, x in v["protocols"].items():
            small = (x.get("by_size") or {}).get("10-20 mm") or {}
            lines.append(
                f"| {name} | {_f(x.get('sensitivity >=10 mm'))} ({x.get('found_ge10')}/{x.get('lesions_ge10')}) | "
                f"{small.get('found', '-')}/{small.get('lesions', '-')} | {_f(x.get('fp_per_volume'))} | "
                f"{_f(x.get('fp_per_normal_volume'))} | {_f(x.get('cpm >=10 mm'))} |"
            )
    if "self_trained" in v:  # the shipped model against issue 24's targets: by how much each is missed
        variants = {name: figures_of(x) for name, x in (v.get("protocols") or {}).items()}
        lines += section(f"Against the targets: {label('self_trained', r)}", figures_of(v["self_trained"]), variants)
    d = v["b_vs_a"]
    lines += [""] + [
        f"(b) - (a), {k}: {_f(c['value'])} (95% CI {_f(c.get('ci_low'))} to {_f(c.get('ci_high'))}, P = {_f(c.get('p_value'))})"
        for k, c in d.items()
        if isinstance(c, dict)
    ]
    return lines + ["", "## Key slices (the seed study's comparison)", ""]


def write_results(r: dict, path: str | Path, source: str | Path = "runs/demo/results.json") -> str:
    """Write the results page for results.json ``r`` at ``path``; returns its markdown."""
    m = r["models"]
    lines = [
        "# Results: the seed study's experiment on the demo data",
        "",
        f"Written by the command below from `{source}`; rerun it to reproduce.",
        "",
        f"    {r['command']}",
        "",
        f"Seed {r['seed']}, demo size `{r['size']}`, {r['epochs']} epochs per training; {label('self_trained', r)}"
        + (
            f", pseudo-box score threshold {_threshold(r)}; (b) is the round with the best validation "
            + ("sensitivity >= 10 mm at the shipped false-box limits, then CPM" if r.get("series") else "F1")
            + f" (round {r.get('self_training_best_round', '-')})"
            if r["rounds"]
            else ""
        )
        + f". Test: {r['test_images']} images of {r['test_patients']} held-out, "
        "fully annotated patients that never entered the PACS export; operating point of each model chosen on the fully annotated validation patients.",
        "",
    ]
    lines += _volume_lines(r)
    lines += [
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
            f"| {label(n, r)} | {x['f1']:.3f} | {x['f1_ci95'][0]:.3f}-{x['f1_ci95'][1]:.3f} | {x['precision']:.3f} | {x['recall']:.3f} | "
            f"{x['mAP']:.3f} | {x['cpm']:.3f} | {_f(x['study_auc'])} |"
        )
    for key, title in (("b_vs_a", f"{label('self_trained', r)} vs (a) mined only"), ("c_vs_a", "(c) oracle vs (a) mined only")):
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
