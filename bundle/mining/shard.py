"""Sharded mining: which shard an object belongs to, and the state a shard leaves for the merge.

Why by study: every measurement references images of its own study (GSPS, SR, overlays), so a shard that
holds whole studies resolves and converts its measurements' images itself. The key is the object's
StudyInstanceUID, read from its first bytes (`bundle/mining/header.py`), so any folder layout and any source
shard the same way; an object without one (not DICOM, unreadable, AIM XML, a CSV) is keyed by its location.
The shard is a stable hash (SHA-256, not Python's salted `hash`), so every machine agrees.

A shard writes its converted images and `mining_shard.json` (every object's reading, the settings); the
merge (`bundle/mining/merge.py`) resolves, splits and reports the union exactly as a single run would.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Protocol

from bundle.io.dicom import UnreadableError, read_dataset
from bundle.io.records import FileIssue, ImageInfo, Measurement, ObjectResult
from bundle.mining.header import study_key

STATE_NAME = "mining_shard.json"
STATE_VERSION = 1


class _Readable(Protocol):
    def read(self) -> bytes: ...


def shard_of(key: str, count: int) -> int:
    """Shard (0 .. count - 1) of a study key: the same on every machine and Python."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % count


def study_of(head: bytes, location: str, rest: bytes | _Readable | None = None) -> str:
    """The object's StudyInstanceUID (from its first bytes, else its whole header), else its location."""
    key = study_key(head)
    if key:
        return key
    if len(head) >= 132 and head[128:132] == b"DICM" and rest is not None:
        raw = rest if isinstance(rest, bytes | bytearray) else rest.read()
        key = study_key(bytes(raw))
        if key:
            return key
        try:
            uid = str(read_dataset(bytes(raw), stop_before_pixels=True).get("StudyInstanceUID", ""))
        except UnreadableError:
            uid = ""
        if uid:
            return uid
    return location


def check_shard(index: int, count: int) -> tuple[int, int]:
    index, count = int(index), int(count)
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard_index {index} / shard_count {count}: need 0 <= shard_index < shard_count")
    return index, count


def result_from_dict(d: dict[str, Any]) -> ObjectResult:
    return ObjectResult(
        location=d["location"],
        object=d["object"],
        image=ImageInfo(**d["image"]) if d["image"] else None,
        measurements=[Measurement(**m) for m in d["measurements"]],
        issue=FileIssue(**d["issue"]) if d["issue"] else None,
    )


def atomic_write_text(path: Path, text: str) -> None:
    """Write beside the target and rename over it: a killed run leaves the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_state(output_dir: Path, index: int, count: int, settings: dict[str, Any], results: list[ObjectResult]) -> Path:
    """The shard's readings and settings; written last, so its presence means the shard finished."""
    state = {
        "version": STATE_VERSION,
        "shard_index": index,
        "shard_count": count,
        "settings": settings,
        "results": [{"location": r.location, "object": r.object, **_parts(r)} for r in results],
    }
    path = output_dir / STATE_NAME
    atomic_write_text(path, json.dumps(state))
    return path


def _parts(r: ObjectResult) -> dict[str, Any]:
    return {
        "image": r.image.to_dict() if r.image else None,
        "measurements": [m.to_dict() for m in r.measurements],
        "issue": r.issue.to_dict() if r.issue else None,
    }


def read_state(shard_dir: Path) -> dict[str, Any]:
    path = Path(shard_dir) / STATE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no shard state (the shard did not finish, or this is not a shard's output_dir)")
    state = json.loads(path.read_text())
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: shard state version {state.get('version')}, this code reads {STATE_VERSION}")
    return state
