"""De-identify a DICOM folder before it leaves the hospital (PS3.15 Annex E, keyed pseudonyms).

Why our own engine over a shipped table: the attribute table comes from `dicom-anonymizer` (the whole
Table E.1-1 of one edition, see deid_profile.py), but no maintained library gave all of: UIDs and patient
IDs derived from a user key (same result in every file and every run, so GSPS/SR references keep
resolving), one date shift per patient derived from that pseudonym, the option columns, and cleaning
of SR content / GSPS text instead of dropping them (which would lose the measurements we mine).

Two passes over the folder: the first reads headers only (who is in the export, which identifying values
to scrub from free text, which files carry burned-in text), the second writes the de-identified files as
<output>/<pseudonym>/<study uid>/<series uid>/<sop uid>.dcm. Nothing in the output names an input path.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import UID_dictionary

from bundle.deid.profile import (
    IDENTITY_KEYWORDS,
    PATIENT_CHARACTERISTICS_CLEAN,
    PATIENT_CHARACTERISTICS_KEEP,
    TABLE_EDITION,
    TEXT_VRS,
    TYPE1_REPLACE_INSTEAD_OF_REMOVE,
    AnnexETable,
    is_descriptor,
)

logger = logging.getLogger(__name__)

SECONDARY_CAPTURE_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
    }
)
ULTRASOUND_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.6.2", "1.2.840.10008.5.1.4.1.1.3.1"})
# Attributes inside code sequences: coded terms, never PHI, and pattern scrubbing could corrupt them.
_CODE_KEYWORDS = frozenset(
    {"CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning", "LongCodeValue", "URNCodeValue", "ContextIdentifier"}
)
_UID_KEEP_KEYWORDS = frozenset({"TransferSyntaxUID", "CodingSchemeUID", "ContextUID", "MappingResourceUID", "PrivateInformationCreatorUID"})
_NEVER_SHIFT = frozenset({"PatientBirthDate", "PatientBirthTime", "PatientBirthDateInAlternativeCalendar"})
_PATTERNS = [
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+"),  # e-mail
    re.compile(r"\b\d+(?:\.\d+){3,}\b"),  # UID-like dotted numbers
    re.compile(r"\b\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\b"),  # 2024-01-02
    re.compile(r"\b\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}\b"),  # 02/01/2024
    re.compile(r"\b(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\b"),  # 20240102
    re.compile(r"\+?\(?\d[\d\s().-]{5,}\d"),  # phone-like runs of 7+ characters of digits
]


@dataclass
class DeidOptions:
    """Profile options (PS3.15 Table E.1-1 columns) and the stage's own policies."""

    retain_longitudinal_modified_dates: bool = True
    date_shift_days: tuple[int, int] = (365, 3650)  # each patient's dates move back by a keyed amount in this range
    retain_patient_characteristics: bool = True
    clean_descriptors: bool = True
    clean_structured_content: bool = True
    clean_graphics: bool = True
    safe_private: list[str] = field(default_factory=list)  # "CREATOR:gggg:ee" (hex group, element offset in block)
    keep_overlays: bool = False  # Overlay Data is X in the Basic Profile; a bitmap may carry burned-in text
    burned_in: str = "exclude"  # or "blank": blank configured regions and keep the image
    burned_in_modalities: list[str] = field(default_factory=lambda: ["US", "SC"])
    blank_regions: list[dict[str, Any]] = field(
        default_factory=list
    )  # [{"modality"|"sop_class_uid"|"rows"|"columns": ..., "regions": [[x0,y0,x1,y1]]}]
    extra_phi_terms: list[str] = field(default_factory=list)  # site-specific strings to scrub from kept free text
    table_edition: str = TABLE_EDITION

    def __post_init__(self) -> None:
        if self.burned_in not in ("exclude", "blank"):
            raise ValueError(f"options.burned_in: expected 'exclude' or 'blank', got {self.burned_in!r}")
        lo, hi = self.date_shift_days
        if not 0 <= lo <= hi:
            raise ValueError(f"options.date_shift_days: expected 0 <= min <= max, got {self.date_shift_days!r}")


def load_key(key: bytes | str | os.PathLike) -> bytes:
    """The HMAC key: raw bytes, or a key file's content (trailing newline stripped). Too short keys are refused."""
    if isinstance(key, bytes):
        data = key
    else:
        path = Path(key)
        if not path.is_file():
            raise FileNotFoundError(f"key_file: {path} does not exist")
        data = path.read_bytes().rstrip(b"\r\n")
    if len(data) < 16:
        raise ValueError("key: at least 16 bytes are required (generate one with `openssl rand -hex 32 > key.txt`)")
    return data


class Keyed:
    """Everything derived from the key: same input, same key -> same output, in every file and run."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def digest(self, purpose: str, value: str) -> bytes:
        return hmac.new(self._key, f"{purpose}|{value}".encode(), hashlib.sha256).digest()

    def uid(self, uid: str) -> str:
        return "2.25." + str(int.from_bytes(self.digest("uid", uid)[:16], "big"))

    def pseudonym(self, issuer: str, patient_id: str) -> str:
        return "ANON" + base64.b32encode(self.digest("patient", f"{issuer}|{patient_id}")[:10]).decode()[:12]

    def person(self, name: str) -> str:
        return "Person^" + self.digest("person", name.upper()).hex()[:10].upper()

    def shift_days(self, pseudonym: str, lo: int, hi: int) -> int:
        return lo + int.from_bytes(self.digest("dateshift", pseudonym)[:8], "big") % (hi - lo + 1)


@dataclass
class _Patient:
    pseudonym: str
    shift: int
    patient_id: str
    issuer: str
    name: str
    files: int = 0


def _texts(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple | pydicom.multival.MultiValue):
        return [str(v) for v in value if v is not None and str(v)]
    return [str(value)] if str(value) else []


def _tokens_of(value: str, is_name: bool) -> set[str]:
    """A value and its words: names may appear as 'Given Family' in text, addresses in parts."""
    out = {value.strip()} if len(value.strip()) >= 3 else set()
    for word in re.split(r"[\^=\s,;/]+", value):
        word = word.strip(".()")
        if (is_name and len(word) >= 2 and not word.isdigit()) or len(word) >= 4:
            out.add(word)
    return out


def _date_variants(value: str) -> set[str]:
    if len(value) >= 8 and value[:8].isdigit():
        y, m, d = value[:4], value[4:6], value[6:8]
        return {value[:8], f"{y}-{m}-{d}", f"{d}/{m}/{y}", f"{m}/{d}/{y}", f"{d}.{m}.{y}"}
    return set()


class Scrubber:
    """Removes identifying values (collected from the whole export) and PHI-shaped patterns from free text."""

    def __init__(self, tokens: set[str]) -> None:
        ordered = sorted((t for t in tokens if t), key=len, reverse=True)
        self._regex = re.compile("|".join(re.escape(t) for t in ordered), re.IGNORECASE) if ordered else None

    def __call__(self, text: str) -> str:
        if self._regex is not None:
            text = self._regex.sub("*", text)
        for pattern in _PATTERNS:
            text = pattern.sub("*", text)
        return text


def collect_identity_tokens(ds: Dataset) -> set[str]:
    """Identifying values of one dataset (all PN values, IDs, addresses, institutions, birth dates)."""
    tokens: set[str] = set()
    for elem in ds.iterall():
        if elem.tag.is_private:
            continue
        if elem.VR == "PN":
            for text in _texts(elem.value):
                tokens |= _tokens_of(text, is_name=True)
        elif elem.keyword in IDENTITY_KEYWORDS:
            for text in _texts(elem.value):
                tokens |= _tokens_of(text, is_name=False)
                tokens |= _date_variants(text)
    return tokens


class _Engine:
    """Applies the table and options to one dataset, counting what it changes."""

    def __init__(self, table: AnnexETable, keyed: Keyed, opts: DeidOptions, scrub: Scrubber) -> None:
        self.table = table
        self.keyed = keyed
        self.opts = opts
        self.scrub = scrub
        self.safe = set()
        for spec in opts.safe_private:
            creator, group, offset = spec.rsplit(":", 2)
            self.safe.add((creator.strip(), int(group, 16), int(offset, 16)))
        self.counts: Counter[str] = Counter()
        self.patient: _Patient | None = None

    # -- values -------------------------------------------------------------------------------------
    def _shift_date(self, value: str) -> str:
        assert self.patient is not None
        if len(value) < 8 or not value[:8].isdigit():
            return ""
        try:
            day = dt.date(int(value[:4]), int(value[4:6]), int(value[6:8]))
        except ValueError:
            return ""
        return (day - dt.timedelta(days=self.patient.shift)).strftime("%Y%m%d") + value[8:]

    def _shift(self, elem: DataElement) -> None:
        out = []
        for text in _texts(elem.value):
            parts = text.split("-") if elem.VR == "DA" else [text]
            out.append("-".join(self._shift_date(p) if p else "" for p in parts))
        self._set(elem, out)
        self.counts["dates_shifted"] += 1

    @staticmethod
    def _set(elem: DataElement, values: list[str]) -> None:
        elem.value = values if len(values) > 1 else (values[0] if values else "")

    def _uid_protected(self, kw: str, value: str) -> bool:
        return value in UID_dictionary or kw.endswith("ClassUID") or kw in _UID_KEEP_KEYWORDS

    def _remap(self, elem: DataElement) -> None:
        values = _texts(elem.value)
        new = [v if v in UID_dictionary else self.keyed.uid(v) for v in values]
        if new != values:
            self._set(elem, new)
            self.counts["uids_replaced"] += 1

    def _clean_text(self, elem: DataElement) -> None:
        values = _texts(elem.value)
        new = [self.scrub(v) for v in values]
        if new != values:
            self._set(elem, new)
            self.counts["cleaned"] += 1

    def _dummy(self, ds: Dataset, elem: DataElement) -> None:
        assert self.patient is not None
        vr, kw = elem.VR, elem.keyword
        if vr == "SQ":
            for item in elem.value:
                self.process(item)
            return
        if not _texts(elem.value) and kw not in ("PatientName", "PatientID"):
            return
        if vr == "PN":
            if kw == "PatientName":
                self._set(elem, [self.patient.pseudonym])
            else:
                self._set(elem, [self.keyed.person(str(v)) for v in _texts(elem.value)])
        elif kw == "PatientID":
            elem.value = self.patient.pseudonym
        elif vr in ("DA", "DT"):
            if self.opts.retain_longitudinal_modified_dates and kw not in _NEVER_SHIFT:
                self._shift(elem)
                return
            elem.value = "19000101" if vr == "DA" else "19000101000000"
        elif vr == "TM":
            elem.value = "000000"
        elif vr == "UI":
            self._remap(elem)
            return
        elif vr in TEXT_VRS or vr in ("CS", "AE", "PN", "UR"):
            elem.value = "ANONYMIZED"
        elif vr in ("DS", "IS"):
            elem.value = "0"
        elif vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"):
            elem.value = 0
        else:  # binary: no meaningful dummy
            del ds[elem.tag]
            self.counts["removed"] += 1
            return
        self.counts["replaced"] += 1

    # -- actions ------------------------------------------------------------------------------------
    def _action(self, elem: DataElement) -> str | None:
        kw, vr, tag = elem.keyword, elem.VR, elem.tag
        opts = self.opts
        action = self.table.action(tag)
        if kw in ("PatientName", "PatientID"):
            return "D"  # the keyed pseudonym, so downstream files carry pseudonyms only
        if opts.retain_patient_characteristics and kw in PATIENT_CHARACTERISTICS_KEEP:
            return "K"
        if opts.retain_patient_characteristics and kw in PATIENT_CHARACTERISTICS_CLEAN:
            return "C"
        if kw == "ContentSequence":
            return "C" if opts.clean_structured_content else "Z"
        if kw in ("GraphicAnnotationSequence", "UnformattedTextValue", "TextObjectSequence"):
            return "C" if opts.clean_graphics else action
        if tag.group & 0xFF00 == 0x6000 and tag.element == 0x3000 and opts.keep_overlays:
            return "K"
        if opts.clean_descriptors and action is not None and is_descriptor(kw, vr):
            return "C"
        if action == "X" and kw in TYPE1_REPLACE_INSTEAD_OF_REMOVE:
            action = "D"
        if vr in ("DA", "DT", "TM") and kw not in _NEVER_SHIFT and action != "U":
            if opts.retain_longitudinal_modified_dates and (action is not None or vr != "TM"):
                return "K" if vr == "TM" else "SHIFT"
            if action is None and vr != "TM":
                return "D"
        if action is not None:
            return action
        # not in the table: anything that names a person, links an instance or is free text is still handled
        if vr == "PN":
            return "D"
        if vr == "UI":
            return "U"
        if vr == "SQ":
            return "C"
        if vr in TEXT_VRS and kw not in _CODE_KEYWORDS:
            return "C"
        return "K"

    def _apply(self, ds: Dataset, elem: DataElement, action: str) -> None:
        vr = elem.VR
        if action == "X/Z/U*":
            action = "C" if vr == "SQ" else ("U" if vr == "UI" else "Z")
        elif action in ("X/D", "Z/D"):
            action = "D"
        elif action == "X/Z/D":
            action = "Z" if vr == "SQ" else "D"
        elif action == "X/Z":
            action = "Z"
        if action == "K":
            return
        if action == "X":
            del ds[elem.tag]
            self.counts["removed"] += 1
        elif action == "Z":
            if vr == "SQ":
                if len(elem.value):
                    elem.value = Sequence()
                    self.counts["emptied"] += 1
            elif elem.value not in (None, "", b""):
                elem.value = None if vr not in TEXT_VRS | {"PN", "DA", "TM", "DT", "CS", "AE", "UI"} else ""
                self.counts["emptied"] += 1
        elif action == "D":
            self._dummy(ds, elem)
        elif action == "U":
            if not self._uid_protected(elem.keyword, str(elem.value)) or self.table.action(elem.tag) == "U":
                self._remap(elem)
        elif action == "SHIFT":
            if _texts(elem.value):
                self._shift(elem)
        elif action == "C":
            if vr == "SQ":
                for item in elem.value:
                    self.process(item)
            elif vr == "PN":
                self._dummy(ds, elem)
            elif vr in TEXT_VRS and elem.keyword not in _CODE_KEYWORDS:
                self._clean_text(elem)
        else:
            raise ValueError(f"{elem.keyword or elem.tag}: unknown action {action!r}")

    def _private(self, ds: Dataset) -> None:
        creators = {(t.group, t.element): str(ds[t].value).strip() for t in ds.keys() if t.is_private_creator}
        kept_blocks: set[tuple[int, int]] = set()
        for tag in [t for t in ds.keys() if t.is_private and not t.is_private_creator]:
            block = (tag.group, tag.element >> 8)
            creator = creators.get(block)
            if self.opts.safe_private and creator is not None and (creator, tag.group, tag.element & 0xFF) in self.safe:
                kept_blocks.add(block)
                elem = ds[tag]
                if elem.VR in TEXT_VRS:
                    self._clean_text(elem)
                self.counts["private_kept"] += 1
            else:
                del ds[tag]
                self.counts["private_removed"] += 1
        for (group, element), _ in creators.items():
            if (group, element) not in kept_blocks:
                del ds[(group << 16) | element]
                self.counts["private_removed"] += 1

    def process(self, ds: Dataset) -> None:
        """De-identify one dataset (or sequence item) in place."""
        self._private(ds)
        for tag in list(ds.keys()):
            if tag not in ds or tag.is_private:
                continue
            if tag.element == 0 or tag.group == 0x0002:  # group lengths; file meta is rebuilt by the caller
                del ds[tag]
                continue
            elem = ds[tag]
            action = self._action(elem)
            if action is not None:
                self._apply(ds, elem, action)


def _burned_in_reason(ds: Dataset, opts: DeidOptions) -> str | None:
    if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        return "burned_in_annotation_yes"
    sop = str(ds.get("SOPClassUID", ""))
    if sop in SECONDARY_CAPTURE_CLASSES:
        return "secondary_capture"
    if sop in ULTRASOUND_CLASSES:
        return "ultrasound"
    modality = str(ds.get("Modality", "")).upper()
    if modality in {m.upper() for m in opts.burned_in_modalities}:
        return f"modality_{modality.lower()}"
    return None


def _blank_rule(ds: Dataset, opts: DeidOptions) -> dict[str, Any] | None:
    for rule in opts.blank_regions:
        checks = {
            "modality": str(ds.get("Modality", "")).upper() == str(rule.get("modality", "")).upper(),
            "sop_class_uid": str(ds.get("SOPClassUID", "")) == str(rule.get("sop_class_uid", "")),
            "rows": int(ds.get("Rows", -1)) == int(rule.get("rows", -2)),
            "columns": int(ds.get("Columns", -1)) == int(rule.get("columns", -2)),
        }
        if all(checks[k] for k in checks if k in rule) and rule.get("regions"):
            return rule
    return None


def blank_regions(ds: Dataset, regions: list[list[int]]) -> None:
    """Clean Pixel Data: set each [x0, y0, x1, y1] (max exclusive, all frames) to the image minimum."""
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    arr = ds.pixel_array.copy()
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    view = arr if frames > 1 else arr[None]
    fill = view.min()
    for x0, y0, x1, y1 in regions:
        view[:, int(y0) : int(y1), int(x0) : int(x1)] = fill
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    ds.BurnedInAnnotation = "NO"


def _method_codes(opts: DeidOptions, blanked: bool) -> list[Dataset]:
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


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


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

    The report (default <output_dir>/deid_report.json) names files only by content hash and
    de-identified UIDs. The optional linkage table (pseudonym <-> original patient, date shift, and the
    input -> output file map) is re-identifying and must be written outside output_dir.
    """
    start = time.time()
    opts = options if isinstance(options, DeidOptions) else DeidOptions(**(options or {}))
    opts.date_shift_days = tuple(opts.date_shift_days)  # type: ignore[assignment]
    keyed = Keyed(load_key(key))
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input_dir: {input_dir} is not a folder")
    if _inside(output_dir, input_dir) or _inside(input_dir, output_dir):
        raise ValueError("output_dir: must not be inside input_dir (or contain it)")
    if linkage_file is not None and _inside(Path(linkage_file), output_dir):
        raise ValueError(f"linkage_file: {linkage_file} is inside output_dir; the linkage table must never sit beside the data")
    table = AnnexETable(opts.table_edition)

    files = sorted(p for p in input_dir.rglob("*") if p.is_file())
    excluded: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    patients: dict[tuple[str, str], _Patient] = {}
    tokens: set[str] = {t for t in opts.extra_phi_terms if t}
    plan: list[tuple[Path, _Patient, dict[str, Any] | None]] = []
    file_map: list[tuple[str, str]] = []

    # pass 1: headers only
    for path in files:
        rel = path.relative_to(input_dir).as_posix()
        try:
            if path.name.upper() == "DICOMDIR":
                raise _Skip("dicomdir")
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
                raise _Skip("missing_sop_uids")
        except _Skip as skip:
            errors.append({"input_sha256": _sha256(path), "reason": str(skip)})
            file_map.append((rel, f"error:{skip}"))
            continue
        except InvalidDicomError:
            errors.append({"input_sha256": _sha256(path), "reason": "not_dicom"})
            file_map.append((rel, "error:not_dicom"))
            continue
        except Exception as exc:  # one broken file never stops the export
            errors.append({"input_sha256": _sha256(path), "reason": "unreadable", "error": type(exc).__name__})
            file_map.append((rel, f"error:unreadable:{type(exc).__name__}"))
            continue
        tokens |= collect_identity_tokens(ds)
        pid, issuer = str(ds.get("PatientID", "")), str(ds.get("IssuerOfPatientID", ""))
        if not pid:
            pid = f"{ds.get('PatientName', '')}|{ds.get('PatientBirthDate', '')}"
        if (issuer, pid) not in patients:
            pseudonym = keyed.pseudonym(issuer, pid)
            patients[(issuer, pid)] = _Patient(
                pseudonym, keyed.shift_days(pseudonym, *opts.date_shift_days), pid, issuer, str(ds.get("PatientName", ""))
            )
        patient = patients[(issuer, pid)]
        reason = _burned_in_reason(ds, opts)
        rule = None
        if reason is not None:
            rule = _blank_rule(ds, opts) if opts.burned_in == "blank" else None
            if rule is None:
                suffix = "_no_blank_region" if opts.burned_in == "blank" else ""
                excluded.append(
                    {
                        "input_sha256": _sha256(path),
                        "reason": reason + suffix,
                        "pseudonym": patient.pseudonym,
                        "sop_instance_uid": keyed.uid(str(ds.SOPInstanceUID)),
                        "modality": str(ds.get("Modality", "")),
                    }
                )
                file_map.append((rel, f"excluded:{reason}{suffix}"))
                continue
        plan.append((path, patient, rule))

    # pass 2: write (files are independent once pass 1 has fixed the patients and the scrub tokens)
    scrub = Scrubber(tokens)
    results, counts = _write_all(plan, table, keyed, opts, scrub, input_dir, output_dir, workers)
    written = blanked = 0
    for (path, patient, rule), (ok, value) in zip(plan, results):
        rel = path.relative_to(input_dir).as_posix()
        if not ok:
            errors.append(value)
            file_map.append((rel, f"error:deidentify_failed:{value['error']}"))
            logger.warning("de-identification failed for input sha256 %s: %s", value["input_sha256"][:12], value["error"])
            continue
        blanked += rule is not None
        patient.files += 1
        written += 1
        file_map.append((rel, value))

    by_reason = Counter(e["reason"] for e in excluded)
    err_reason = Counter(e["reason"] for e in errors)
    report: dict[str, Any] = {
        "files_seen": len(files),
        "files_written": written,
        "files_excluded": len(excluded),
        "excluded_by_reason": dict(sorted(by_reason.items())),
        "files_failed": len(errors),
        "failed_by_reason": dict(sorted(err_reason.items())),
        "files_blanked": blanked,
        "patients": len(patients),
        "attributes": dict(sorted(counts.items())),
        "excluded": excluded,
        "errors": errors,
        "table": {"edition": opts.table_edition, "rules": len(table)},
        "options": {k: v for k, v in asdict(opts).items() if k != "extra_phi_terms"},
        "elapsed_s": round(time.time() - start, 2),
    }
    report["summary"] = (
        f"{len(files)} files seen, {written} written, {len(excluded)} excluded "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(by_reason.items())) or 'none'}), {len(errors)} failed "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(err_reason.items())) or 'none'}); attributes: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    report_path = Path(report_file) if report_file is not None else output_dir / "deid_report.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2))
    if linkage_file is not None:
        _write_linkage(Path(linkage_file), patients.values(), file_map)
    logger.info("de-identification: %s", report["summary"])
    return report


def _write_one(engine: _Engine, path: Path, patient: _Patient, rule: dict[str, Any] | None, opts: DeidOptions, output_dir: Path):
    """(True, output path relative to output_dir) or (False, the error record)."""
    try:
        ds = pydicom.dcmread(path)
        if rule is not None:
            blank_regions(ds, rule["regions"])
        engine.patient = patient
        engine.process(ds)
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = f"PS3.15 Annex E ({opts.table_edition}), keyed HMAC"
        ds.DeidentificationMethodCodeSequence = Sequence(_method_codes(opts, rule is not None))
        if opts.retain_longitudinal_modified_dates:
            ds.LongitudinalTemporalInformationModified = "MODIFIED"
        old_meta = ds.file_meta
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = old_meta.TransferSyntaxUID
        ds.file_meta = meta
        out = output_dir / patient.pseudonym / str(ds.StudyInstanceUID) / str(ds.SeriesInstanceUID) / f"{ds.SOPInstanceUID}.dcm"
        out.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(out, enforce_file_format=True)
    except Exception as exc:  # one broken file never stops the export
        return False, {"input_sha256": _sha256(path), "reason": "deidentify_failed", "error": type(exc).__name__}
    return True, out.relative_to(output_dir).as_posix()


_FORKED: dict[str, Any] = {}  # what pool workers inherit by fork instead of by pickling


def _write_chunk(indices: list[int]) -> tuple[list[tuple[int, tuple[bool, Any]]], Counter]:
    f = _FORKED
    engine = _Engine(f["table"], f["keyed"], f["opts"], f["scrub"])
    out = [(i, _write_one(engine, *f["plan"][i], f["opts"], f["output_dir"])) for i in indices]
    return out, engine.counts


def _write_all(plan, table, keyed, opts, scrub, input_dir: Path, output_dir: Path, workers: int) -> tuple[list[tuple[bool, Any]], Counter]:
    """Pass 2 over the plan, in `workers` forked processes; results come back in plan order."""
    _FORKED.update(plan=plan, table=table, keyed=keyed, opts=opts, scrub=scrub, output_dir=output_dir)
    try:
        chunks = [list(range(k, len(plan), workers)) for k in range(max(1, workers))]
        if workers > 1 and len(plan) > 1:
            import multiprocessing as mp

            with mp.get_context("fork").Pool(workers) as pool:
                parts = pool.map(_write_chunk, chunks)
        else:
            parts = [_write_chunk(list(range(len(plan))))]
    finally:
        _FORKED.clear()
    results: list[tuple[bool, Any]] = [(False, None)] * len(plan)
    counts: Counter = Counter()
    for part, c in parts:
        counts.update(c)
        for i, r in part:
            results[i] = r
    return results, counts


class _Skip(Exception):
    """A file that is deliberately not processed (reason in the message)."""


def _write_linkage(path: Path, patients: Any, file_map: list[tuple[str, str]]) -> None:
    """The re-identification key: stays in the hospital, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["pseudonym", "patient_id", "issuer_of_patient_id", "patient_name", "date_shift_days", "files_written"])
        for p in sorted(patients, key=lambda p: p.pseudonym):
            writer.writerow([p.pseudonym, p.patient_id, p.issuer, p.name, -p.shift, p.files])
    os.chmod(path, 0o600)
    files_path = path.with_name(path.stem + "_files.csv")
    with open(files_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["input", "output_or_status"])
        writer.writerows(file_map)
    os.chmod(files_path, 0o600)


def run(
    input_dir: str,
    output_dir: str,
    key_file: str,
    linkage_file: str | None = None,
    report_file: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Entry point for configs/deidentify.yaml; prints the short summary."""
    report = deidentify_folder(input_dir, output_dir, key_file, DeidOptions(**options), linkage_file, report_file)
    print(report["summary"])
    return report
