"""docs/results_key_slices.md, written by the replicate command from its replicates.json (never by hand)."""

from __future__ import annotations

import json
from pathlib import Path

LABELS = {
    "mined_only": "(a) mined boxes only",
    "self_trained": "(b) self-trained",
    "oracle": "(c) oracle, complete boxes",
    "oracle_size_rule": "(c') oracle inside the size rule",
    "untrained": "untrained (same network, same seed)",
}


def _ms(v: dict | None) -> str:
    return "-" if not v else f"{v['mean']:.3f} ± {v['sd']:.3f}"


def _diff(name: str, d: dict) -> str:
    return (
        f"| {name} | {d['difference']:+.3f} | [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] | {d['p_value']:.3f} | "
        f"{d['share_b_better']:.2f} ({d['n_replicates']} replicates) |"
    )


def command(plan: dict, default: dict) -> str:
    """The command line that reproduces a plan: scripts/replicate.py with every field that differs from the defaults."""
    over = [
        f"--plan#{k} {json.dumps(v)!r}" if not isinstance(v, str) else f"--plan#{k} {v}" for k, v in plan.items() if default.get(k) != v
    ]
    return " ".join(["python scripts/replicate.py", *over])


def page(summary: dict, source: str, pictures: list[str] | None = None) -> str:
    """`summary["defaults"]`: the plan's defaults, so the page can print the exact command."""
    plan, pooled, reps = summary["plan"], summary["pooled"], summary["replicates"]
    rule = plan["size_rule"]
    lines = [
        "# Results: replicated over data seeds and training seeds",
        "",
        f"Written by `{command(plan, summary.get('defaults', plan))}` from `{source}`. Data seeds {plan['data_seeds']} (fresh: never used in "
        f"development; kept fixed from now on) x training seeds {plan['train_seeds']}; demo size `{plan['size']}`, "
        f"{plan['epochs']} epochs per training, {plan['rounds']} self-training round(s), pseudo-box threshold "
        f"{plan['score_threshold']!r} (target precision {plan['target_precision']}). Training and evaluation took "
        f"{sum(r['seconds'] for r in reps) / 60:.0f} min in all (per replicate below; each data seed's export, de-identification "
        "and mining come on top), on the machine the command ran on.",
        "",
        "Test figures are on each data seed's held-out, fully labelled test cohort, at the operating threshold chosen on "
        f"validation (max F1), a prediction matching a truth box at {plan['criterion']} >= {plan['iou_threshold']}.",
        "",
        "## Pooled over replicates (mean ± SD)",
        "",
        f"| arm | F1, all lesions | F1, lesions {rule['min_long_mm']:g}-{rule['max_long_mm']:g} mm | precision | recall | "
        "COCO mAP@[IoU 0.10:0.50:0.05] |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for arm, label in LABELS.items():
        a = pooled["arms"][arm]
        lines.append(
            f"| {label} | {_ms(a['f1'])} | {_ms(a.get('f1_size_rule'))} | {_ms(a['precision'])} | {_ms(a['recall'])} | {_ms(a['mAP'])} |"
        )
    lines += [
        "",
        "## Differences in F1 (all lesions), mean over replicates",
        "",
        "Two-level bootstrap: replicates resampled, then test patients inside each (paired between the arms), "
        f"{plan['n_bootstrap']} resamples; 95% percentile CI; two-sided P with the +1 correction; so the CI includes training variance.",
        "",
        "| comparison | difference | 95% CI | P | share of replicates where the first is better |",
        "| --- | ---: | --- | ---: | --- |",
        _diff("(b) - (a)", pooled["b_vs_a"]),
        _diff("(c) - (a)", pooled["c_vs_a"]),
        _diff("(c') - (a)", pooled["c_prime_vs_a"]),
        "",
        "## Per replicate (test F1, all lesions)",
        "",
        "| data seed | training seed | " + " | ".join(LABELS[a].split(" ")[0] for a in LABELS) + " | best self-training round | minutes |",
        "| --- | --- | " + " | ".join("---:" for _ in LABELS) + " | --- | ---: |",
    ]
    for r in reps:
        f1 = " | ".join(f"{r['arms'][a]['test']['f1']:.3f}" for a in LABELS)
        lines.append(f"| {r['data_seed']} | {r['train_seed']} | {f1} | {r['self_training']['best_round']} | {r['seconds'] / 60:.1f} |")
    b = pooled["b_vs_a"]
    verdict = "beats" if b["ci_low"] > 0 else "is worse than" if b["ci_high"] < 0 else "does not significantly differ from"
    lines += ["", f"Self-training (b) {verdict} mined-only (a) under these conditions (95% CI {b['ci_low']:+.3f} to {b['ci_high']:+.3f})."]
    if pictures:
        lines += [
            "",
            "## Pictures",
            "",
            "Truth green, predictions at the operating point orange with scores (first replicate, test patients):",
            "",
        ]
        lines += [f"- [{Path(p).stem}]({p})" for p in pictures]
    return "\n".join(lines) + "\n"


def write_page(summary: dict, path: Path, source: Path, pictures: list[str] | None = None) -> str:
    """The results page; paths on it relative to the page where they can be."""
    text = page(summary, str(source), pictures)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def load(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
