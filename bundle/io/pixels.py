"""Decoding Pixel Data in whatever transfer syntax an archive sent, with one clear reason when it cannot be done.

Why a wrapper: pydicom decodes every syntax a clinical archive sends (JPEG baseline/extended/lossless,
JPEG-LS, JPEG 2000, RLE, deflated, big endian) through its plugins (pylibjpeg + libjpeg/openjpeg/rle,
python-gdcm; declared in pyproject.toml), but a damaged stream or a missing plugin surfaces as any of a
dozen exception types with a multi-line message. Every caller (mining conversion, burned-in blanking,
Deploy series loading) needs the same answer instead: a REASONS key and one line naming the syntax.
"""

from __future__ import annotations

import logging

import numpy as np
import pydicom
from pydicom.encaps import get_frame
from pydicom.pixels import get_decoder

from bundle.io.dicom import UnreadableError


class _OneLine(logging.Filter):
    """pydicom logs every decoder plugin's failure with its traceback (`LOGGER.exception`) before raising one error.

    Why drop the traceback: under `monai.bundle run` (configs/logging.conf logs INFO to stdout) a damaged image in
    an export printed two tracebacks per file, although the failure is reported, with its reason, in one line.
    The message stays; only the stack goes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.msg = " ".join(str(record.msg).split())
        return True


logging.getLogger("pydicom.pixels.decoders.base").addFilter(_OneLine())


def transfer_syntax(ds: pydicom.Dataset) -> pydicom.uid.UID:
    """The dataset's transfer syntax (Explicit VR Little Endian when the file meta does not say)."""
    meta = getattr(ds, "file_meta", None)
    return pydicom.uid.UID(
        str(meta.get("TransferSyntaxUID", pydicom.uid.ExplicitVRLittleEndian)) if meta else pydicom.uid.ExplicitVRLittleEndian
    )


def _syntax_name(uid: pydicom.uid.UID) -> str:
    return f"{uid.name} ({uid})" if uid.name != str(uid) else str(uid)


def _one_line(exc: Exception, limit: int = 300) -> str:
    """The exception as one line (pydicom lists each plugin's failure on its own line)."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return f"{type(exc).__name__}: {text}"[:limit]


_MARKER_ENDED = set(pydicom.uid.JPEGTransferSyntaxes) | set(pydicom.uid.JPEGLSTransferSyntaxes) | set(pydicom.uid.JPEG2000TransferSyntaxes)


def _check_stream_end(ds: pydicom.Dataset, uid: pydicom.uid.UID, frame: int, n: int) -> None:
    """A JPEG / JPEG-LS / JPEG 2000 frame ends with its EOI (EOC) marker FFD9.

    Why: decoders fill a truncated stream's missing rows silently (a cut PACS transfer would become
    a half-grey image in the datalist); the end marker is the codestream's own completeness check.
    """
    if uid not in _MARKER_ENDED:
        return
    try:
        data = get_frame(ds.PixelData, frame - 1, number_of_frames=n)
    except Exception as exc:  # noqa: BLE001 - a broken fragment table is a damaged stream
        raise UnreadableError("undecodable_pixels", f"{_syntax_name(uid)}: frame {frame} not found: {_one_line(exc)}") from exc
    if b"\xff\xd9" not in data.rstrip(b"\x00")[-8:]:
        raise UnreadableError("undecodable_pixels", f"{_syntax_name(uid)}: frame {frame} ends without its EOI marker (truncated stream)")


def check_decoder(ds: pydicom.Dataset) -> None:
    """Raise UnreadableError('unsupported_transfer_syntax') when no installed plugin decodes this syntax."""
    uid = transfer_syntax(ds)
    try:
        decoder = get_decoder(uid)
    except NotImplementedError as exc:
        raise UnreadableError("unsupported_transfer_syntax", f"no pixel decoder for {_syntax_name(uid)}") from exc
    if not decoder.is_available:
        raise UnreadableError(
            "unsupported_transfer_syntax",
            f"no installed plugin decodes {_syntax_name(uid)}: install the clinical decoders of pyproject.toml (pylibjpeg + plugins, python-gdcm)",
        )


def decode_frame(ds: pydicom.Dataset, frame: int = 1) -> np.ndarray:
    """One frame (1-based) as stored (rows, columns), native byte order; UnreadableError('undecodable_pixels') on failure."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise UnreadableError("undecodable_pixels", "no Pixel Data element")
    check_decoder(ds)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    if not 1 <= frame <= n:
        raise UnreadableError("undecodable_pixels", f"frame {frame} requested, the image has {n}")
    _check_stream_end(ds, transfer_syntax(ds), frame, n)
    try:
        arr = pydicom.pixels.pixel_array(ds, index=frame - 1 if n > 1 else None)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this image's reason, never the run's
        raise UnreadableError("undecodable_pixels", f"{_syntax_name(transfer_syntax(ds))}: {_one_line(exc)}") from exc
    if arr.ndim != 2:
        raise UnreadableError("undecodable_pixels", f"Pixel Data is not a single grey plane (shape {arr.shape})")
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def decompress_in_place(ds: pydicom.Dataset) -> None:
    """Decode an encapsulated (compressed) dataset to native Pixel Data; UnreadableError('undecodable_pixels') on failure."""
    if not transfer_syntax(ds).is_compressed:
        return
    check_decoder(ds)
    try:
        ds.decompress()
    except Exception as exc:  # noqa: BLE001 - see decode_frame
        raise UnreadableError("undecodable_pixels", f"{_syntax_name(transfer_syntax(ds))}: {_one_line(exc)}") from exc
