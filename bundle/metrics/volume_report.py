"""The volume-level report: one model (metrics_volume.json, summary_volume.md, froc_volume.png) or two, paired.

Why files in, files out: like bundle.metrics.report, any two prediction sets of the same volumes
(two models, a model and its TorchScript export, two replicates) are scored by the same code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bundle.metrics import plots, volume_stats
from bundle.metrics.volume import (
    BIN_LABELS,
    CPM_LABEL,
    GE_LABEL,
    OLD_RULE,
    MatchRule,
    Volume,
    at_threshold,
    choose_operating_point,
    figures,
    froc_figures,
    restrict,
    score_volumes,
    volume_counts,
)
from bundle.steps import provenance

GE_KEY = f"sensitivity {GE_LABEL}"


def _cpm_resamples(volumes: list[Volume], w: np.ndarray, min_long_mm: float) -> np.ndarray:
    d = volume_stats.froc_data([restrict(v, min_long_mm) for v in volumes])
    return volume_stats.weighted_cpm(d, w)[0]


def ci_figures(volumes: list[Volume], threshold: float, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Patient-bootstrap 95% CIs of every figure at the threshold, and of the CPM (all lesions, >= 10 mm)."""
    counts = volume_counts(volumes, threshold)
    w = volume_stats.patient_weights([v.patient for v in volumes], n_bootstrap, seed)
    boot, point = figures(w @ counts), figures(counts.sum(0))
    out: dict = {k: volume_stats.interval(boot[k], point[k]) for k in point}
    for key, mm in (("cpm", 0.0), (f"cpm {GE_LABEL}", 10.0)):
        out[key] = volume_stats.interval(_cpm_resamples(volumes, w, mm), froc_figures(volumes, mm)["cpm"])
    return out | {"n_patients": len({v.patient for v in volumes}), "n_resamples": n_bootstrap, "seed": seed}


def _scored(datalist: str, val_predictions: str, test_predictions: str, rule: MatchRule, targets: dict, keys: tuple[str, str]):
    val = score_volumes(datalist, val_predictions, keys[0], rule)
    op = choose_operating_point(val, **targets) | {"match": rule.label(), "criterion": rule.criterion, "iou_threshold": rule.iou_threshold}
    return val, op, score_volumes(datalist, test_predictions, keys[1], rule)


def evaluate(
    datalist: str,
    val_predictions: str,
    test_predictions: str,
    output_dir: str,
    criterion: str = "strict",
    iou_threshold: float = 0.1,
    max_fp_per_volume: float = 0.5,
    max_fp_per_normal_volume: float = 0.25,
    n_bootstrap: int = 1000,
    seed: int = 0,
    name: str = "model",
    normal_fp_from: str = "normal_volumes",
    val_key: str = "validation",
    test_key: str = "test",
    config: dict | None = None,
) -> dict:
    """Operating point on validation volumes, every test figure at it with patient CIs, FROC/CPM, the FROC plot.

    config: the settings the predictions were made and scored with (evaluate_volume.yaml's ``evaluation_stamp``),
    stamped with the git state into ``provenance`` (bundle.steps.provenance)."""
    rule = MatchRule(criterion, iou_threshold)
    targets = {
        "max_fp_per_volume": max_fp_per_volume,
        "max_fp_per_normal_volume": max_fp_per_normal_volume,
        "normal_fp_from": normal_fp_from,
    }
    val, op, test = _scored(datalist, val_predictions, test_predictions, rule, targets, (val_key, test_key))
    # the settings the scores came from travel with the point (operating_point.json), so serving can name a mismatch
    op["settings"] = {k: config[k] for k in ("detector", "linking") if k in (config or {})} or None
    thr = op["score_threshold"]
    result = {
        "name": name,
        "match": {"criterion": rule.criterion, "iou_threshold": rule.iou_threshold, "label": rule.label()},
        "operating_point": op,
        "validation_froc": froc_figures(val),
        "test": {
            "at_operating_point": at_threshold(test, thr),
            "ci95": ci_figures(test, thr, n_bootstrap, seed),
            "froc": froc_figures(test),
            "froc_ge_10mm": froc_figures(test, 10.0),
            "patients": len({v.patient for v in test}),
        },
        "old_rule": old_rule_column(datalist, test_predictions, test_key, thr),
        "provenance": {"git": provenance.git_state(), "config": config},
    }
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result["plots"] = {"froc": plots.plot_froc({name: [v.match for v in test]}, out / "froc_volume.png", "volume")}
    (out / "metrics_volume.json").write_text(json.dumps(result, indent=2))
    (out / "summary_volume.md").write_text(summary_markdown(result))
    return result


def old_rule_column(datalist: str, test_predictions: str, test_key: str, threshold: float) -> dict:
    """The same test predictions at the same threshold by the rule of the earlier pages (OLD_RULE), so they compare."""
    test = score_volumes(datalist, test_predictions, test_key, OLD_RULE)
    return {
        "match": OLD_RULE.label(),
        "at_operating_point": at_threshold(test, threshold),
        "froc": froc_figures(test),
        "froc_ge_10mm": froc_figures(test, 10.0),
    }


def compare(
    datalist: str,
    a: tuple[str, str],
    b: tuple[str, str],
    output_dir: str,
    names: tuple[str, str] = ("A", "B"),
    criterion: str = "strict",
    iou_threshold: float = 0.1,
    max_fp_per_volume: float = 0.5,
    max_fp_per_normal_volume: float = 0.25,
    n_bootstrap: int = 1000,
    seed: int = 0,
    normal_fp_from: str = "normal_volumes",
) -> dict:
    """Two models on the same test volumes, each at its own validation operating point: paired bootstrap of
    sensitivity >= 10 mm, FP per volume and CPM (A - B), the same resampled patients for both."""
    rule = MatchRule(criterion, iou_threshold)
    targets = {
        "max_fp_per_volume": max_fp_per_volume,
        "max_fp_per_normal_volume": max_fp_per_normal_volume,
        "normal_fp_from": normal_fp_from,
    }
    (_, op_a, ta), (_, op_b, tb) = (_scored(datalist, *pr, rule, targets, ("validation", "test")) for pr in (a, b))
    if [v.image for v in ta] != [v.image for v in tb]:
        raise ValueError("paired test: the two prediction sets cover different test volumes")
    w = volume_stats.patient_weights([v.patient for v in ta], n_bootstrap, seed)
    ca, cb = volume_counts(ta, op_a["score_threshold"]), volume_counts(tb, op_b["score_threshold"])
    fa, fb, pa, pb = figures(w @ ca), figures(w @ cb), figures(ca.sum(0)), figures(cb.sum(0))
    paired = {k: volume_stats.paired(fa[k] - fb[k], pa[k] - pb[k]) for k in (GE_KEY, "fp_per_volume", "fp_per_normal_volume")}
    cpm_a, cpm_b = froc_figures(ta)["cpm"], froc_figures(tb)["cpm"]
    paired["cpm"] = volume_stats.paired(_cpm_resamples(ta, w, 0.0) - _cpm_resamples(tb, w, 0.0), cpm_a - cpm_b)
    result = {
        "names": list(names),
        "match": rule.label(),
        "n_patients": len({v.patient for v in ta}),
        "n_resamples": n_bootstrap,
        "seed": seed,
        "paired": paired,
        "models": {
            n: {"operating_point": op, "at_operating_point": at_threshold(t, op["score_threshold"]), "froc": froc_figures(t)}
            for n, op, t in ((names[0], op_a, ta), (names[1], op_b, tb))
        },
    }
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    curves = {names[0]: [v.match for v in ta], names[1]: [v.match for v in tb]}
    result["plots"] = {"froc": plots.plot_froc(curves, out / "froc_volume_compare.png", "volume")}
    (out / "compare_volume.json").write_text(json.dumps(result, indent=2))
    (out / "compare_volume.md").write_text(compare_markdown(result))
    return result


def _f(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ci(c: dict, digits: int = 3) -> str:
    if c["ci_low"] is None:
        return _f(c["value"], digits)
    return f"{_f(c['value'], digits)} ({c['ci_low']:.{digits}f}-{c['ci_high']:.{digits}f})"


def summary_markdown(r: dict) -> str:
    op, t = r["operating_point"], r["test"]
    at, ci, fr, fr10 = t["at_operating_point"], t["ci95"], t["froc"], t["froc_ge_10mm"]
    v = op["validation"]
    rates = " / ".join(f"{k}" for k in fr["sensitivity_at_fp"])
    old = r.get("old_rule")
    o = old["at_operating_point"] if old else None

    def col(key: str, digits: int = 3) -> str:
        return "" if old is None else f" {_f(o[key], digits)} |"

    def col_text(text: str) -> str:
        return "" if old is None else f" {text} |"

    lines = [
        f"# Volume-level evaluation: {r['name']}",
        "",
        f"Matching per volume: {r['match']['label']}; greedy by score, each lesion matched once.",
        f"Operating point: score {op['score_threshold']:.4f}, the {op['rule']}; on validation "
        f"({v['volumes']} volumes, {v['normal_volumes']} normal): FP per volume {_f(v['fp_per_volume'], 2)}, "
        f"per normal volume {_f(v['fp_per_normal_volume'], 2)}, sensitivity >= 10 mm {_f(v[GE_KEY])}.",
        f"95% CIs: bootstrap over {ci['n_patients']} test patients ({ci['n_resamples']} resamples, seed {ci['seed']}).",
        f"{CPM_LABEL}." + (f" Old rule (earlier pages; point values, same threshold): {old['match']}." if old else ""),
        "",
        "| test, at the operating point | value (95% CI) |" + (" old rule |" if old else ""),
        "| --- | --- |" + (" --- |" if old else ""),
        f"| volumes / normal volumes / patients | {at['volumes']} / {at['normal_volumes']} / {t['patients']} |" + col_text(""),
        f"| lesion sensitivity, lesions >= 10 mm ({at['found_ge10']} of {at['lesions_ge10']}) | {_ci(ci[GE_KEY])} |"
        + col_text(f"{_f(o[GE_KEY])} ({o['found_ge10']} of {o['lesions_ge10']})" if o else ""),
        f"| lesion sensitivity, all lesions ({at['found']} of {at['lesions']}) | {_ci(ci['sensitivity'])} |" + col("sensitivity"),
        f"| false positives per volume | {_ci(ci['fp_per_volume'], 2)} |" + col("fp_per_volume", 2),
        f"| false positives per normal volume | {_ci(ci['fp_per_normal_volume'], 2)} |" + col("fp_per_normal_volume", 2),
        f"| boxes shown per volume | {_f(at['boxes_per_volume'], 2)} |" + col("boxes_per_volume", 2),
        f"| CPM, all lesions | {_ci(ci['cpm'])} |" + col_text(_f(old["froc"]["cpm"]) if old else ""),
        f"| sensitivity at {rates} FP per volume, all lesions | {' / '.join(_f(x) for x in fr['sensitivity_at_fp'].values())} |"
        + col_text(" / ".join(_f(x) for x in old["froc"]["sensitivity_at_fp"].values()) if old else ""),
        f"| CPM, lesions >= 10 mm (smaller ones ignored) | {_ci(ci[f'cpm {GE_LABEL}'])} |"
        + col_text(_f(old["froc_ge_10mm"]["cpm"]) if old else ""),
        f"| sensitivity at {rates} FP per volume, lesions >= 10 mm | {' / '.join(_f(x) for x in fr10['sensitivity_at_fp'].values())} |"
        + col_text(" / ".join(_f(x) for x in old["froc_ge_10mm"]["sensitivity_at_fp"].values()) if old else ""),
        "",
        "| lesion long axis | lesions | found | sensitivity (95% CI) |" + (" found, old rule |" if old else ""),
        "| --- | --- | --- | --- |" + (" --- |" if old else ""),
    ]
    for b in BIN_LABELS:
        c = at["by_size"][b]
        lines.append(
            f"| {b} | {c['lesions']} | {c['found']} | {_ci(ci[f'sensitivity {b}'])} |"
            + col_text(str(o["by_size"][b]["found"]) if o else "")
        )
    lines += ["", f"FROC plot (FP per volume): `{r['plots']['froc']}`." if "plots" in r else ""]
    git = r.get("provenance", {}).get("git") or {}
    if git.get("commit"):
        lines.append(
            f"Code: commit {git['commit'][:12]}"
            + (f" with uncommitted changes (md5 {git['dirty_md5'][:12]})" if git["dirty"] else "")
            + "."
        )
    return "\n".join(lines).rstrip() + "\n"


def compare_markdown(r: dict) -> str:
    a, b = r["names"]
    lines = [
        f"# {a} vs {b}, volume level",
        "",
        f"Matching: {r['match']}. Each model at its own validation operating point.",
        "",
        "| model | threshold | sensitivity >= 10 mm | sensitivity, all | FP per volume | FP per normal volume | CPM |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n in (a, b):
        m = r["models"][n]
        at = m["at_operating_point"]
        lines.append(
            f"| {n} | {m['operating_point']['score_threshold']:.4f} | {_f(at[GE_KEY])} | {_f(at['sensitivity'])} "
            f"| {_f(at['fp_per_volume'], 2)} | {_f(at['fp_per_normal_volume'], 2)} | {m['froc']['cpm']:.3f} |"
        )
    lines += ["", f"Paired bootstrap over {r['n_patients']} patients ({r['n_resamples']} resamples, seed {r['seed']}), {a} - {b}:", ""]
    for k, p in r["paired"].items():
        span = "" if p["ci_low"] is None else f" (95% CI {p['ci_low']:+.3f} to {p['ci_high']:+.3f})"
        lines.append(f"- {k}: {_f(p['difference'])}{span}, two-sided P = {p['p_value']:.4f}")
    return "\n".join(lines) + "\n"
