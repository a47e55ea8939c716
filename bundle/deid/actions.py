"""Which action applies to one element: the Annex E table's code, adjusted by the option columns.

Kept apart from the engine that carries actions out (elements.py) so the policy can be read in one place:
`choose` says what happens to an element, `resolve` turns the table's combined codes into one action.
Actions: X remove, Z empty, D dummy, U keyed UID, K keep, C clean, SHIFT keyed date shift.
"""

from __future__ import annotations

from pydicom.dataelem import DataElement

from bundle.deid.options import DeidOptions
from bundle.deid.profile import (
    PATIENT_CHARACTERISTICS_CLEAN,
    PATIENT_CHARACTERISTICS_KEEP,
    TEXT_VRS,
    TYPE1_REPLACE_INSTEAD_OF_REMOVE,
    is_descriptor,
)

# Attributes inside code sequences: coded terms, never PHI, and pattern scrubbing could corrupt them.
CODE_KEYWORDS = frozenset(
    {"CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning", "LongCodeValue", "URNCodeValue", "ContextIdentifier"}
)
NEVER_SHIFT = frozenset({"PatientBirthDate", "PatientBirthTime", "PatientBirthDateInAlternativeCalendar"})


def choose(elem: DataElement, table_action: str | None, opts: DeidOptions) -> str | None:
    """The action for one (non-private) element; table_action is its Table E.1-1 code or None."""
    kw, vr, tag = elem.keyword, elem.VR, elem.tag
    action = table_action
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
    if vr in ("DA", "DT", "TM") and kw not in NEVER_SHIFT and action != "U":
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
    if vr in TEXT_VRS and kw not in CODE_KEYWORDS:
        return "C"
    return "K"


def resolve(action: str, vr: str) -> str:
    """A combined table code as the single action that keeps the IOD valid (docs/deidentification.md, Actions)."""
    if action == "X/Z/U*":
        return "C" if vr == "SQ" else ("U" if vr == "UI" else "Z")
    if action in ("X/D", "Z/D"):
        return "D"
    if action == "X/Z/D":
        return "Z" if vr == "SQ" else "D"
    if action == "X/Z":
        return "Z"
    return action
