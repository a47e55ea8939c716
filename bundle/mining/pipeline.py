"""The mining pipeline: source -> readers -> resolve references -> boxes -> slices -> datalist + report.

Why one class: `configs/mine.yaml` instantiates `Miner` with every knob overridable and calls `run()`.
Order of checks for a measurement (the first failing one is its reason): date range, reference found,
PixelSpacing present, series rules, size rule, duplicate. Output order is deterministic (sorted by
source location, then position inside the object), so running twice gives identical files.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from bundle.io.dicom import GSPS_CLASSES, SR_CLASSES, UnreadableError, image_info, is_image, read_dataset
from bundle.io.png import PNG_IMAGE
from bundle.io.records import REASONS, FileIssue, ImageInfo, Measurement
from bundle.mining.readers.aim import looks_like_xml, read_aim
from bundle.mining.readers.overlay import OverlayRules, overlay_groups, read_overlays
from bundle.mining.report import write_report
from bundle.mining.rules.boxes import BoxRules, iou, measurement_box, size_rule
from bundle.mining.rules.series import SeriesRules, check_series, normal_of

log = logging.getLogger("bundle.mining")


def inspect_object(raw: bytes, location: str, overlay_rules: OverlayRules | None = None) -> dict[str, Any]:
    """Read one object and run the reader that fits it. Never raises: failures come back as issues."""
    from bundle.mining.readers.gsps import read_gsps
    from bundle.mining.readers.sr import read_sr

    res: dict[str, Any] = {"location": location, "issue": None, "image": None, "measurements": [], "object": None}
    if looks_like_xml(raw):
        try:
            ms = read_aim(raw, location)
        except UnreadableError as exc:
            res["issue"] = FileIssue(location, exc.reason, exc.detail).to_dict()
            return res
        except Exception as exc:  # noqa: BLE001 - a reader bug on one document must not stop the run
            res["issue"] = FileIssue(location, "malformed_xml", f"AIM reader failed: {type(exc).__name__}: {exc}").to_dict()
            return res
        res["object"] = "aim"
        res["measurements"] = [m.to_dict() for m in ms]
        return res
    try:
        ds = read_dataset(raw)
    except UnreadableError as exc:
        res["issue"] = FileIssue(location, exc.reason, exc.detail).to_dict()
        return res
    sop_class = str(ds.SOPClassUID)
    res["object"] = "image" if is_image(ds) else "gsps" if sop_class in GSPS_CLASSES else "sr" if sop_class in SR_CLASSES else "other"
    try:
        if res["object"] == "gsps":
            ms = read_gsps(ds, location)
        elif res["object"] == "sr":
            ms = read_sr(ds, location)
        elif res["object"] == "image":
            info = image_info(ds, location)
            res["image"] = info.to_dict()
            ms = read_overlays(ds, location, info.spacing, overlay_rules) if overlay_groups(ds) else []
            if ms:
                res["object"] = "overlay"
        else:
            res["issue"] = FileIssue(
                location, "unsupported_object", f"SOP class {sop_class} has no reader", str(ds.SOPInstanceUID)
            ).to_dict()
            return res
    except Exception as exc:  # noqa: BLE001 - a reader bug on one object must not stop the run
        res["issue"] = FileIssue(
            location, "corrupt", f"{res['object']} reader failed: {type(exc).__name__}: {exc}", str(ds.SOPInstanceUID)
        ).to_dict()
        return res
    for m in ms:
        m.extra["study_date"] = str(ds.get("StudyDate", ""))
    res["measurements"] = [m.to_dict() for m in ms]
    return res


def _inspect_path(args: tuple[str, str, OverlayRules]) -> dict[str, Any]:
    root, location, rules = args
    return inspect_object((Path(root) / location).read_bytes(), location, rules)


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="obj", mininterval=1.0)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "unknown"


def load_split(path: str | Path | None) -> dict[str, str]:
    """Patient -> split from a JSON mapping, a demo truth.json / simulator record.json ('split' key)."""
    if not path:
        return {}
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict) and isinstance(data.get("split"), dict):
        data = data["split"]
    return {str(k): str(v) for k, v in data.items()}


class Miner:
    """Mine a folder export or a DICOMweb server into a detection datalist plus a mining report."""

    def __init__(
        self,
        output_dir: str,
        source: str | None = None,
        dicomweb_url: str | None = None,
        deeplesion_csv: str | None = None,
        deeplesion_images: str | None = None,
        date_from: str | None = None,
        date_to: str | None = None,
        series_rules: dict | None = None,
        box_rules: dict | None = None,
        overlay_rules: dict | None = None,
        split_file: str | None = None,
        split_seed: int = 0,
        workers: int = 2,
        convert: bool = True,
        progress: bool = True,
        datalist_name: str = "datalist.json",
        report_name: str = "mining_report",
    ):
        if sum(map(bool, (source, dicomweb_url, deeplesion_csv))) != 1:
            raise ValueError("give exactly one of source (a folder), dicomweb_url or deeplesion_csv (with deeplesion_images)")
        if bool(deeplesion_csv) != bool(deeplesion_images):
            raise ValueError("deeplesion_csv and deeplesion_images (the Images_png folder) go together")
        self.output_dir = Path(output_dir)
        self.source_path, self.dicomweb_url = source, dicomweb_url
        self.deeplesion_csv, self.deeplesion_images = deeplesion_csv, deeplesion_images
        self.date_from, self.date_to = (str(date_from) if date_from else None), (str(date_to) if date_to else None)
        self.series_rules = SeriesRules(**(series_rules or {}))
        self.box_rules = BoxRules(**(box_rules or {}))
        self.overlay_rules = OverlayRules(**(overlay_rules or {}))
        self.split_file, self.split_seed = split_file, split_seed
        self.workers, self.convert, self.progress = workers, convert, progress
        self.datalist_name, self.report_name = datalist_name, report_name
        self._source = None

    # -- collection ---------------------------------------------------------------------------
    def _collect(self) -> list[dict[str, Any]]:
        if self.deeplesion_csv:
            from bundle.pacs.deeplesion import DeepLesionSource

            self._source = DeepLesionSource(self.deeplesion_csv, self.deeplesion_images)
            return self._source.collect(self.workers, self.progress)
        if self.source_path:
            from bundle.pacs.folder import FolderSource

            src = FolderSource(self.source_path)
            self._source = src
            locs = src.locations()
            jobs = [(str(src.root), loc, self.overlay_rules) for loc in locs]
            if self.workers > 1:
                with ProcessPoolExecutor(self.workers) as pool:
                    return list(_progress(pool.map(_inspect_path, jobs, chunksize=8), len(jobs), "mining", self.progress))
            return [_inspect_path(j) for j in _progress(jobs, len(jobs), "mining", self.progress)]
        from bundle.pacs.dicomweb import DICOMwebSource

        src = DICOMwebSource(self.dicomweb_url, self.date_from, self.date_to, self.series_rules.modalities)
        self._source = src
        return src.collect(self.overlay_rules, self.workers, self.progress)

    # -- resolution ---------------------------------------------------------------------------
    def _in_date_range(self, date: str) -> bool:
        d = date[:8]
        if not d:
            return self.date_from is None and self.date_to is None
        return (self.date_from is None or d >= self.date_from) and (self.date_to is None or d <= self.date_to)

    def _plane_image(self, m: Measurement, images: dict[str, ImageInfo]) -> ImageInfo | None:
        """SCOORD3D: the image of the frame of reference whose plane holds the points (selected series first)."""
        pts = np.asarray(m.points_3d, dtype=np.float64)
        best = []
        for info in images.values():
            if (
                info.frame_of_reference_uid != m.frame_of_reference_uid
                or info.orientation is None
                or info.position is None
                or info.spacing is None
            ):
                continue
            n = normal_of(info.orientation)
            dist = np.abs((pts - np.asarray(info.position)) @ n)
            tol = (info.slice_thickness or 1.0) / 2
            if dist.max() <= tol:
                best.append((check_series(info, self.series_rules) is not None, float(dist.max()), info.location, info))
        if not best:
            return None
        info = sorted(best, key=lambda t: t[:3])[0][3]
        o = np.asarray(info.orientation)
        rel = pts - np.asarray(info.position)
        col = rel @ o[:3] / info.spacing[0] + 0.5
        row = rel @ o[3:] / info.spacing[1] + 0.5
        m.points = np.round(np.stack([col, row], 1), 4).tolist()
        m.referenced_sop_instance_uid = info.sop_instance_uid
        return info

    def _resolve(self, ms: list[Measurement], images: dict[str, ImageInfo]) -> None:
        for m in ms:
            if m.status != "pending":
                continue
            if not self._in_date_range(m.extra.get("study_date", "") or m.date):
                m.exclude("out_of_date_range", f"study date {m.extra.get('study_date')}")
                continue
            if m.units == "SCOORD3D":
                info = self._plane_image(m, images)
                if info is None:
                    m.exclude("no_image_plane", f"{m.item}: frame of reference {m.frame_of_reference_uid}")
                    continue
            info = images.get(m.referenced_sop_instance_uid)
            if info is None:
                m.exclude("reference_not_found", f"{m.item}: image {m.referenced_sop_instance_uid}")
                continue
            m.referenced_series_uid = info.series_uid
            if info.spacing is None:
                m.exclude("missing_pixel_spacing", f"{m.item}: image {info.location} has no PixelSpacing")
                continue
            m.spacing = info.spacing
            # DeepLesion key slices carry no series attributes (modality, description, orientation): no series rules
            failed = None if info.sop_class_uid == PNG_IMAGE else check_series(info, self.series_rules)
            if failed:
                m.exclude(failed[0], f"{m.item}: {failed[1]}")
                continue
            m.box, length = measurement_box(m, self.box_rules, shape=(info.columns, info.rows))
            m.long_mm = round(length, 3)
            reason = size_rule(length, self.box_rules)
            if reason:
                m.exclude(
                    reason, f"{m.item}: long axis {length:.1f} mm outside [{self.box_rules.min_long_mm}, {self.box_rules.max_long_mm}]"
                )
                continue
            m.status = "kept"
            m.rule = f"{m.kind} -> box ({self.box_rules.recist_rule if m.kind == 'recist' else m.kind} rule), {self.box_rules.min_long_mm} <= {length:.1f} mm <= {self.box_rules.max_long_mm}"
        # duplicates: on one image, the earliest measurement wins; later ones overlapping it are merged away
        by_image: dict[tuple[str, int], list[Measurement]] = {}
        for m in ms:
            if m.status == "kept":
                by_image.setdefault((m.referenced_sop_instance_uid, m.referenced_frame), []).append(m)
        for group in by_image.values():
            kept: list[Measurement] = []
            for m in sorted(group, key=lambda x: (x.date, x.sop_instance_uid, x.extra.get("row", 0), x.item)):
                twin = next((k for k in kept if iou(k.box, m.box) >= self.box_rules.duplicate_iou), None)
                if twin is not None:
                    m.exclude("duplicate", f"{m.item}: IoU {iou(twin.box, m.box):.2f} with {twin.source} {twin.item} (earlier)")
                    twin.extra.setdefault("merged", []).append(
                        {"source": m.source, "sop_instance_uid": m.sop_instance_uid, "operator": m.operator, "date": m.date}
                    )
                else:
                    kept.append(m)

    # -- outputs ------------------------------------------------------------------------------
    def _convert(self, items: list[dict], images: dict[str, ImageInfo]) -> None:
        from bundle.io.nifti import write_dicom_slice, write_png_slice

        def one(item: dict) -> None:
            info = images[item["sop_instance_uid"]]
            if info.sop_class_uid == PNG_IMAGE:
                write_png_slice(self._source.root / info.location, self.output_dir / item["image"], info.spacing, info.slice_thickness)
                return
            ds = read_dataset(self._source.read_bytes(info.location))
            write_dicom_slice(ds, self.output_dir / item["image"], info.spacing, item["frame"])

        with ThreadPoolExecutor(max(1, self.workers)) as pool:
            list(_progress(pool.map(one, items), len(items), "converting", self.progress))

    def run(self) -> dict[str, Any]:
        from bundle.datalist.split import split_patients

        t0 = time.perf_counter()
        results = self._collect()
        t_read = time.perf_counter() - t0
        images: dict[str, ImageInfo] = {}
        ms: list[Measurement] = []
        issues: list[FileIssue] = []
        objects = Counter()
        for r in results:
            if r["issue"]:
                issues.append(FileIssue(**r["issue"]))
            if r["object"]:
                objects[r["object"]] += 1
            if r["image"]:
                images.setdefault(r["image"]["sop_instance_uid"], ImageInfo(**r["image"]))
            ms.extend(Measurement(**d) for d in r["measurements"])
        self._resolve(ms, images)
        kept = [m for m in ms if m.status == "kept"]
        # datalist items: one per referenced image (frame), boxes in a stable order
        per_image: dict[tuple[str, int], list[Measurement]] = {}
        for m in kept:
            per_image.setdefault((m.referenced_sop_instance_uid, m.referenced_frame), []).append(m)
        split_map = load_split(self.split_file)
        # DeepLesion: the CSV's own Train_Val_Test (patient-level) unless a split file is given
        csv_split: dict[str, str] = {}
        if not split_map:
            for m in ms:
                if m.extra.get("split"):
                    csv_split.setdefault(m.patient_id, m.extra["split"])
        patients = sorted({images[s].patient_id for s, _ in per_image})
        missing = [p for p in patients if p not in split_map and p not in csv_split]
        computed = split_patients(missing, self.split_seed) if missing else {}
        datalist: dict[str, list] = {"training": [], "validation": [], "test": []}
        items = []
        for (sop, frame), group in per_image.items():
            info = images[sop]
            group.sort(key=lambda x: (x.box[0], x.box[1], x.source, x.item))
            pid = info.patient_id
            stem = _safe(sop.removesuffix(".png")) if info.sop_class_uid == PNG_IMAGE else _safe(sop)
            rel = f"images/{_safe(pid)}/{stem}" + (f"_f{frame}" if info.frames > 1 else "") + ".nii.gz"
            items.append(
                {
                    "image": rel,
                    "box": [m.box for m in group],
                    "label": [0 for _ in group],
                    "patient": pid,
                    "split_source": "split_file" if pid in split_map else "csv" if pid in csv_split else "computed",
                    "study_instance_uid": info.study_uid,
                    "series_instance_uid": info.series_uid,
                    "sop_instance_uid": sop,
                    "frame": frame,
                    "instance_number": info.instance_number,
                    "spacing": info.spacing,
                    "long_mm": [m.long_mm for m in group],
                    "z_half_extent_slices": [
                        round(m.long_mm / 2 / info.slice_thickness, 3) if info.slice_thickness else None for m in group
                    ],
                    "provenance": [
                        {
                            "source": m.source,
                            "sop_instance_uid": m.sop_instance_uid,
                            "referenced_sop_instance_uid": m.referenced_sop_instance_uid,
                            "referenced_frame": m.referenced_frame,
                            "reader": m.reader,
                            "operator": m.operator,
                            "date": m.date,
                            "kind": m.kind,
                            "item": m.item,
                            "points": m.points,
                            "rule": m.rule,
                            "merged": m.extra.get("merged", []),
                            **m.extra.get("provenance", {}),
                        }
                        for m in group
                    ],
                }
            )
        items.sort(key=lambda it: (it["patient"], it["series_instance_uid"], it["instance_number"], it["sop_instance_uid"], it["frame"]))
        for it in items:
            datalist[split_map.get(it["patient"]) or csv_split.get(it["patient"]) or computed[it["patient"]]].append(it)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        t1 = time.perf_counter()
        if self.convert:
            self._convert(items, images)
        t_convert = time.perf_counter() - t1
        (self.output_dir / self.datalist_name).write_text(json.dumps(datalist, indent=1))
        n_objects = sum(objects.values())
        report = {
            "source": {"kind": "deeplesion" if self.deeplesion_csv else "folder" if self.source_path else "dicomweb"},
            "date_range": [self.date_from, self.date_to],
            "rules": {
                "series": "not applied (DeepLesion CSV: no series attributes)" if self.deeplesion_csv else asdict(self.series_rules),
                "boxes": asdict(self.box_rules),
                "overlay": asdict(self.overlay_rules),
            },
            "counts": {
                "files_seen": len(results),
                "objects_read": n_objects,
                "objects_by_type": dict(sorted(objects.items())),
                "images_indexed": len(images),
                "unreadable_or_unsupported_files": len(issues),
                "measurements_found": len(ms),
                "boxes_kept": len(kept),
                "images_in_datalist": len(items),
                "patients_in_datalist": len(patients),
                "split_items": {k: len(v) for k, v in datalist.items()},
                "split_sources": dict(sorted(Counter(it["split_source"] for it in items).items())),
                "split_boxes": {k: sum(len(it["box"]) for it in v) for k, v in datalist.items()},
            },
            "exclusions": dict(sorted(Counter([i.reason for i in issues] + [m.status for m in ms if m.status != "kept"]).items())),
            "per_source": {},
            "reasons": {k: REASONS[k] for k in REASONS},
            "file_issues": [i.to_dict() for i in issues],
            "excluded_measurements": [
                {
                    k: m.to_dict()[k]
                    for k in (
                        "source",
                        "sop_instance_uid",
                        "item",
                        "reader",
                        "kind",
                        "referenced_sop_instance_uid",
                        "long_mm",
                        "status",
                        "detail",
                    )
                }
                for m in ms
                if m.status != "kept"
            ],
        }
        for reader in sorted({m.reader for m in ms}):
            sel = [m for m in ms if m.reader == reader]
            report["per_source"][reader] = {
                "measurements_found": len(sel),
                "boxes_kept": sum(m.status == "kept" for m in sel),
                "exclusions": dict(sorted(Counter(m.status for m in sel if m.status != "kept").items())),
            }
        write_report(report, self.output_dir / self.report_name)
        elapsed = time.perf_counter() - t0
        timing = {
            "read_s": round(t_read, 3),
            "convert_s": round(t_convert, 3),
            "total_s": round(elapsed, 3),
            "objects_per_s": round(n_objects / t_read, 1) if t_read > 0 else None,
            "workers": self.workers,
        }
        (self.output_dir / "mining_timing.json").write_text(json.dumps(timing, indent=1))
        log.info(
            "mined %d objects: %d measurements, %d boxes kept (%.1f objects/s)", n_objects, len(ms), len(kept), timing["objects_per_s"] or 0
        )
        return {"report": report, "datalist": datalist, "timing": timing}
