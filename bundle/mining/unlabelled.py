"""Contrast series nobody measured: reported by every mining run, written as unlabelled volumes on request.

Why: a PACS holds far more post-contrast series than measured ones; the seed study self-labelled images no reader
had marked. Mining already reads every image header, so the series that pass the series rules (axial T1
post-contrast) and carry no kept measurement cost nothing to list; with ``unlabelled: true`` each becomes a volume
in ``datalist_unlabelled.json`` (section ``unlabelled``: no boxes, for self-training's teacher to label, never to
train as background on its own). A patient that the split puts in validation or test is left out: unlabelled data
must not leak the held-out patients into training.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

from bundle.datalist.schema import DatalistItem, write_datalist
from bundle.io.records import FileIssue, ImageInfo
from bundle.mining.rules.series import SeriesRules, check_series
from bundle.mining.volumes import NotAVolume, _convert, _in_processes, order_series, series_path
from bundle.pacs.source import Source, pool_map

SECTION = "unlabelled"


def unmeasured_series(
    images: dict[str, ImageInfo], datalist: dict[str, list[DatalistItem]], rules: SeriesRules, split: dict[str, str] | None = None
) -> tuple[dict[str, list[ImageInfo]], Counter]:
    """Series UID -> its images, for every series with no mined item that passes the series rules; and why others were left out.

    split: patient -> section, where known; a patient outside training is left out (held-out patients never train).
    """
    measured = {it.series_instance_uid for items in datalist.values() for it in items}
    held_out = {it.patient for s, items in datalist.items() if s != "training" for it in items}
    held_out |= {p for p, s in (split or {}).items() if s != "training"}
    by_series: dict[str, list[ImageInfo]] = {}
    for info in images.values():
        by_series.setdefault(info.series_uid, []).append(info)
    out: dict[str, list[ImageInfo]] = {}
    why: Counter = Counter()
    for uid, infos in sorted(by_series.items()):
        if uid in measured:
            continue
        failed = check_series(infos[0], rules)
        if failed:
            why[f"series rule: {failed[0]}"] += 1
        elif infos[0].patient_id in held_out:
            why["patient in validation or test"] += 1
        else:
            out[uid] = infos
    return out, why


def unlabelled_items(series: dict[str, list[ImageInfo]]) -> tuple[list[tuple[DatalistItem, list[ImageInfo]]], list[FileIssue]]:
    """One box-less volume item per series that stacks; a series that does not is an issue."""
    items, issues = [], []
    for uid, infos in series.items():
        try:
            ordered, dz = order_series(infos)
        except NotAVolume as exc:
            issues.append(FileIssue(infos[0].location, "series_not_a_volume", f"series {uid}: {exc}"))
            continue
        first = ordered[0]
        spacing = list(first.spacing or [1.0, 1.0])[:2] + [round(dz, 4)]
        item = DatalistItem(
            image=series_path(first.patient_id, uid),
            box=[],
            label=[],
            patient=first.patient_id,
            study_instance_uid=first.study_uid,
            series_instance_uid=uid,
            spacing=spacing,
            extra={"unlabelled": True, "n_slices": len(ordered)},
        )
        items.append((item, ordered))
    return items, issues


def mine_unlabelled(
    images: dict[str, ImageInfo],
    datalist: dict[str, list[DatalistItem]],
    rules: SeriesRules,
    source: Source,
    output_dir: Path,
    write: bool = False,
    split: dict[str, str] | None = None,
    datalist_name: str = "datalist_unlabelled.json",
    workers: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """The mining report's ``unmeasured_series`` section; with ``write``, the volumes and their datalist in output_dir."""
    series, why = unmeasured_series(images, datalist, rules, split)
    report: dict[str, Any] = {
        "series": len(series),
        "patients": len({v[0].patient_id for v in series.values()}),
        "left_out": dict(sorted(why.items())),
        "written": None,
    }
    if not write:
        return report
    items, issues = unlabelled_items(series)
    jobs = [(ordered, output_dir / it.image, it.spacing) for it, ordered in items]
    results = pool_map(
        partial(_convert, source), jobs, workers, "unlabelled volumes", progress, processes=_in_processes(source), chunksize=1
    )
    bad = {i.source for i in results if i is not None}
    issues += [i for i in results if i is not None]
    kept = [it for it, _ in items if str(output_dir / it.image) not in bad]
    write_datalist({SECTION: kept}, output_dir / datalist_name)
    report["written"] = {"datalist": datalist_name, "volumes": len(kept), "issues": [i.to_dict() for i in issues]}
    return report
