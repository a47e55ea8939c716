"""Who a file belongs to: one pseudonym and one date shift per patient of the export."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from bundle.deid.keying import Keyed
from bundle.deid.options import DeidOptions


@dataclass
class Patient:
    """One patient of the export: the keyed pseudonym and date shift, the original identity (linkage only)."""

    pseudonym: str
    shift: int
    patient_id: str
    issuer: str
    name: str
    files: int = 0


def patient_of(ds: Dataset, patients: dict[tuple[str, str], Patient], keyed: Keyed, opts: DeidOptions) -> Patient:
    """The dataset's patient, added to `patients` (keyed by issuer and patient ID) on first sight.

    Without a Patient ID, name and birth date stand in for it, so such files still group by person.
    """
    pid, issuer = str(ds.get("PatientID", "")), str(ds.get("IssuerOfPatientID", ""))
    if not pid:
        pid = f"{ds.get('PatientName', '')}|{ds.get('PatientBirthDate', '')}"
    if (issuer, pid) not in patients:
        pseudonym = keyed.pseudonym(issuer, pid)
        patients[(issuer, pid)] = Patient(
            pseudonym, keyed.shift_days(pseudonym, *opts.date_shift_days), pid, issuer, str(ds.get("PatientName", ""))
        )
    return patients[(issuer, pid)]
