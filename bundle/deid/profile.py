"""The DICOM PS3.15 Annex E attribute table and the option columns we apply on top of it.

Why a shipped table: the Basic Application Level Confidentiality Profile is a table of ~650 attributes
(Table E.1-1) that changes with every edition of the standard. `dicom-anonymizer` (PyPI, BSD) ships that
table per edition, generated from the standard, as plain tag lists per action code; we read the lists
and nothing else from it, and apply them with our own keyed (HMAC) engine (`actions.py`, `elements.py`).
The option columns (retain patient characteristics, clean descriptors, ...) are not in that package;
they are expressed here as rules over the same table and documented in docs/deidentification.md.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from pydicom.tag import BaseTag

TABLE_EDITION = "dicomfields_2026c"

# dicom-anonymizer's list names -> the action code as written in Table E.1-1
_CATEGORIES = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}

# Retain Patient Characteristics Option (113108): K (keep) and C (clean) entries of its column.
PATIENT_CHARACTERISTICS_KEEP = frozenset(
    {
        "PatientAge",
        "PatientSex",
        "PatientSexNeutered",
        "PatientSize",
        "PatientWeight",
        "EthnicGroup",
        "PregnancyStatus",
        "SmokingStatus",
    }
)
PATIENT_CHARACTERISTICS_CLEAN = frozenset({"Allergies", "MedicalAlerts", "SpecialNeeds", "PatientState", "AdditionalPatientHistory"})

# Clean Descriptors Option (113105): free-text descriptors are kept but cleaned of identifying text.
# Rule over the table (not a hand-picked list): every text attribute whose name says it is a description
# or a comment, plus the protocol and reason-for-study fields that the C column lists.
_DESCRIPTOR_SUFFIXES = ("Description", "Comments", "Comment")
_DESCRIPTOR_EXTRA = frozenset({"ProtocolName", "ReasonForStudy", "ReasonForTheRequestedProcedure", "ReasonForTheImagingServiceRequest"})
TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})

# Attributes the table removes (X) that the annotation IODs we must keep valid require (Type 1):
# they are replaced (D: shifted or dummy) instead, as PS3.15 E.3 allows for IOD conformance.
TYPE1_REPLACE_INSTEAD_OF_REMOVE = frozenset({"PresentationCreationDate", "PresentationCreationTime"})

# Attributes whose values identify a person or a visit: their values (tokens) are scrubbed out of any
# free text that is kept (descriptors, SR TEXT items, GSPS text). Every PN attribute is added as well.
IDENTITY_KEYWORDS = frozenset(
    {
        "PatientID",
        "OtherPatientIDs",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "PatientBirthName",
        "PatientMotherBirthName",
        "OtherPatientNames",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "PatientTelecomInformation",
        "MedicalRecordLocator",
        "AccessionNumber",
        "StudyID",
        "AdmissionID",
        "RequestedProcedureID",
        "ScheduledProcedureStepID",
        "PerformedProcedureStepID",
        "PlacerOrderNumberImagingServiceRequest",
        "FillerOrderNumberImagingServiceRequest",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "StationName",
        "DeviceSerialNumber",
        "VerifyingOrganization",
        "ReferringPhysicianAddress",
        "ReferringPhysicianTelephoneNumbers",
        "RegionOfResidence",
        "CountryOfResidence",
        "MilitaryRank",
        "BranchOfService",
    }
)


@dataclass(frozen=True)
class MaskedRule:
    """A repeating-group row of the table, e.g. (60xx,4000) Overlay Comments."""

    group: int
    element: int
    group_mask: int
    element_mask: int
    action: str

    def matches(self, tag: BaseTag) -> bool:
        return (tag.group & self.group_mask) == self.group and (tag.element & self.element_mask) == self.element


class AnnexETable:
    """Lookup tag -> Table E.1-1 action code for one edition of the standard."""

    def __init__(self, edition: str = TABLE_EDITION) -> None:
        module = importlib.import_module(f"dicomanonymizer.dicom_anonymization_databases.{edition}")
        self.edition = edition
        self.exact: dict[int, str] = {}
        self.masked: list[MaskedRule] = []
        for name, code in _CATEGORIES.items():
            for row in getattr(module, name):
                if len(row) == 2:
                    self.exact[(row[0] << 16) | row[1]] = code
                else:
                    self.masked.append(MaskedRule(row[0], row[1], row[2], row[3], code))

    def __len__(self) -> int:
        return len(self.exact) + len(self.masked)

    def action(self, tag: BaseTag) -> str | None:
        code = self.exact.get(int(tag))
        if code is not None:
            return code
        for rule in self.masked:
            if rule.matches(tag):
                return rule.action
        return None


def is_descriptor(keyword: str, vr: str) -> bool:
    """Clean Descriptors applies to free-text descriptions and comments (kept, cleaned)."""
    if vr not in TEXT_VRS:
        return False
    return keyword.endswith(_DESCRIPTOR_SUFFIXES) or keyword in _DESCRIPTOR_EXTRA
