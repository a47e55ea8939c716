"""One object in, one `ObjectResult` out: classify the object and run the reader that fits it.

Why here and injected into sources: the source fetches bytes, this decides which reader (one format per
file under `readers/`) turns them into measurements. It never raises: a failure is the object's issue.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bundle.io.dicom import GSPS_CLASSES, SR_CLASSES, UnreadableError, image_info, is_image, read_dataset
from bundle.io.records import FileIssue, ObjectResult
from bundle.mining.header import BIG_HEAD, HEAD, fast_image_info, read_head, study_key
from bundle.mining.readers.aim import looks_like_xml, read_aim
from bundle.mining.readers.deeplesion import looks_like_deeplesion_csv, read_deeplesion
from bundle.mining.readers.gsps import read_gsps
from bundle.mining.readers.overlay import OverlayRules, read_overlays
from bundle.mining.readers.sr import read_sr
from bundle.mining.shard import shard_of, study_of


@dataclass(frozen=True)
class ObjectInspector:
    """What a miner hands its source: `(bytes, location) -> ObjectResult`, plus `from_file` for folder sources.

    Why a class (it pickles to worker processes like the partial it replaces): `from_file` reads only a
    file's first bytes, and a plain image whose header the fast path (`bundle/mining/header.py`) is sure of is
    never read further; everything else goes through `inspect_object`. With `shard_count` > 1 an object of
    another shard's study gives None (the source drops it) after reading only its first bytes.
    """

    overlay_rules: OverlayRules | None = None
    shard_index: int = 0
    shard_count: int = 1

    def _foreign(self, head: bytes, location: str, raw: bytes | None = None) -> bool:
        return self.shard_count > 1 and shard_of(study_of(head, location, raw), self.shard_count) != self.shard_index

    def __call__(self, raw: bytes, location: str) -> ObjectResult | None:
        if self._foreign(raw[:HEAD], location, raw):
            return None
        info = None if looks_like_deeplesion_csv(raw) else fast_image_info(raw, len(raw), location)
        return ObjectResult(location, "image", image=info) if info is not None else inspect_object(raw, location, self.overlay_rules)

    def from_file(self, path: Path, location: str) -> ObjectResult | None:
        head, size = read_head(path)
        if len(head) < size and self.shard_count > 1 and study_key(head) is None:
            head, size = read_head(path, BIG_HEAD)
        whole = head if len(head) >= size else None
        if self._foreign(head, location, whole if whole is not None else _LazyBytes(path)):
            return None
        info = None if looks_like_deeplesion_csv(head) else fast_image_info(head, size, location)
        if info is None and whole is None and len(head) < BIG_HEAD:  # a long header: once more, with more of it
            head, size = read_head(path, BIG_HEAD)
            info = None if looks_like_deeplesion_csv(head) else fast_image_info(head, size, location)
        if info is not None:
            return ObjectResult(location, "image", image=info)
        return inspect_object(whole if whole is not None else path.read_bytes(), location, self.overlay_rules)


class _LazyBytes:
    """The rest of a file, read only if the study key was not in its first bytes."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> bytes:
        return self.path.read_bytes()


def inspector(overlay_rules: OverlayRules | None = None, shard_index: int = 0, shard_count: int = 1) -> ObjectInspector:
    """The inspector a miner hands its source."""
    return ObjectInspector(overlay_rules, shard_index, shard_count)


def _inspect_text(raw: bytes, location: str) -> ObjectResult | None:
    """AIM XML or a DeepLesion CSV; None when the bytes are neither."""
    if looks_like_xml(raw):
        try:
            return ObjectResult(location, "aim", measurements=read_aim(raw, location))
        except UnreadableError as exc:
            return ObjectResult(location, issue=FileIssue(location, exc.reason, exc.detail))
        except Exception as exc:  # noqa: BLE001 - a reader bug on one document must not stop the run
            return ObjectResult(location, issue=FileIssue(location, "malformed_xml", f"AIM reader failed: {type(exc).__name__}: {exc}"))
    if looks_like_deeplesion_csv(raw):
        try:
            return ObjectResult(location, "deeplesion_csv", measurements=read_deeplesion(raw, location))
        except (ValueError, UnicodeDecodeError) as exc:
            return ObjectResult(location, issue=FileIssue(location, "unsupported_object", str(exc)))
    return None


def inspect_object(raw: bytes, location: str, overlay_rules: OverlayRules | None = None) -> ObjectResult:
    """Read one object and run the reader that fits it. Never raises: failures come back as issues."""
    text = _inspect_text(raw, location)
    if text is not None:
        return text
    try:
        ds = read_dataset(raw)
    except UnreadableError as exc:
        return ObjectResult(location, issue=FileIssue(location, exc.reason, exc.detail))
    sop_class = str(ds.SOPClassUID)
    kind = "image" if is_image(ds) else "gsps" if sop_class in GSPS_CLASSES else "sr" if sop_class in SR_CLASSES else "other"
    res = ObjectResult(location, kind)
    try:
        if kind == "gsps":
            ms = read_gsps(ds, location)
        elif kind == "sr":
            ms = read_sr(ds, location)
        elif kind == "image":
            res.image = image_info(ds, location)
            ms = read_overlays(ds, location, res.image.spacing, overlay_rules)  # [] without overlay groups
            if ms:
                res.object = "overlay"
        else:
            res.issue = FileIssue(location, "unsupported_object", f"SOP class {sop_class} has no reader", str(ds.SOPInstanceUID))
            return res
    except Exception as exc:  # noqa: BLE001 - a reader bug on one object must not stop the run; the file was read, so not corrupt
        text = " ".join(str(exc).split())[:300]
        res.issue = FileIssue(location, "internal_error", f"{kind} reader failed: {type(exc).__name__}: {text}", str(ds.SOPInstanceUID))
        return res
    for m in ms:
        m.extra["study_date"] = str(ds.get("StudyDate", ""))
    res.measurements = ms
    return res
