"""De-identify a DICOM folder before it leaves the hospital (PS3.15 Annex E, keyed pseudonyms): the stage entry.

Why our own engine over a shipped table: the attribute table comes from `dicom-anonymizer` (the whole
Table E.1-1 of one edition, see profile.py), but no maintained library gave all of: UIDs and patient
IDs derived from a user key (same result in every file and every run, so GSPS/SR references keep
resolving), one date shift per patient derived from that pseudonym, the option columns, and cleaning
of SR content / GSPS text instead of dropping them (which would lose the measurements we mine).

Two passes over the folder: the first (plan.py) reads headers only (who is in the export, which
identifying values to scrub from free text, which files carry burned-in text), the second (write.py)
writes the de-identified files as <output>/<pseudonym>/<study uid>/<series uid>/<sop uid>.dcm.
Nothing in the output names an input path. Where the rest lives: options.py (defaults), keying.py,
scrub.py (free text), actions.py + elements.py (per element), pixels.py (burned-in), report.py, linkage.py.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from bundle.deid.keying import Keyed, load_key
from bundle.deid.linkage import write_linkage
from bundle.deid.options import DeidOptions
from bundle.deid.plan import plan_folder
from bundle.deid.profile import AnnexETable
from bundle.deid.report import build_report
from bundle.deid.scrub import Scrubber
from bundle.deid.write import write_all
from bundle.io.errors import InputError

logger = logging.getLogger(__name__)


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _check_paths(input_dir: Path, output_dir: Path, linkage_file: str | os.PathLike | None) -> None:
    """Refuse layouts that would mix identified and de-identified data, or put the linkage table beside the data."""
    if not input_dir.exists():
        raise InputError(f"{input_dir}: no such input folder (--input_dir)")
    if not input_dir.is_dir():
        raise InputError(f"{input_dir}: is a file, not a folder (--input_dir takes the export folder)")
    if _inside(output_dir, input_dir) or _inside(input_dir, output_dir):
        raise InputError(
            f"{output_dir}: output_dir must not be inside input_dir {input_dir} (or contain it): identified and "
            "de-identified files would mix"
        )
    if linkage_file is not None and _inside(Path(linkage_file), output_dir):
        raise InputError(f"{linkage_file}: linkage_file is inside output_dir; the linkage table must never sit beside the data")


def _check_key_file(key_file: str | os.PathLike | None) -> None:
    """The key file named on the command line: given, a file, long enough (keying.load_key reads it)."""
    if key_file is None or str(key_file) in ("", "None"):
        raise InputError("key_file: required; give --key_file FILE holding >= 16 bytes of secret (openssl rand -hex 32 > deid.key)")
    path = Path(key_file)
    if not path.is_file():
        raise InputError(f"{key_file}: no such key file (--key_file)" if not path.exists() else f"{key_file}: is not a file (--key_file)")
    size = len(path.read_bytes().rstrip(b"\r\n"))
    if size < 16:
        raise InputError(f"{key_file}: the key is {size} bytes; at least 16 are required (openssl rand -hex 32 > deid.key)")


def deidentify_folder(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    key: bytes | str | os.PathLike,
    options: DeidOptions | dict[str, Any] | None = None,
    linkage_file: str | os.PathLike | None = None,
    report_file: str | os.PathLike | None = None,
    workers: int = 2,
) -> dict[str, Any]:
    """De-identify every DICOM file under input_dir into output_dir; returns (and writes) the report.

    `options`: a DeidOptions, or a mapping of the keys that differ from its defaults.
    The report (default <output_dir>/deid_report.json) names files only by content hash and
    de-identified UIDs. The optional linkage table (pseudonym <-> original patient, date shift, and the
    input -> output file map) is re-identifying and must be written outside output_dir.
    """
    start = time.time()
    opts = DeidOptions.of(options)
    keyed = Keyed(load_key(key))
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    _check_paths(input_dir, output_dir, linkage_file)
    table = AnnexETable(opts.table_edition)

    plan = plan_folder(input_dir, keyed, opts)
    results, counts = write_all(plan.to_write, table, keyed, opts, Scrubber(plan.tokens), output_dir, workers)
    written = blanked = 0
    for planned, (ok, value) in zip(plan.to_write, results):
        rel = planned.path.relative_to(input_dir).as_posix()
        if not ok:
            plan.errors.append(value)
            plan.file_map.append((rel, f"error:{value['reason']}:{value['error']}"))
            logger.warning(
                "de-identification failed for input sha256 %s: %s %s", value["input_sha256"][:12], value["reason"], value.get("detail", "")
            )
            continue
        blanked += planned.rule is not None
        planned.patient.files += 1
        written += 1
        plan.file_map.append((rel, value))

    report = build_report(
        files_seen=len(plan.files),
        written=written,
        blanked=blanked,
        patients=len(plan.patients),
        excluded=plan.excluded,
        errors=plan.errors,
        counts=counts,
        opts=opts,
        table_rules=len(table),
        elapsed_s=round(time.time() - start, 2),
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    report_path = Path(report_file) if report_file is not None else output_dir / "deid_report.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = report_path.with_name(f".{report_path.name}.partial")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, report_path)  # a reader never sees half a report
    if linkage_file is not None:
        write_linkage(Path(linkage_file), plan.patients.values(), plan.file_map)
    logger.info("de-identification: %s", report["summary"])
    return report


def run(
    input_dir: str,
    output_dir: str,
    key_file: str,
    linkage_file: str | None = None,
    report_file: str | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Entry point for configs/deidentify.yaml (`options`: keys of DeidOptions to override); prints the short summary.

    The paths are checked first, so a wrong one ends in one ``error:`` line (docs/bad_inputs.md).
    """
    _check_key_file(key_file)
    _check_paths(Path(input_dir), Path(output_dir), linkage_file)
    if not any(p.is_file() for p in Path(input_dir).rglob("*")):
        raise InputError(f"{input_dir}: is empty; nothing to de-identify (--input_dir)")
    report = deidentify_folder(input_dir, output_dir, key_file, options, linkage_file, report_file)
    print(report["summary"])
    return report
