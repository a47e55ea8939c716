"""Images read more than once under one SOP Instance UID: one is mined, every other copy is reported.

Why: the image index is keyed by SOP Instance UID, so a second copy (re-sent, re-encoded) used to vanish
without a word. The copy kept, and the reason given for the others, come from bundle/io/copies.py, the
same rule de-identification applies, so both stages tell the user the same story.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from bundle.io.copies import Copy, choose, describe
from bundle.io.records import FileIssue, ImageInfo, ObjectResult
from bundle.pacs.source import Source


def _describe(source: Source, location: str) -> Copy:
    try:
        raw = source.read_bytes(location)
    except Exception as exc:  # noqa: BLE001 - a source that cannot deliver the copy again: compared as unreadable
        return Copy(location, reason="retrieve_failed", detail=f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
    return describe(raw, location)


def resolve_duplicates(results: list[ObjectResult], images: dict[str, ImageInfo], source: Source, workers: int = 2) -> list[FileIssue]:
    """Pick the copy to mine for every duplicated image UID (updating `images`); one issue per copy not mined.

    Only duplicated UIDs are read again and decoded. When no copy can be read whole, the first is kept (it
    fails later with its own reason) and the others are reported as differing copies that were not compared.
    """
    copies: dict[str, list[ImageInfo]] = {}
    for r in results:
        if r.image is not None:
            copies.setdefault(r.image.sop_instance_uid, []).append(r.image)
    issues: list[FileIssue] = []
    for uid, infos in copies.items():
        if len(infos) < 2:
            continue
        with ThreadPoolExecutor(max(1, min(workers, len(infos)))) as pool:  # decoders release the GIL
            described = list(pool.map(lambda info: _describe(source, info.location), infos))
        kept, others = choose(described)
        if kept is None:
            kept = 0
            note = f"not compared (no copy reads whole); kept {infos[0].location} (the first copy)"
            others = [(i, "duplicate_differing_copy", note) for i in range(1, len(infos))]
        images[uid] = infos[kept]
        reported = {i for i, _, _ in others}
        for i, reason, detail in others:
            issues.append(FileIssue(infos[i].location, reason, detail, uid))
        for i, c in enumerate(described):  # unreadable copies beside a readable one: their own reason, naming the kept copy
            if i != kept and i not in reported:
                issues.append(FileIssue(infos[i].location, c.reason, f"{c.detail}; a copy of {uid}, kept {infos[kept].location}", uid))
    return issues
