"""docs/results.md, written by the ablation command from its ablation.json (never by hand): whole volumes first."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from bundle.demo.review_page import review_section
from bundle.demo.targets import check, section
from bundle.selftrain.scoring import shipped_limits

LABELS = {
    "mined_only": "mined key slices only (seed study)",
    "whole_series": "+ whole series",
    "ignore": "+ ignore regions (lesion reach)",
    "lopsided": "+ ignore + lopsided bootstrap loss",
    "hard_pool": "+ ignore + hard-negative pool x5",
    "context": "+ ignore + 2.5D (3 slices)",
    "focal": "+ ignore + 2.5D + focal loss over every anchor",
    "thick_slices": "+ ignore + 2.5D + thick-slice partial volume (p 0.5, sigma_z 0.3-1.2)",
    "context5": "+ ignore + 2.5D (5 slices)",
    "thick_resample": "+ ignore + 2.5D + thick slices simulated (slabs of 1-1.6 grid slices averaged, read back)",
    "oracle": "(c) oracle: + ignore + 2.5D on complete boxes (the labels' ceiling, never chosen)",
    "context_60ep": "+ ignore + 2.5D, 60 epochs (budget)",
    "mined_only_36ep": "mined key slices only, 36 epochs (budget)",
    "ignore_36ep": "+ ignore regions, 36 epochs (budget)",
    "context_36ep": "+ ignore + 2.5D, 36 epochs (budget)",
    "self_trained_36ep": "+ ignore + 2.5D + self-training, 36 epochs (budget)",
    "self_trained": "+ ignore + 2.5D + self-training (the round kept on validation)",
    "self_trained_2d": "+ ignore + self-training, 2D (the round kept on validation)",
}

# parts each arm adds to the seed study's training (the choice prefers fewer when validation cannot tell them apart)
PARTS = {
    "mined_only": 0,
    "whole_series": 1,
    "ignore": 2,
    "lopsided": 3,
    "hard_pool": 3,
    "context": 3,
    "context5": 3,
    "self_trained_2d": 3,
    "focal": 4,
    "thick_slices": 4,
    "thick_resample": 4,
    "self_trained": 4,
}


def choose(pooled: dict, budget: str = "") -> dict:
    """The demo's default combination, read from validation volumes only (test patients choose nothing).

    Rule: the highest pooled validation sensitivity for lesions >= 10 mm at each arm's own operating point;
    arms within one binomial standard error of it are ties, and the tie with the fewest parts wins (then the
    higher validation figure). ``budget``: compare only the arms trained with that suffix (e.g. ``_36ep``),
    the same parts at another number of epochs. Why the one-SE rule: two seeds of ~70 validation lesions each cannot separate
    arms a few lesions apart, and every extra part costs training time and a way to fail."""
    val, parts = {}, {}
    for arm, a in pooled.items():
        v, n = a["pooled"]["validation_sensitivity_ge10"], a["counts"]["val_lesions_ge10"]
        base = arm.removesuffix(budget) if budget and arm.endswith(budget) else (None if budget else arm)
        if base in PARTS and v is not None and n:
            val[arm], parts[arm] = (v, n), PARTS[base]
    if not val:
        return {}
    best = max(val, key=lambda k: val[k][0])
    v, n = val[best]
    se = float(np.sqrt(v * (1 - v) / n))
    ties = [k for k in val if val[k][0] >= v - se]
    chosen = min(ties, key=lambda k: (parts[k], -val[k][0]))
    return {"chosen": chosen, "best": best, "best_validation": v, "se": se, "ties": ties}


def _test(m: dict) -> dict:
    """One arm's test figures at its operating point, with the counts that pool."""
    a = m["test"]["at_operating_point"]
    fpn = a["fp_per_normal_volume"]
    small = (a.get("by_size") or {}).get("10-20 mm") or {}
    return {
        "found_ge10": a["found_ge10"],
        "lesions_ge10": a["lesions_ge10"],
        "false_positives": a["false_positives"],
        "volumes": a["volumes"],
        "normal_volumes": a["normal_volumes"],
        "fp_normal": round(fpn * a["normal_volumes"]) if fpn is not None else 0,
        "found_10_20": small.get("found", 0),
        "lesions_10_20": small.get("lesions", 0),
        "sensitivity_ge10": a["sensitivity >=10 mm"] if "sensitivity >=10 mm" in a else _ratio(a["found_ge10"], a["lesions_ge10"]),
        "fp_per_volume": a["fp_per_volume"],
        "fp_per_normal_volume": fpn,
        "sens_at_1fp": m["test"]["froc"]["sensitivity_at_fp"].get("1"),
        "sens_ge10_at_1fp": m["test"]["froc_ge_10mm"]["sensitivity_at_fp"].get("1"),
        "cpm": m["test"]["froc"]["cpm"],
        "threshold": m["operating_point"]["score_threshold"],
        "val_found_ge10": m["operating_point"].get("validation", {}).get("found_ge10", 0),
        "val_lesions_ge10": m["operating_point"].get("validation", {}).get("lesions_ge10", 0),
    }


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _ms(values: list) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    return {"mean": float(v.mean()) if len(v) else None, "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}


def pool(reps: list[dict]) -> dict:
    """Per arm: counts summed over replicates (the pooled figures) and mean ± SD of each replicate's figures."""
    out = {}
    arms = list(dict.fromkeys(a for r in reps for a in r["arms"]))  # every arm any replicate ran, in run order
    for arm in arms:
        per = [_test(r["arms"][arm]) for r in reps if arm in r["arms"]]
        keys = (
            "found_ge10",
            "lesions_ge10",
            "false_positives",
            "volumes",
            "normal_volumes",
            "fp_normal",
            "found_10_20",
            "lesions_10_20",
            "val_found_ge10",
            "val_lesions_ge10",
        )
        s = {k: sum(p[k] for p in per) for k in keys}
        pooled = {
            "sensitivity_ge10": _ratio(s["found_ge10"], s["lesions_ge10"]),
            "sensitivity_10_20": _ratio(s["found_10_20"], s["lesions_10_20"]),
            "fp_per_volume": _ratio(s["false_positives"], s["volumes"]),
            "fp_per_normal_volume": _ratio(s["fp_normal"], s["normal_volumes"]),
            "validation_sensitivity_ge10": _ratio(s["val_found_ge10"], s["val_lesions_ge10"]),
        }
        pooled["meets_goal"] = all(r["met"] for r in check(pooled))  # an unmeasured target (no normal volume) is not met
        keys = ("sensitivity_ge10", "fp_per_volume", "fp_per_normal_volume", "sens_at_1fp", "sens_ge10_at_1fp", "cpm", "threshold")
        out[arm] = {"pooled": pooled, "counts": s, "replicates": {k: _ms([p[k] for p in per]) for k in keys}}
        out[arm]["protocols"] = _pool_protocols([r["arms"][arm] for r in reps if arm in r["arms"]])
    return out


def _pool_protocols(ms: list[dict]) -> dict:
    """Per protocol variant: counts at the arm's own operating point summed over replicates (evaluate_volume.yaml's variants)."""
    out: dict[str, dict] = {}
    for m in ms:
        for name, v in (m.get("protocols") or {}).get("variants", {}).items():
            a, c = (
                v["at_operating_point"],
                out.setdefault(name, dict.fromkeys(("found_ge10", "lesions_ge10", "fp", "volumes", "fp_normal", "normal"), 0)),
            )
            fpn = a.get("fp_per_normal_volume")
            c["found_ge10"] += a["found_ge10"]
            c["lesions_ge10"] += a["lesions_ge10"]
            c["fp"] += a["false_positives"]
            c["volumes"] += a["volumes"]
            c["normal"] += a["normal_volumes"]
            c["fp_normal"] += round(fpn * a["normal_volumes"]) if fpn is not None else 0
    return out


def _f(v: float | None, d: int = 3) -> str:
    return "-" if v is None else f"{v:.{d}f}"


def _msf(v: dict) -> str:
    return "-" if v["mean"] is None else f"{v['mean']:.3f} ± {v['sd']:.3f}"


WHERE = {"work_dir": "runs/ablation", "results": "docs/results.md"}  # configs/experiments/ablation.yaml's


def command(
    plan: dict, default: dict, where: dict | None = None, script: str = "python scripts/ablation.py", config_where: dict = WHERE
) -> str:
    """The command that reruns the page: the plan's non-default fields, and its work folder and page when not the config's."""
    over = [f"--plan#{k} {json.dumps(v)!r}" for k, v in plan.items() if default.get(k) != v]
    over += [f"--{k} {v}" for k, v in (where or {}).items() if v != config_where[k]]
    return " ".join([script, *over])


METHOD = (
    "Each model runs over every slice of each held-out, fully labelled test volume through `configs/inference_volume.yaml` "
    "(the path MONAI Label and the Deploy app use); strict rule: a lesion is found when a 3D box has IoU >= 0.1 with it or the "
    "box's own centre lies inside it (lesions >= 10 mm matched first, a second box on a found lesion ignored). The operating "
    "point is each model's own, chosen on validation volumes (lowest logit with <= {fp:g} false boxes per volume and <= {fpn:g} "
    "per normal volume{how}); only the demo's (b) is shipped as `operating_point.json`. CPM: LUNA16, 1/8 ... 8 false boxes per volume. "
    "Pooled = counts summed over replicates. Choices (the demo's default combination) are read from the last column, "
    "validation volumes only; test patients choose nothing."
)


def _limits(summary: dict) -> dict:
    """The rule the page's operating points were chosen by: the rescoring's, else the one each evaluation recorded."""
    if summary.get("rescored"):
        return summary["rescored"]["limits"]
    found = [
        m["operating_point"]["targets"]
        for r in summary["replicates"]
        for m in r["arms"].values()
        if "targets" in m.get("operating_point", {})
    ]
    if found and any(t != found[0] for t in found):
        raise ValueError(f"ablation.json: arms chose their operating points by different rules ({found[0]} and others)")
    return found[0] if found else shipped_limits()


def _intro(summary: dict, source: str) -> list[str]:
    """The page's title, the command that wrote it, and how every figure is made (a rescored page: the rule it chose by)."""
    plan, reps, again = summary["plan"], summary["replicates"], summary.get("rescored")
    ran = f"`{command(plan, summary.get('defaults', plan), summary.get('where'))}`"
    seeds = f"Data seeds {plan['data_seeds']} x training seeds {plan['train_seeds']}, demo size `{plan['size']}`, {plan['epochs']} epochs per training."
    how = (
        f"Rescored by `{again['command']}` from `{source}`: the models and saved predictions of {ran}, each arm's operating point "
        "chosen again on validation volumes by the rule below (`bundle/demo/rescore.py`); nothing was retrained or run again. " + seeds
        if again
        else f"Written by {ran} from `{source}`. {seeds} This invocation took {sum(r['seconds'] for r in reps) / 60:.0f} min; arms "
        "already trained and evaluated under `work_dir` are reused only when stamped with the same code (git commit and uncommitted "
        "changes), configs, settings and model (bundle/steps/provenance.py); anything else runs again."
    )
    limits = _limits(summary)
    est = ", estimated from every volume's false boxes away from any lesion" if limits.get("normal_fp_from") == "all_volumes" else ""
    method = METHOD.format(fp=limits["max_fp_per_volume"], fpn=limits["max_fp_per_normal_volume"], how=est)
    return ["# Results", "", "## Whole volumes (primary): what a radiologist sees on a series", "", how, "", method, ""]


def _label(arm: str) -> str:
    """An arm's row label; a linking variant of an arm says which setting it ran with."""
    return LABELS.get(arm, arm.replace("_min_slices", ", linking min_slices ").replace("_extent_", ", track extent "))


def protocol_section(pooled: dict) -> list[str]:
    """The protocol-variant table: one row per arm, so a grid the model was not trained on shows in one place."""
    lines: list[str] = []
    variants = list(dict.fromkeys(v for a in pooled.values() for v in a.get("protocols", {})))
    if variants:
        lines += [
            "",
            "### Protocol variants: the same test brains stored as other protocols store them",
            "",
            "Each test volume resampled with MONAI (`bundle/inference/protocols.py`), its truth moved into the new grid, run "
            "through the same inference at the arm's own shipped operating point (`configs/evaluate_volume.yaml` "
            "`protocol_variants`). Pooled sensitivity >= 10 mm / FP per volume / FP per normal volume:",
            "",
            "| arm | " + " | ".join(variants) + " |",
            "| --- |" + " --- |" * len(variants),
        ]
        for arm, a in pooled.items():
            cells = []
            for v in variants:
                c = a.get("protocols", {}).get(v)
                cells.append(
                    "-"
                    if not c
                    else f"{_f(_ratio(c['found_ge10'], c['lesions_ge10']))} / {_f(_ratio(c['fp'], c['volumes']), 2)} / "
                    f"{_f(_ratio(c['fp_normal'], c['normal']), 2)}"
                )
            lines.append(f"| {_label(arm)} | " + " | ".join(cells) + " |")
    return lines


def targets_lines(pooled: dict, plan: dict) -> list[str]:
    """How far the arm validation chose (at the plan's epochs) is from each target, pooled, its protocol variants too."""
    pick = choose(pooled)
    if not pick:
        return []
    a = pooled[pick["chosen"]]
    variants = {
        name: {
            "sensitivity_ge10": _ratio(c["found_ge10"], c["lesions_ge10"]),
            "fp_per_volume": _ratio(c["fp"], c["volumes"]),
            "fp_per_normal_volume": _ratio(c["fp_normal"], c["normal"]),
        }
        for name, c in a.get("protocols", {}).items()
    }
    title = f"Against the targets: {LABELS.get(pick['chosen'], pick['chosen'])}, the arm chosen at {plan['epochs']} epochs, pooled"
    return section(title, a["pooled"], variants)


def page(summary: dict, source: str) -> str:
    plan, pooled, reps = summary["plan"], summary["pooled"], summary["replicates"]
    none = ["No ablation arm in this run (`--plan#arms []`): the simulated review below only."]
    lines = (
        _intro(summary, source)
        + none * (not pooled)
        + [
            "| arm | sensitivity, lesions >= 10 mm (pooled) | 10-20 mm (pooled) | FP / volume (pooled) | FP / normal volume (pooled) | "
            "meets every target | sensitivity >= 10 mm, mean ± SD | sensitivity at 1 FP / volume (FROC) | CPM | "
            "validation sensitivity >= 10 mm at the operating point |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        * bool(pooled)
    )
    for arm, a in pooled.items():
        p, r = a["pooled"], a["replicates"]
        label = _label(arm)
        lines.append(
            f"| {label} | {_f(p['sensitivity_ge10'])} ({a['counts']['found_ge10']}/{a['counts']['lesions_ge10']}) | "
            f"{_f(p.get('sensitivity_10_20'))} ({a['counts'].get('found_10_20', 0)}/{a['counts'].get('lesions_10_20', 0)}) | "
            f"{_f(p['fp_per_volume'], 2)} | {_f(p['fp_per_normal_volume'], 2)} | {'yes' if p['meets_goal'] else 'no'} | "
            f"{_msf(r['sensitivity_ge10'])} | {_msf(r['sens_at_1fp'])} | {_msf(r['cpm'])} | {_f(p['validation_sensitivity_ge10'])} |"
        )
    for budget, what in (("", f"{plan['epochs']} epochs"), ("_36ep", "36 epochs")):
        pick = choose(pooled, budget)
        if pick:
            lines += [
                "",
                f"**Chosen on validation at {what}: {LABELS.get(pick['chosen'], pick['chosen'])}** (`{pick['chosen']}`). Highest "
                f"pooled validation sensitivity: `{pick['best']}` {pick['best_validation']:.3f}; within one standard error "
                f"({pick['se']:.3f}): {', '.join(f'`{t}`' for t in pick['ties'])}; of those, the fewest added parts "
                "(`bundle/demo/ablation_page.py` `choose`).",
            ]
    lines += targets_lines(pooled, plan)
    lines += protocol_section(pooled)
    lines += review_section(reps)
    lines += [
        "",
        "### Per replicate",
        "",
        "| data seed | training seed | arm | sens >= 10 mm | FP / vol | FP / normal vol | threshold | CPM |",
    ]
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for rep in reps:
        for arm, m in rep["arms"].items():
            t = _test(m)
            lines.append(
                f"| {rep['data_seed']} | {rep['train_seed']} | {arm} | {_f(t['sensitivity_ge10'])} | {_f(t['fp_per_volume'], 2)} | "
                f"{_f(t['fp_per_normal_volume'], 2)} | {_f(t['threshold'], 4)} | {_f(t['cpm'])} |"
            )
    lines += [
        "",
        "Each replicate's full report (CIs by patient bootstrap, sensitivity by size, FROC plot) is "
        "`<work_dir>/data<seed>/train<seed>/eval/<arm>/summary_volume.md`.",
        "",
        "## Key slices (the seed study's comparison)",
        "",
        "Precision, recall and F1 on the measured key slices, replicated over data and training seeds, with the paired "
        "two-level bootstrap of self-training against mined-only: [results_key_slices.md](results_key_slices.md).",
    ]
    return "\n".join(lines) + "\n"


def write_page(summary: dict, path: Path, source: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page(summary, os.path.relpath(source, path.parent) if source.is_absolute() else str(source)))
    return path
