"""The simulated review's section of the ablation page (issue 28): per replicate each arm with CIs, then the paired differences."""

from __future__ import annotations

from bundle.activelearning.simulated_review import ci_text


def _f(v: float | None, d: int = 3) -> str:
    return "-" if v is None else f"{v:.{d}f}"


REVIEW = (
    "Simulated review (`bundle/activelearning/simulated_review.py`): every arm starts from the same model trained on mined "
    "labels and is fine-tuned the same epochs with the same seed on the whole training series. `none`: mined labels only. "
    "`uncertain`: the K training studies the MONAI Label strategy ranks first (`bundle/activelearning/uncertainty.py` `rank`, "
    "at the start model's operating point chosen on validation volumes) reviewed by the demo truth as reader: every lesion "
    "boxed as Slicer markups, read by `reviewed.py` as complete labels (boxes positive, the rest of the series background). "
    "`random`: K training studies drawn with a fixed seed, reviewed the same way. Test figures at each model's own validation "
    "operating point, strict rule as above, 95% CIs by patient bootstrap; differences are paired over the same test patients."
)


def review_verdict(p: dict) -> str:
    """What the paired difference uncertain - random in sensitivity >= 10 mm says."""
    lo, hi = p.get("ci_low"), p.get("ci_high")
    if lo is None:
        return "undefined (no resample had lesions >= 10 mm)"
    if lo > 0:
        return "uncertainty sampling beats random review (the 95% CI excludes 0)"
    if hi < 0:
        return "random review beats uncertainty sampling (the 95% CI excludes 0)"
    return "no difference shown: the 95% CI includes 0"


def review_section(reps: list[dict]) -> list[str]:
    """The simulated review's rows (issue 28): per replicate, the start model and each arm with CIs, then the differences."""
    reps = [r for r in reps if r.get("review")]
    if not reps:
        return []
    k = sorted({r["review"]["k"] for r in reps})
    lines = ["", f"### Simulated review: the {'/'.join(map(str, k))} most uncertain training studies against as many random ones", ""]
    lines += [
        REVIEW,
        "",
        "| data seed | training seed | arm | reviewed studies (truth boxes) | sensitivity >= 10 mm [95% CI] (found) | "
        "FP / volume [95% CI] | CPM [95% CI] | validation sensitivity >= 10 mm |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in reps:
        v = r["review"]
        for arm, f in {"start": v["start"], **v["arms"]}.items():
            what = (
                "model before fine-tuning" if arm == "start" else (f"{arm}-{v['k']}" if arm != "none" else f"none (+{v['epochs']} epochs)")
            )
            n = "-" if arm == "start" else f"{len(v['reviewed'][arm])} of {v['training_studies']} ({v['truth_boxes'][arm]})"
            lines.append(
                f"| {r['data_seed']} | {r['train_seed']} | {what} | {n} | "
                f"{ci_text(f['sensitivity_ge10'])} ({f['found_ge10']}/{f['lesions_ge10']}) | {ci_text(f['fp_per_volume'], 2)} | "
                f"{ci_text(f['cpm'])} | {_f(f['validation_sensitivity_ge10'])} |"
            )
    lines += [
        "",
        "| data seed | training seed | paired difference | sensitivity >= 10 mm [95% CI], P | FP / volume [95% CI] | CPM [95% CI] |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in reps:
        for name, p in r["review"]["paired"].items():
            s = p["sensitivity_ge10"]
            lines.append(
                f"| {r['data_seed']} | {r['train_seed']} | {name} | {ci_text(s)}, P {s['p_value']:.3f} | {ci_text(p['fp_per_volume'], 2)} | "
                f"{ci_text(p['cpm'])} |"
            )
    for r in reps:
        v = r["review"]
        p = v["paired"].get("uncertain - random")
        if p:
            lines += [
                "",
                f"**Data seed {r['data_seed']}, training seed {r['train_seed']}, K {v['k']}: "
                f"{review_verdict(p['sensitivity_ge10'])}** (sensitivity >= 10 mm, uncertain - random; "
                f"{v['overlap']} studies in both arms; ranking threshold {v['threshold']:.3f}, logit).",
            ]
    return lines
