"""Pass 1 over the export, headers only: who is in it, what to scrub from free text, what not to write.

Why a separate pass: the scrub tokens and the patients must be known for the whole export before any
file is written, so that every file is cleaned with every identifying value and the pass-2 files are
independent of each other (and can be written in parallel).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from bundle.deid.keying import Keyed
from bundle.deid.options import DeidOptions
from bundle.deid.patients import Patient, patient_of
from bundle.deid.pixels import blank_rule, burned_in_reason
from bundle.deid.report import file_sha256
from bundle.deid.scrub import collect_identity_tokens
from bundle.io.copies import choose, describe
from bundle.io.dicom import UnreadableError, read_dataset


@dataclass
class PlannedFile:
    """A file pass 2 writes: its patient and, for a burned-in image to blank, the matching blank rule."""

    path: Path
    patient: Patient
    rule: dict[str, Any] | None
    sop_instance_uid: str = ""  # the original one: copies of one instance would be written to one output name


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


def _read_header(path: Path) -> Dataset:
    """The header of one file to de-identify, or UnreadableError with the reason (bundle/io/dicom.py reads it, as mining does).

    The whole file is walked, so a truncated one is `corrupt` here, before anything is written.
    """
    if path.name.upper() == "DICOMDIR":
        raise UnreadableError("dicomdir", "named DICOMDIR")
    return read_dataset(path, stop_before_pixels=True)


def plan_folder(input_dir: Path, keyed: Keyed, opts: DeidOptions) -> Plan:
    """Read every file's header under input_dir (sorted) into the Plan; a broken file is recorded, never fatal."""
    plan = Plan(files=sorted(p for p in input_dir.rglob("*") if p.is_file()), tokens={t for t in opts.extra_phi_terms if t})
    for path in plan.files:
        rel = path.relative_to(input_dir).as_posix()
        try:
            ds = _read_header(path)
        except UnreadableError as exc:
            plan.errors.append({"input_sha256": file_sha256(path), "reason": exc.reason, "detail": exc.detail})
            plan.file_map.append((rel, f"error:{exc.reason}"))
            continue
        except Exception as exc:  # noqa: BLE001 - a reader failure on one file never stops the export; counted as internal
            detail = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            plan.errors.append({"input_sha256": file_sha256(path), "reason": "deidentify_failed", "detail": detail})
            plan.file_map.append((rel, "error:deidentify_failed"))
            continue
        plan.tokens |= collect_identity_tokens(ds)
        patient = patient_of(ds, plan.patients, keyed, opts)
        _plan_one(plan, path, rel, ds, patient, keyed, opts)
    _drop_duplicates(plan, input_dir, keyed)
    return plan


def _drop_duplicates(plan: Plan, input_dir: Path, keyed: Keyed) -> None:
    """Copies of one SOP Instance UID: one is written, the others are excluded naming the kept copy and why.

    Why: every copy would be written to the same keyed name, the last silently replacing the others. The
    choice (bundle/io/copies.py, the same as mining's): the first lossless readable copy; a copy that cannot
    be read whole stays planned and fails in pass 2 with its own reason. Only duplicated UIDs are decoded here.
    """
    groups: dict[str, list[int]] = {}
    for i, planned in enumerate(plan.to_write):
        groups.setdefault(planned.sop_instance_uid, []).append(i)
    dropped: set[int] = set()
    for uid, idx in groups.items():
        if len(idx) < 2:
            continue
        hashes = [file_sha256(plan.to_write[i].path) for i in idx]
        with ThreadPoolExecutor(2) as pool:  # decoders release the GIL
            copies = list(
                pool.map(lambda ih: describe(plan.to_write[ih[0]].path.read_bytes(), f"input sha256 {ih[1][:12]}"), zip(idx, hashes))
            )
        kept, others = choose(copies)
        for j, reason, detail in others:
            planned = plan.to_write[idx[j]]
            plan.excluded.append(
                {
                    "input_sha256": hashes[j],
                    "reason": reason,
                    "detail": detail,
                    "kept_input_sha256": hashes[kept],
                    "pseudonym": planned.patient.pseudonym,
                    "sop_instance_uid": keyed.uid(uid),
                }
            )
            kept_rel = plan.to_write[idx[kept]].path.relative_to(input_dir).as_posix()
            plan.file_map.append((planned.path.relative_to(input_dir).as_posix(), f"excluded:{reason}:kept {kept_rel}"))
            dropped.add(idx[j])
    plan.to_write = [p for i, p in enumerate(plan.to_write) if i not in dropped]


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
    plan.to_write.append(PlannedFile(path, patient, rule, str(ds.SOPInstanceUID)))
