"""Free-text cleaning: identifying values collected from the whole export, and PHI-shaped patterns.

Why collect first: a kept description or SR TEXT item may quote a name or ID that is only recognisable
because it appears in some header of the export; pass 1 gathers those values, pass 2 scrubs with them.
"""

from __future__ import annotations

import re
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from bundle.deid.profile import IDENTITY_KEYWORDS

_PATTERNS = [
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+"),  # e-mail
    re.compile(r"\b\d+(?:\.\d+){3,}\b"),  # UID-like dotted numbers
    re.compile(r"\b\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\b"),  # 2024-01-02
    re.compile(r"\b\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}\b"),  # 02/01/2024
    re.compile(r"\b(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\b"),  # 20240102
    re.compile(r"\+?\(?\d[\d\s().-]{5,}\d"),  # phone-like runs of 7+ characters of digits
]


def texts(value: Any) -> list[str]:
    """An element value as a list of non-empty strings (multi-valued or not)."""
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
            for text in texts(elem.value):
                tokens |= _tokens_of(text, is_name=True)
        elif elem.keyword in IDENTITY_KEYWORDS:
            for text in texts(elem.value):
                tokens |= _tokens_of(text, is_name=False)
                tokens |= _date_variants(text)
    return tokens
