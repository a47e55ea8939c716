"""The mining pipeline: source -> readers -> resolve references -> boxes -> datalist items -> slices + report.

Why one class: `configs/mine.yaml` instantiates `Miner` with a `Source` (built there with `_target_`) and
every rule overridable, and calls `run()`. Output order is deterministic (sorted by source location, then
position inside the object), so running twice gives identical files; every file is written whole or not at
all (`bundle/mining/outputs.py`), so a killed run run again gives them too. With `shard_count` > 1 the miner
reads only its shard's studies and leaves their readings for `bundle/mining/merge.py` (docs/mining.md).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bundle.datalist.rules import from_config
from bundle.datalist.schema import DatalistItem, write_datalist
from bundle.datalist.split import assign_splits, load_split
from bundle.io.errors import InputError
from bundle.io.records import FileIssue, ImageInfo, Measurement, ObjectResult
from bundle.mining.convert import convert_datalist
from bundle.mining.duplicates import resolve_duplicates
from bundle.mining.inspect import inspector
from bundle.mining.items import build_items, group_by_image
from bundle.mining.outputs import Staging
from bundle.mining.readers.overlay import OverlayRules
from bundle.mining.report import build_report, write_report
from bundle.mining.resolve import Resolver
from bundle.mining.rules.boxes import BoxRules
from bundle.mining.rules.series import SeriesRules
from bundle.mining.shard import atomic_write_text, check_shard, write_state
from bundle.mining.unlabelled import mine_unlabelled
from bundle.mining.volumes import series_volumes
from bundle.pacs.source import Source

log = logging.getLogger("bundle.mining")


def _gather(results: list[ObjectResult]) -> tuple[dict[str, ImageInfo], list[Measurement], list[FileIssue], Counter]:
    """Index images by SOP instance UID (first copy; resolve_duplicates may pick another) and pool measurements and issues."""
    images: dict[str, ImageInfo] = {}
    ms: list[Measurement] = []
    issues: list[FileIssue] = []
    objects: Counter = Counter()
    for r in results:
        if r.issue:
            issues.append(r.issue)
        if r.object:
            objects[r.object] += 1
        if r.image:
            images.setdefault(r.image.sop_instance_uid, r.image)
        ms.extend(r.measurements)
    return images, ms, issues, objects


def flag(v: bool | str) -> bool:
    """A yes/no key: `--convert false` on the bundle command line arrives as the string 'false' (truthy)."""
    return v.strip().lower() in ("1", "true", "yes", "on") if isinstance(v, str) else bool(v)


def source_folder(path: str | os.PathLike) -> str:
    """``--source_dir``, checked before the folder source is built: one line if it is missing, a file or empty."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such folder; give --source_dir the PACS export folder")
    if not p.is_dir():
        raise InputError(f"{path}: is a file, not a folder; give --source_dir the folder that holds the export")
    if not any(f.is_file() for f in p.rglob("*")):
        raise InputError(f"{path}: is empty; no files to mine (--source_dir)")
    return str(path)


class Miner:
    """Mine a source (folder export, DICOMweb server, DeepLesion release) into a detection datalist plus a report."""

    def __init__(
        self,
        output_dir: str,
        source: Source,
        date_from: str | None = None,
        date_to: str | None = None,
        series_rules: SeriesRules | dict | None = None,
        box_rules: BoxRules | dict | None = None,
        overlay_rules: OverlayRules | dict | None = None,
        split_file: str | dict[str, str] | None = None,
        split_seed: int = 0,
        workers: int = 2,
        convert: bool = True,
        progress: bool = True,
        datalist_name: str = "datalist.json",
        report_name: str = "mining_report",
        volumes: bool = True,
        volumes_datalist_name: str = "datalist_volumes.json",
        shard_index: int = 0,
        shard_count: int = 1,
        resume: bool = False,
        reuse_dirs: list[str] | None = None,
        unlabelled: bool = False,
    ):
        if isinstance(source, (str, os.PathLike)):  # the old `--source PATH`: a path where a Source object goes
            raise InputError(
                f"{source}: --source takes a source object ('@folder_source', '@dicomweb_source', '@deeplesion_source'); "
                f"for a folder export give --source_dir {source}"
            )
        if not isinstance(source, Source):
            raise TypeError(
                f"source: expected a mining Source (bundle.pacs: FolderSource, DICOMwebSource, DeepLesionSource), got {source!r}"
            )
        self.output_dir = Path(output_dir)
        self.source = source
        self.date_from, self.date_to = (str(date_from) if date_from else None), (str(date_to) if date_to else None)
        self.series_rules = from_config(SeriesRules, series_rules)
        self.box_rules = from_config(BoxRules, box_rules)
        self.overlay_rules = from_config(OverlayRules, overlay_rules)
        self.split_file, self.split_seed = split_file, split_seed
        self.workers, self.convert, self.progress = workers, flag(convert), flag(progress)
        self.datalist_name, self.report_name = datalist_name, report_name
        self.volumes, self.volumes_datalist_name = flag(volumes), volumes_datalist_name
        self.unlabelled = flag(unlabelled)  # write unmeasured contrast series as unlabelled volumes (bundle/mining/unlabelled.py)
        self.shard_index, self.shard_count = check_shard(shard_index, shard_count)
        # converted files taken as they are: the shards' (merge), this folder's own (resume: after a killed run)
        self.reuse_dirs = [Path(d) for d in reuse_dirs or []] + ([self.output_dir] if flag(resume) else [])

    def _datalist(self, ms: list[Measurement], images: dict[str, ImageInfo]) -> dict[str, list[DatalistItem]]:
        """Kept boxes grouped per image, each patient in one split (split file, else the source's own, else seeded)."""
        per_image = group_by_image([m for m in ms if m.status == "kept"])
        given = dict(self.split_file) if isinstance(self.split_file, dict) else load_split(self.split_file)
        own: dict[str, str] = {}  # DeepLesion: the CSV's own Train_Val_Test (patient-level) unless a split file is given
        if not given:
            for m in ms:
                if m.extra.get("split"):
                    own.setdefault(m.patient_id, m.extra["split"])
        patients = sorted({images[s].patient_id for s, _ in per_image})
        split, origin = assign_splits(patients, given, own, self.split_seed)
        datalist: dict[str, list[DatalistItem]] = {"training": [], "validation": [], "test": []}
        for it in build_items(per_image, images, origin):
            datalist[split[it.patient]].append(it)
        return datalist

    def run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        inspect = inspector(self.overlay_rules, self.shard_index, self.shard_count)
        results = [r for r in self.source.collect(inspect, self.workers, self.progress) if r is not None]
        t_read = time.perf_counter() - t0
        if self.shard_count > 1:
            shard_results = list(results)  # serialised after conversion, before anything else changes them
            results = [copy.deepcopy(r) for r in results]
        images, ms, issues, objects = _gather(results)
        issues += resolve_duplicates(
            results, images, self.source, self.workers or 2
        )  # copies of one image UID: one mined, the others reported
        Resolver(self.series_rules, self.box_rules, self.date_from, self.date_to).resolve(ms, images)
        datalist = self._datalist(ms, images)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        staging = Staging(self.output_dir, self.reuse_dirs)
        t1 = time.perf_counter()
        if self.convert:  # an image that cannot be converted leaves the datalist, reported; the rest go on
            issues += convert_datalist(datalist, ms, images, self.source, staging.dir, self.workers, self.progress, staging.reuse)
            staging.commit()  # finished slices are kept by a resumed run even if the volumes step is killed
        t_convert = time.perf_counter() - t1
        volume_issues = self._volumes(datalist, images, staging) if self.volumes else None
        n_objects = sum(objects.values())
        if self.shard_count > 1:  # the merge writes the datalists and the report, from every shard's readings
            staging.commit()
            write_state(self.output_dir, self.shard_index, self.shard_count, self.settings(), shard_results)
            timing = self._timing(t0, t_read, t_convert, n_objects)
            log.info(
                "shard %d of %d: %d objects read (%.1f objects/s)",
                self.shard_index,
                self.shard_count,
                n_objects,
                timing["objects_per_s"] or 0,
            )
            return {"shard": [self.shard_index, self.shard_count], "objects": len(results), "timing": timing}
        write_datalist(datalist, staging.dir / self.datalist_name)
        # DeepLesion key slices carry no series attributes (modality, description, orientation): no series rules
        series = "not applied (DeepLesion CSV: no series attributes)" if self.source.kind == "deeplesion" else self.series_rules
        rules = {"series": series, "boxes": self.box_rules, "overlay": self.overlay_rules}
        date_range = [self.date_from, self.date_to]
        report = build_report(self.source.kind, date_range, rules, len(results), objects, len(images), issues, ms, datalist)
        if volume_issues is not None:
            report["series_volumes"] = volume_issues
        if self.source.kind != "deeplesion":  # contrast series nobody measured: always counted, written on request
            given = dict(self.split_file) if isinstance(self.split_file, dict) else load_split(self.split_file)
            report["unmeasured_series"] = mine_unlabelled(
                images, datalist, self.series_rules, self.source, staging.dir, self.unlabelled, given, workers=self.workers
            )
        write_report(report, staging.dir / self.report_name)
        staging.commit()
        timing = self._timing(t0, t_read, t_convert, n_objects)
        kept = report["counts"]["boxes_kept"]
        log.info(
            "mined %d objects: %d measurements, %d boxes kept (%.1f objects/s)", n_objects, len(ms), kept, timing["objects_per_s"] or 0
        )
        return {"report": report, "datalist": {k: [it.to_dict() for it in v] for k, v in datalist.items()}, "timing": timing}

    def settings(self) -> dict[str, Any]:
        """What a merge needs to resolve, split and report the shards' readings as this miner would (split file by content)."""
        given = dict(self.split_file) if isinstance(self.split_file, dict) else load_split(self.split_file)
        return {
            "source_kind": self.source.kind,
            "date_from": self.date_from,
            "date_to": self.date_to,
            "series_rules": asdict(self.series_rules),
            "box_rules": asdict(self.box_rules),
            "overlay_rules": asdict(self.overlay_rules),
            "split_file": given,
            "split_seed": self.split_seed,
            "datalist_name": self.datalist_name,
            "report_name": self.report_name,
            "convert": self.convert,
            "volumes": self.volumes,
            "volumes_datalist_name": self.volumes_datalist_name,
            "unlabelled": self.unlabelled,
        }

    def _volumes(self, datalist: dict[str, list[DatalistItem]], images: dict[str, ImageInfo], staging: Staging) -> dict[str, Any]:
        """The whole-series datalist beside the key-slice one (bundle/mining/volumes.py); what did not stack is reported."""
        vols, issues = series_volumes(
            datalist, images, self.source, staging.dir, self.workers, self.progress, self.convert, done=staging.reuse
        )
        for i in issues:
            i.source = staging.final_path(i.source)
        if self.shard_count == 1:
            write_datalist(vols, staging.dir / self.volumes_datalist_name)
        return {
            "datalist": self.volumes_datalist_name,
            "series": {k: len(v) for k, v in vols.items()},
            "not_converted": [i.to_dict() for i in issues],
        }

    def _timing(self, t0: float, t_read: float, t_convert: float, n_objects: int) -> dict[str, Any]:
        timing = {
            "read_s": round(t_read, 3),
            "convert_s": round(t_convert, 3),
            "total_s": round(time.perf_counter() - t0, 3),
            "objects_per_s": round(n_objects / t_read, 1) if t_read > 0 else None,
            "workers": self.workers,
        }
        atomic_write_text(self.output_dir / "mining_timing.json", json.dumps(timing, indent=1))
        return timing
