"""Everything derived from the site's secret key: UIDs, patient pseudonyms, person names, date shifts.

Why keyed (HMAC) instead of random: the same input gives the same output in every file and every run,
so GSPS/SR references keep resolving and a later export of the same patient lands on the same pseudonym.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path


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
