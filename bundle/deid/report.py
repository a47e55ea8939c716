"""The PHI-free run report (deid_report.json): counts, reasons, options; files named only by content hash."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bundle.deid.options import DeidOptions


def file_sha256(path: Path) -> str:
    """How the report names an input file: its content hash, never its path."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_report(
    *,
    files_seen: int,
    written: int,
    blanked: int,
    patients: int,
    excluded: list[dict[str, Any]],
    errors: list[dict[str, Any]],
    counts: Counter,
    opts: DeidOptions,
    table_rules: int,
    elapsed_s: float,
) -> dict[str, Any]:
    """The report dict, with a one-line `summary` (extra_phi_terms are site strings, so not echoed)."""
    by_reason = Counter(e["reason"] for e in excluded)
    err_reason = Counter(e["reason"] for e in errors)
    report: dict[str, Any] = {
        "files_seen": files_seen,
        "files_written": written,
        "files_excluded": len(excluded),
        "excluded_by_reason": dict(sorted(by_reason.items())),
        "files_failed": len(errors),
        "failed_by_reason": dict(sorted(err_reason.items())),
        "files_blanked": blanked,
        "patients": patients,
        "attributes": dict(sorted(counts.items())),
        "excluded": excluded,
        "errors": errors,
        "table": {"edition": opts.table_edition, "rules": table_rules},
        "options": {k: v for k, v in asdict(opts).items() if k != "extra_phi_terms"},
        "elapsed_s": elapsed_s,
    }
    report["summary"] = (
        f"{files_seen} files seen, {written} written, {len(excluded)} excluded "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(by_reason.items())) or 'none'}), {len(errors)} failed "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(err_reason.items())) or 'none'}); attributes: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    )
    return report
