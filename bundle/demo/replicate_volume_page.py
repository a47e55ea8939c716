"""docs/results_self_training.md, written by the volume replicate (bundle/demo/replicate_volume.py) from its
replicates_volume.json: one row per replicate with the round it kept, the pooled differences, what the last round did.

Why apart: the replicate trains and scores; this module only renders, as ablation_page.py and replicate_page.py do.
"""

from __future__ import annotations

from bundle.demo.ablation_page import command


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _versus(r: dict, model: str) -> str:
    """Teacher → ``model`` for one replicate: sensitivity >= 10 mm, FP per volume, CPM, key-slice F1 (the row's tail)."""
    t, b = r["volume"]["teacher"], r["volume"][model]
    ks = r.get("key_slices") or {}
    kf = f"{_f(ks['teacher']['f1'])} → {_f(ks[model]['f1'])}" if model in ks else "-"
    return (
        f"{_f(t['sensitivity_ge10'])} → {_f(b['sensitivity_ge10'])} | {_f(t['fp_per_volume'])} → {_f(b['fp_per_volume'])} | "
        f"{_f(t['cpm'])} → {_f(b['cpm'])} | {kf} |"
    )


def row_line(r: dict) -> str:
    """One replicate's row: the round it kept, and whether it is its teacher (then no separate evidence)."""
    kept = f"round {r['kept_round']} ({r['kept_candidate']})"
    same = "identical to its teacher" if r["identical_to_teacher"] else ""
    return f"| {r['data_seed']} | {r['train_seed']} | {kept} | {same} | {_versus(r, 'self_trained')}"


def _diff_line(name: str, d: dict) -> str:
    return (
        f"| {name} | {d['difference']:+.3f} | [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] | {d['p_value']:.3f} | "
        f"{d['share_b_better']:.2f} of {d['n_replicates']} |"
    )


# configs/experiments/replicate_volume.yaml's work folder and page
WHERE = {"work_dir": "runs/replicate_volume", "results": "docs/results_self_training.md"}


def rerun(summary: dict) -> str:
    """The command that wrote the page: the plan's non-default fields, and its folder and page when not the config's."""
    default = summary.get("defaults", {})  # replicate_volume.run stores the plan's defaults
    return command(summary["plan"], default, summary.get("where"), "python scripts/replicate.py --experiment volume", WHERE)


def last_round_lines(pooled: dict, reps: list[dict]) -> list[str]:
    """What the last round trained did on test, kept or not: the attempt's effect beside what shipped."""
    if "last_round" not in pooled:
        return []
    lr = pooled["last_round"]
    lines = [
        "",
        "## The last round trained, kept or not",
        "",
        "What one round of mean-teacher self-training did: the round's candidate (student or EMA teacher, chosen on "
        "validation) on the same test volumes, whether or not validation kept it. Nothing is chosen on these figures.",
        "",
        "| data seed | training seed | last round (candidate) | kept | sensitivity >= 10 mm (teacher → last round) | FP per volume | CPM | key-slice F1 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in reps:
        info = r["last_round"]
        lines.append(
            f"| {r['data_seed']} | {r['train_seed']} | round {info['round']} ({info['candidate']}) | {'yes' if info['kept'] else 'no'} | {_versus(r, 'last_round')}"
        )
    lines += [
        "",
        "| last round - teacher (two-level bootstrap) | difference | 95% CI | P | replicates where the last round is better |",
        "| --- | --- | --- | --- | --- |",
        _diff_line("sensitivity >= 10 mm, whole volumes", lr["volume_vs_teacher"]),
    ]
    if "key_slices_vs_teacher" in lr:
        lines.append(_diff_line("F1, key slices", lr["key_slices_vs_teacher"]))
    c, fp = lr["cpm_difference"], lr["fp_per_volume"]
    lines += [
        "",
        f"CPM difference (per replicate, mean ± SD): {c['mean']:+.3f} ± {c['sd']:.3f}; the last round's FP per volume {fp['mean']:.2f} ± {fp['sd']:.2f}.",
    ]
    return lines


def page(summary: dict, source: str) -> str:
    plan, pooled, reps = summary["plan"], summary["pooled"], summary["replicates"]
    lines = [
        "# Self-training on whole volumes: teacher vs self-trained, replicated",
        "",
        f"Written by `{rerun(summary)}` from `{source}`. Data seeds {plan['data_seeds']} x training seeds "
        f"{plan['train_seeds']}; demo size `{plan['size']}`, {plan['epochs']} epochs per training, up to {plan['rounds']} mean-teacher "
        f"round(s) (EMA decay {plan['ema_decay']}), target precision {plan['target_precision']}, ignore floor {plan['ignore_floor']}, "
        f"dynamic count {plan['dynamic_count']}, temporal consistency {plan['temporal_consistency']}. Rounds and checkpoints kept by "
        "validation sensitivity >= 10 mm at the shipped false-box limits (then CPM). Test figures at each model's own validation "
        "operating point.",
        "",
        "| data seed | training seed | kept | | sensitivity >= 10 mm (teacher → self-trained) | FP per volume | CPM | key-slice F1 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *[row_line(r) for r in reps],
        "",
        f"{pooled['identical_rows']} of {pooled['replicates']} rows kept round 0: there the self-trained model *is* the teacher "
        "and the row's difference is 0 by construction.",
        "",
        "| self-trained - teacher (two-level bootstrap) | difference | 95% CI | P | replicates where self-trained is better |",
        "| --- | --- | --- | --- | --- |",
        _diff_line("sensitivity >= 10 mm, whole volumes", pooled["volume_b_vs_a"]),
    ]
    if "key_slices_b_vs_a" in pooled:
        lines.append(_diff_line("F1, key slices", pooled["key_slices_b_vs_a"]))
    c = pooled["volume_cpm_difference"]
    lines += ["", f"CPM difference (per replicate, mean ± SD): {c['mean']:+.3f} ± {c['sd']:.3f} (n={c['n']})."]
    lines += last_round_lines(pooled, reps)
    others = {k: v for k, v in pooled.get("arms", {}).items() if k != "self_trained"}
    if others:
        lines += [
            "",
            "## Options against confirmation bias (each from the same round-0 teacher)",
            "",
            "| arm - teacher | sensitivity >= 10 mm | 95% CI | P | CPM difference | rows identical to the teacher |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for arm, a in others.items():
            d, cd = a["volume_vs_teacher"], a["cpm_difference"]
            lines.append(
                f"| {arm} | {d['difference']:+.3f} | [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] | {d['p_value']:.3f} | "
                f"{cd['mean']:+.3f} ± {cd['sd']:.3f} | {a['identical_rows']} of {pooled['replicates']} |"
            )
        kept = ", ".join(f"{arm} round {r['arms'][arm]['kept_round']}" for r in reps[:1] for arm in others if arm in r.get("arms", {}))
        if kept:
            lines += ["", f"Rounds kept in the first replicate: {kept}."]
    return "\n".join(lines) + "\n"
