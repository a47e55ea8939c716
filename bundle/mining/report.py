"""Mining report: JSON for machines, a short Markdown summary for people (the seed study's numbers)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bundle.datalist.schema import DatalistItem
from bundle.io.records import REASONS, FileIssue, Measurement

EXCLUDED_FIELDS = ("source", "sop_instance_uid", "item", "reader", "kind", "referenced_sop_instance_uid", "long_mm", "status", "detail")


def summary_markdown(report: dict) -> str:
    c = report["counts"]
    lines = [
        "# Mining report",
        "",
        f"- files seen: {c['files_seen']}",
        f"- objects read: {c['objects_read']} ({', '.join(f'{k} {v}' for k, v in c['objects_by_type'].items())})",
        f"- unreadable or unsupported files: {c['unreadable_or_unsupported_files']}",
        f"- duplicate copies (SOP Instance UID read before; which copy was kept and why: file_issues): {c.get('duplicate_copies', 0)}",
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


def _counts(
    n_files: int, objects: Counter, n_images: int, issues: list[FileIssue], ms: list[Measurement], datalist: dict[str, list[DatalistItem]]
) -> dict[str, Any]:
    items = [it for v in datalist.values() for it in v]
    return {
        "files_seen": n_files,
        "objects_read": sum(objects.values()),
        "objects_by_type": dict(sorted(objects.items())),
        "images_indexed": n_images,
        "unreadable_or_unsupported_files": sum(not i.reason.startswith("duplicate_") for i in issues),
        "duplicate_copies": sum(i.reason.startswith("duplicate_") for i in issues),
        "measurements_found": len(ms),
        "boxes_kept": sum(m.status == "kept" for m in ms),
        "images_in_datalist": len(items),
        "patients_in_datalist": len({it.patient for it in items}),
        "split_items": {k: len(v) for k, v in datalist.items()},
        "split_sources": dict(sorted(Counter(it.split_source for it in items).items())),
        "split_boxes": {k: sum(len(it.box) for it in v) for k, v in datalist.items()},
    }


def build_report(
    source_kind: str,
    date_range: list[str | None],
    rules: dict[str, Any],
    n_files: int,
    objects: Counter,
    n_images: int,
    issues: list[FileIssue],
    ms: list[Measurement],
    datalist: dict[str, list[DatalistItem]],
) -> dict[str, Any]:
    """Every count the seed study reports, each exclusion by reason, and per reader; no PHI (UIDs are pseudonymous)."""
    report = {
        "source": {"kind": source_kind},
        "date_range": date_range,
        "rules": {k: v if isinstance(v, str) else asdict(v) for k, v in rules.items()},
        "counts": _counts(n_files, objects, n_images, issues, ms, datalist),
        "exclusions": dict(sorted(Counter([i.reason for i in issues] + [m.status for m in ms if m.status != "kept"]).items())),
        "per_source": {},
        "reasons": dict(REASONS),
        "file_issues": [i.to_dict() for i in issues],
        "excluded_measurements": [{k: m.to_dict()[k] for k in EXCLUDED_FIELDS} for m in ms if m.status != "kept"],
    }
    for reader in sorted({m.reader for m in ms}):
        sel = [m for m in ms if m.reader == reader]
        report["per_source"][reader] = {
            "measurements_found": len(sel),
            "boxes_kept": sum(m.status == "kept" for m in sel),
            "exclusions": dict(sorted(Counter(m.status for m in sel if m.status != "kept").items())),
        }
    return report
