"""Copies of one SOP Instance: what each holds, and which one to keep.

Why: real archives hold the same SOP Instance UID more than once (re-sent, re-encoded in another transfer
syntax, a lossy copy for the web viewer). De-identification and mining name every object by that UID, so
a second copy would silently replace the first. Both stages ask this module instead, so they keep the
same copy for the same reason and report the others as `duplicate_same_pixels` or `duplicate_differing_copy`.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
import pydicom

from bundle.io.dicom import UnreadableError, read_dataset
from bundle.io.pixels import transfer_syntax

# Transfer syntaxes whose pixels are not the acquired ones (PS3.5 Section 8 and Annex A.4).
LOSSY_SYNTAXES = frozenset(
    {
        pydicom.uid.JPEGBaseline8Bit,
        pydicom.uid.JPEGExtended12Bit,
        pydicom.uid.JPEGLSNearLossless,
        pydicom.uid.JPEG2000,
        pydicom.uid.JPEG2000MC,
        "1.2.840.10008.1.2.4.110",  # JPEG XL
        "1.2.840.10008.1.2.4.112",  # JPEG XL JPEG Recompression
        "1.2.840.10008.1.2.4.100",  # MPEG2 and the other video syntaxes
        "1.2.840.10008.1.2.4.101",
        "1.2.840.10008.1.2.4.102",
        "1.2.840.10008.1.2.4.103",
        "1.2.840.10008.1.2.4.104",
        "1.2.840.10008.1.2.4.105",
        "1.2.840.10008.1.2.4.106",
        "1.2.840.10008.1.2.4.107",
        "1.2.840.10008.1.2.4.108",
    }
)


@dataclass(frozen=True)
class Copy:
    """One copy as read: a digest of what it holds (decoded pixels, or the data set without its file meta), or why not."""

    location: str
    digest: str = ""
    pixels: bool = False
    lossy: bool = False
    reason: str = ""  # set when the copy cannot be read whole: a REASONS key
    detail: str = ""


def _pixel_digest(arr: np.ndarray) -> str:
    """A digest of the pixel values, not of their storage: native byte order, and non-negative integers as unsigned.

    Why: two decoders may hand the same values back as int16 and uint16 (or big and little endian); a copy is
    the same image when its values are. Views only, no copy of the array (RG-size images decode to 7 MB).
    """
    arr = np.ascontiguousarray(arr)
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype.kind == "i" and (arr.size == 0 or arr.min() >= 0):
        arr = arr.view(f"u{arr.dtype.itemsize}")
    kind = f"{arr.dtype.kind}{arr.dtype.itemsize}"
    return hashlib.sha256(f"{kind}{arr.shape}".encode() + memoryview(arr).cast("B")).hexdigest()


def describe(raw: bytes, location: str) -> Copy:
    """Read one copy whole (pixels decoded); never raises: an unreadable copy carries its reason."""
    try:
        ds = read_dataset(raw)
        syntax = str(transfer_syntax(ds))  # importing bundle.io.pixels also keeps pydicom's decoder tracebacks out of the log
        lossy = syntax in LOSSY_SYNTAXES or str(ds.get("LossyImageCompression", "")).strip() == "01"
        if "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            digest = _pixel_digest(np.asarray(ds.pixel_array))
            return Copy(location, digest, True, lossy)
        buf = io.BytesIO()
        del ds.file_meta  # transfer syntax and sender's meta are not the content
        ds.save_as(buf, implicit_vr=False, little_endian=True)
        return Copy(location, hashlib.sha256(buf.getvalue()).hexdigest(), False, lossy)
    except UnreadableError as exc:
        return Copy(location, reason=exc.reason, detail=exc.detail)
    except Exception as exc:  # noqa: BLE001 - a decoder failure is this copy's reason
        text = " ".join(str(exc).split())[:300]
        return Copy(location, reason="undecodable_pixels", detail=f"{type(exc).__name__}: {text}")


def choose(copies: list[Copy]) -> tuple[int | None, list[tuple[int, str, str]]]:
    """The copy to keep and, for each other readable copy, (index, reason, one-line detail).

    Kept: the first readable copy (in the given order) that is not lossy, else the first readable one. A copy that
    cannot be read is not listed: it keeps its own reason (undecodable_pixels, corrupt, ...). None when none is readable.
    """
    readable = [i for i, c in enumerate(copies) if not c.reason]
    if not readable:
        return None, []
    kept = next((i for i in readable if not copies[i].lossy), readable[0])
    k = copies[kept]
    why = "the lossless copy" if not k.lossy and any(copies[i].lossy for i in readable) else "the first copy"
    out = []
    for i in readable:
        if i == kept:
            continue
        c = copies[i]
        if c.digest == k.digest:
            what = "same pixels" if c.pixels else "same content"
            out.append((i, "duplicate_same_pixels", f"{what} as the kept copy {k.location} ({why})"))
        else:
            what = "pixels differ" if c.pixels and k.pixels else "content differs"
            lossy = ", this copy is lossy" if c.lossy else ""
            out.append((i, "duplicate_differing_copy", f"{what}{lossy}; kept {k.location} ({why})"))
    return kept, out
