"""The element engine: carries out the chosen action on every element of one dataset, counting changes.

actions.py decides what happens to an element; this module does it (keyed values, date shift, dummy
values, text cleaning, private blocks) and recurses into sequences.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID_dictionary

from bundle.deid import actions
from bundle.deid.keying import Keyed
from bundle.deid.options import DeidOptions
from bundle.deid.patients import Patient
from bundle.deid.profile import TEXT_VRS, AnnexETable
from bundle.deid.scrub import Scrubber, texts

_UID_KEEP_KEYWORDS = frozenset({"TransferSyntaxUID", "CodingSchemeUID", "ContextUID", "MappingResourceUID", "PrivateInformationCreatorUID"})
_NUMBER_VRS = ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV")


def _set(elem: DataElement, values: list[str]) -> None:
    elem.value = values if len(values) > 1 else (values[0] if values else "")


class ElementEngine:
    """Applies the table and options to one dataset, counting what it changes (in `counts`).

    Set `patient` before `process`: pseudonym and date shift are the patient's.
    """

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
        self.patient: Patient | None = None

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
            action = actions.choose(elem, self.table.action(tag), self.opts)
            if action is not None:
                self._apply(ds, elem, action)

    # -- actions ------------------------------------------------------------------------------------
    def _apply(self, ds: Dataset, elem: DataElement, action: str) -> None:
        vr = elem.VR
        action = actions.resolve(action, vr)
        if action == "K":
            return
        if action == "X":
            del ds[elem.tag]
            self.counts["removed"] += 1
        elif action == "Z":
            self._empty(elem)
        elif action == "D":
            self._dummy(ds, elem)
        elif action == "U":
            if not self._uid_protected(elem.keyword, str(elem.value)) or self.table.action(elem.tag) == "U":
                self._remap(elem)
        elif action == "SHIFT":
            if texts(elem.value):
                self._shift(elem)
        elif action == "C":
            if vr == "SQ":
                for item in elem.value:
                    self.process(item)
            elif vr == "PN":
                self._dummy(ds, elem)
            elif vr in TEXT_VRS and elem.keyword not in actions.CODE_KEYWORDS:
                self._clean_text(elem)
        else:
            raise ValueError(f"{elem.keyword or elem.tag}: unknown action {action!r}")

    def _private(self, ds: Dataset) -> None:
        """Remove private elements, except safe-listed ones (cleaned if text) and the creators of their blocks."""
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

    # -- values -------------------------------------------------------------------------------------
    def _empty(self, elem: DataElement) -> None:
        vr = elem.VR
        if vr == "SQ":
            if len(elem.value):
                elem.value = Sequence()
                self.counts["emptied"] += 1
        elif elem.value not in (None, "", b""):
            elem.value = None if vr not in TEXT_VRS | {"PN", "DA", "TM", "DT", "CS", "AE", "UI"} else ""
            self.counts["emptied"] += 1

    def _dummy(self, ds: Dataset, elem: DataElement) -> None:
        assert self.patient is not None
        vr, kw = elem.VR, elem.keyword
        if vr == "SQ":
            for item in elem.value:
                self.process(item)
            return
        if not texts(elem.value) and kw not in ("PatientName", "PatientID"):
            return
        if vr == "PN":
            if kw == "PatientName":
                _set(elem, [self.patient.pseudonym])
            else:
                _set(elem, [self.keyed.person(str(v)) for v in texts(elem.value)])
        elif kw == "PatientID":
            elem.value = self.patient.pseudonym
        elif vr in ("DA", "DT"):
            if self.opts.retain_longitudinal_modified_dates and kw not in actions.NEVER_SHIFT:
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
        elif vr in _NUMBER_VRS:
            elem.value = 0
        else:  # binary: no meaningful dummy
            del ds[elem.tag]
            self.counts["removed"] += 1
            return
        self.counts["replaced"] += 1

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
        for text in texts(elem.value):
            parts = text.split("-") if elem.VR == "DA" else [text]
            out.append("-".join(self._shift_date(p) if p else "" for p in parts))
        _set(elem, out)
        self.counts["dates_shifted"] += 1

    @staticmethod
    def _uid_protected(kw: str, value: str) -> bool:
        return value in UID_dictionary or kw.endswith("ClassUID") or kw in _UID_KEEP_KEYWORDS

    def _remap(self, elem: DataElement) -> None:
        values = texts(elem.value)
        new = [v if v in UID_dictionary else self.keyed.uid(v) for v in values]
        if new != values:
            _set(elem, new)
            self.counts["uids_replaced"] += 1

    def _clean_text(self, elem: DataElement) -> None:
        values = texts(elem.value)
        new = [self.scrub(v) for v in values]
        if new != values:
            _set(elem, new)
            self.counts["cleaned"] += 1
