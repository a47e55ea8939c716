"""The whole-volume targets (issue 24) and how far a result is from each: one table for the demo page and docs/results.md.

Why one module: both pages must say by how much a target is missed, with the same targets and the same arithmetic,
and a target that the test set cannot measure (no normal volume, no 10-20 mm lesion) is said to be unmeasured, not met.
"""

from __future__ import annotations

# (figure, lower bound (True) or upper bound (False), target, what the page calls it)
TARGETS: tuple[tuple[str, bool, float, str], ...] = (
    ("sensitivity_ge10", True, 0.95, "sensitivity, lesions >= 10 mm"),
    ("sensitivity_10_20", True, 0.90, "sensitivity, lesions 10-20 mm"),
    ("fp_per_volume", False, 0.5, "false boxes per volume"),
    ("fp_per_normal_volume", False, 0.25, "false boxes per normal volume"),
)
PROTOCOL_TOLERANCE = 0.03  # every protocol variant within this of the stored grid's sensitivity >= 10 mm


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def figures_of(at_operating_point: dict) -> dict:
    """The four target figures from one evaluation's ``at_operating_point`` (or a protocol variant's)."""
    small = (at_operating_point.get("by_size") or {}).get("10-20 mm") or {}
    return {
        "sensitivity_ge10": at_operating_point.get("sensitivity >=10 mm"),
        "sensitivity_10_20": _ratio(small.get("found"), small.get("lesions")),
        "fp_per_volume": at_operating_point.get("fp_per_volume"),
        "fp_per_normal_volume": at_operating_point.get("fp_per_normal_volume"),
    }


def _verdict(value: float | None, lower: bool, target: float) -> tuple[str, bool | None]:
    if value is None:
        return "not measured (none in this test set)", None
    gap = value - target if lower else target - value  # >= 0: met
    if gap >= 0:
        return "met", True
    return f"{'short' if lower else 'over'} by {-gap:.3f}", False


def check(figures: dict, protocols: dict[str, dict] | None = None) -> list[dict]:
    """One row per target, then one per protocol variant (its sensitivity against the stored grid's, and its false boxes)."""
    rows = []
    for key, lower, target, what in TARGETS:
        text, met = _verdict(figures.get(key), lower, target)
        rows.append({"what": what, "target": f"{'>=' if lower else '<='} {target}", "value": figures.get(key), "verdict": text, "met": met})
    base = figures.get("sensitivity_ge10")
    for name, f in (protocols or {}).items():
        sens, parts = f.get("sensitivity_ge10"), []
        if sens is None or base is None:
            parts.append("sensitivity not measured")
        elif abs(sens - base) > PROTOCOL_TOLERANCE:
            parts.append(f"sensitivity {sens - base:+.3f} from the stored grid")
        for key, lower, target, what in TARGETS[2:]:
            text, met = _verdict(f.get(key), lower, target)
            if met is False:
                parts.append(f"{what} {text}")
        rows.append(
            {
                "what": f"protocol variant `{name}`",
                "target": f"within {PROTOCOL_TOLERANCE} of {'-' if base is None else f'{base:.3f}'}, same false-box limits",
                "value": sens,
                "verdict": "; ".join(parts) or "met",
                "met": not parts if sens is not None else None,
            }
        )
    return rows


def section(title: str, figures: dict, protocols: dict[str, dict] | None = None) -> list[str]:
    """The markdown table: each target, the figure, and 'met' or by how much it is missed."""
    rows = check(figures, protocols)
    met, missed = (sum(r["met"] is m for r in rows) for m in (True, False))
    unmeasured = len(rows) - met - missed
    lines = [
        "",
        f"**{title}**: {met} of {len(rows)} targets met, {missed} missed"
        + (f", {unmeasured} not measured" if unmeasured else "")
        + " (issue 24's targets; strict rule; each model at its own validation operating point).",
        "",
        "| target | goal | figure | verdict |",
        "| --- | --- | --- | --- |",
    ]
    for r in rows:
        v = "-" if r["value"] is None else f"{r['value']:.3f}"
        lines.append(f"| {r['what']} | {r['target']} | {v} | {r['verdict']} |")
    return lines
