"""Pass 2: write each planned file de-identified, as <output>/<pseudonym>/<study>/<series>/<sop>.dcm.

Files are independent once pass 1 has fixed the patients and the scrub tokens, so they are written in
forked worker processes; results come back in plan order so the report and linkage table do not depend
on the number of workers.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections import Counter
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes

from bundle.deid.elements import ElementEngine
from bundle.deid.keying import Keyed
from bundle.deid.options import DeidOptions
from bundle.deid.pixels import blank_regions, check_pixels
from bundle.deid.plan import PlannedFile
from bundle.deid.profile import AnnexETable
from bundle.deid.report import file_sha256
from bundle.deid.scrub import Scrubber
from bundle.io.dicom import UnreadableError, read_dataset

# (True, output path relative to output_dir) or (False, the error record)
Result = tuple[bool, Any]


def method_codes(opts: DeidOptions, blanked: bool) -> list[Dataset]:
    """De-identification Method Code Sequence items: the Basic Profile and one code per option used."""
    chosen = [codes.DCM.BasicApplicationConfidentialityProfile]
    if opts.retain_longitudinal_modified_dates:
        chosen.append(codes.DCM.RetainLongitudinalTemporalInformationModifiedDatesOption)
    if opts.retain_patient_characteristics:
        chosen.append(codes.DCM.RetainPatientCharacteristicsOption)
    if opts.clean_descriptors:
        chosen.append(codes.DCM.CleanDescriptorsOption)
    if opts.clean_structured_content:
        chosen.append(codes.DCM.CleanStructuredContentOption)
    if opts.clean_graphics:
        chosen.append(codes.DCM.CleanGraphicsOption)
    if opts.safe_private:
        chosen.append(codes.DCM.RetainSafePrivateOption)
    if blanked:
        chosen.append(codes.DCM.CleanPixelDataOption)
    out = []
    for code in chosen:
        item = Dataset()
        item.CodeValue = code.value
        item.CodingSchemeDesignator = code.scheme_designator
        item.CodeMeaning = code.meaning
        out.append(item)
    return out


def write_one(engine: ElementEngine, planned: PlannedFile, opts: DeidOptions, output_dir: Path) -> Result:
    """De-identify and write one file; a failure is returned as an error record, never raised."""
    path, patient, rule = planned.path, planned.patient, planned.rule
    try:
        ds = read_dataset(path)  # the same checks as pass 1 and mining: truncation, headerless files, invalid values
        check_pixels(ds)
        if rule is not None:
            blank_regions(ds, rule["regions"])
        engine.patient = patient
        engine.process(ds)
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = f"PS3.15 Annex E ({opts.table_edition}), keyed HMAC"
        ds.DeidentificationMethodCodeSequence = Sequence(method_codes(opts, rule is not None))
        if opts.retain_longitudinal_modified_dates:
            ds.LongitudinalTemporalInformationModified = "MODIFIED"
        old_meta = ds.file_meta
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = old_meta.TransferSyntaxUID
        ds.file_meta = meta
        out = output_dir / patient.pseudonym / str(ds.StudyInstanceUID) / str(ds.SeriesInstanceUID) / f"{ds.SOPInstanceUID}.dcm"
        save_atomic(ds, out)
    except UnreadableError as exc:  # pixels that cannot be decoded (damaged stream, no decoder): reported, not copied on
        return False, {"input_sha256": file_sha256(path), "reason": exc.reason, "error": type(exc).__name__, "detail": exc.detail}
    except Exception as exc:  # noqa: BLE001 - one file never stops the export; an internal failure, reported with its one line
        detail = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        return False, {"input_sha256": file_sha256(path), "reason": "deidentify_failed", "error": type(exc).__name__, "detail": detail}
    return True, out.relative_to(output_dir).as_posix()


PARTIAL = ".partial"  # suffix of a file being written; only a complete file ever carries its final name


def save_atomic(ds: Dataset, out: Path) -> None:
    """Write beside the target, then rename: a run killed mid-write leaves no half file under a final name."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}{PARTIAL}")
    try:
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def remove_partials(output_dir: Path) -> int:
    """Files a killed run left half-written; a rerun removes them, then rewrites every file (same keyed names)."""
    stale = sorted(output_dir.rglob(f".*{PARTIAL}")) if output_dir.is_dir() else []
    for p in stale:
        p.unlink()
    return len(stale)


_FORKED: dict[str, Any] = {}  # what pool workers inherit by fork instead of by pickling


def _write_chunk(indices: list[int]) -> tuple[list[tuple[int, Result]], Counter]:
    f = _FORKED
    engine = ElementEngine(f["table"], f["keyed"], f["opts"], f["scrub"])
    out = [(i, write_one(engine, f["plan"][i], f["opts"], f["output_dir"])) for i in indices]
    return out, engine.counts


def write_all(
    plan: list[PlannedFile], table: AnnexETable, keyed: Keyed, opts: DeidOptions, scrub: Scrubber, output_dir: Path, workers: int
) -> tuple[list[Result], Counter]:
    """Pass 2 over the plan, in `workers` forked processes; results in plan order and the summed attribute counts.

    Rerun after an interruption: every planned file is rewritten (keyed names and values are the same), so
    the output and the report equal an uninterrupted run's; half-written files of the killed run are removed.
    """
    remove_partials(output_dir)
    _FORKED.update(plan=plan, table=table, keyed=keyed, opts=opts, scrub=scrub, output_dir=output_dir)
    try:
        chunks = [list(range(k, len(plan), workers)) for k in range(max(1, workers))]
        if workers > 1 and len(plan) > 1:
            with mp.get_context("fork").Pool(workers) as pool:
                parts = pool.map(_write_chunk, chunks)
        else:
            parts = [_write_chunk(list(range(len(plan))))]
    finally:
        _FORKED.clear()
    results: list[Result] = [(False, None)] * len(plan)
    counts: Counter = Counter()
    for part, c in parts:
        counts.update(c)
        for i, r in part:
            results[i] = r
    return results, counts
