"""Mining report: JSON for machines, a short Markdown summary for people (the seed study's numbers)."""

from __future__ import annotations

import json
from pathlib import Path


def summary_markdown(report: dict) -> str:
    c = report["counts"]
    lines = [
        "# Mining report",
        "",
        f"- files seen: {c['files_seen']}",
        f"- objects read: {c['objects_read']} ({', '.join(f'{k} {v}' for k, v in c['objects_by_type'].items())})",
        f"- unreadable or unsupported files: {c['unreadable_or_unsupported_files']}",
        f"- measurements found: {c['measurements_found']}",
        f"- boxes kept: {c['boxes_kept']} on {c['images_in_datalist']} images of {c['patients_in_datalist']} patients",
        f"- split (images): {c['split_items']}; (boxes): {c['split_boxes']}",
        "",
        "| exclusion reason | count | meaning |",
        "| --- | ---: | --- |",
    ]
    for k, v in report["exclusions"].items():
        lines.append(f"| {k} | {v} | {report['reasons'].get(k, '')} |")
    lines += ["", "| reader | found | kept | excluded |", "| --- | ---: | ---: | --- |"]
    for k, v in report["per_source"].items():
        lines.append(
            f"| {k} | {v['measurements_found']} | {v['boxes_kept']} | {', '.join(f'{r} {n}' for r, n in v['exclusions'].items()) or '-'} |"
        )
    return "\n".join(lines) + "\n"


def write_report(report: dict, stem: str | Path) -> tuple[Path, Path]:
    stem = Path(stem)
    js, md = stem.with_suffix(".json"), stem.with_suffix(".md")
    js.write_text(json.dumps(report, indent=1))
    md.write_text(summary_markdown(report))
    return js, md
