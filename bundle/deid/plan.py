"""Pass 1 over the export, headers only: who is in it, what to scrub from free text, what not to write.

Why a separate pass: the scrub tokens and the patients must be known for the whole export before any
file is written, so that every file is cleaned with every identifying value and the pass-2 files are
independent of each other (and can be written in parallel).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from bundle.deid.keying import Keyed
from bundle.deid.options import DeidOptions
from bundle.deid.patients import Patient, patient_of
from bundle.deid.pixels import blank_rule, burned_in_reason
from bundle.deid.report import file_sha256
from bundle.deid.scrub import collect_identity_tokens
from bundle.io.dicom import DICOMDIR_CLASS


@dataclass
class PlannedFile:
    """A file pass 2 writes: its patient and, for a burned-in image to blank, the matching blank rule."""

    path: Path
    patient: Patient
    rule: dict[str, Any] | None


@dataclass
class Plan:
    """What pass 1 found. `file_map` is (input path relative to input_dir, status) for the linkage table."""

    files: list[Path]
    to_write: list[PlannedFile] = field(default_factory=list)
    patients: dict[tuple[str, str], Patient] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    excluded: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    file_map: list[tuple[str, str]] = field(default_factory=list)


class _Skip(Exception):
    """A file that is deliberately not processed (reason in the message)."""


def _read_header(path: Path) -> Dataset:
    """The header of one file to de-identify; _Skip or the reader's error when it is not one."""
    if path.name.upper() == "DICOMDIR":
        raise _Skip("dicomdir")
    if path.stat().st_size == 0:
        raise _Skip("empty_file")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    if str(ds.file_meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_CLASS or "DirectoryRecordSequence" in ds:
        raise _Skip("dicomdir")  # a DICOMDIR under another name
    if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
        raise _Skip("missing_sop_uids")
    return ds


def plan_folder(input_dir: Path, keyed: Keyed, opts: DeidOptions) -> Plan:
    """Read every file's header under input_dir (sorted) into the Plan; a broken file is recorded, never fatal."""
    plan = Plan(files=sorted(p for p in input_dir.rglob("*") if p.is_file()), tokens={t for t in opts.extra_phi_terms if t})
    for path in plan.files:
        rel = path.relative_to(input_dir).as_posix()
        try:
            ds = _read_header(path)
        except _Skip as skip:
            plan.errors.append({"input_sha256": file_sha256(path), "reason": str(skip)})
            plan.file_map.append((rel, f"error:{skip}"))
            continue
        except InvalidDicomError:
            plan.errors.append({"input_sha256": file_sha256(path), "reason": "not_dicom"})
            plan.file_map.append((rel, "error:not_dicom"))
            continue
        except Exception as exc:  # one broken file never stops the export
            plan.errors.append({"input_sha256": file_sha256(path), "reason": "unreadable", "error": type(exc).__name__})
            plan.file_map.append((rel, f"error:unreadable:{type(exc).__name__}"))
            continue
        plan.tokens |= collect_identity_tokens(ds)
        patient = patient_of(ds, plan.patients, keyed, opts)
        _plan_one(plan, path, rel, ds, patient, keyed, opts)
    return plan


def _plan_one(plan: Plan, path: Path, rel: str, ds: Dataset, patient: Patient, keyed: Keyed, opts: DeidOptions) -> None:
    """Add one readable file: to write (blanked if a rule matches) or, if it may carry burned-in text, excluded."""
    reason = burned_in_reason(ds, opts)
    rule = None
    if reason is not None:
        blank = opts.burned_in == "blank" and reason != "encapsulated_document"  # a document has no regions to blank
        rule = blank_rule(ds, opts) if blank else None
        if rule is None:
            suffix = "_no_blank_region" if blank else ""
            plan.excluded.append(
                {
                    "input_sha256": file_sha256(path),
                    "reason": reason + suffix,
                    "pseudonym": patient.pseudonym,
                    "sop_instance_uid": keyed.uid(str(ds.SOPInstanceUID)),
                    "modality": str(ds.get("Modality", "")),
                }
            )
            plan.file_map.append((rel, f"excluded:{reason}{suffix}"))
            return
    plan.to_write.append(PlannedFile(path, patient, rule))
