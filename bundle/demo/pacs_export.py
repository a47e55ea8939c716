"""PACS-export simulator: the demo patients as real DICOM plus the annotations a clinic leaves behind.

Why: mining must be tested against complete truth. A real PACS never says which lesions a reader
skipped; this export does. Each demo patient becomes an MR study (axial T1 post-contrast series, an
axial FLAIR series) whose pixels are exactly the demo volume (`pixel_array.T == vol[:, :, z]`), and
readers' marks as GSPS (POLYLINE rulers, RECIST pairs, PIXEL or DISPLAY units) and DICOM SR TID 1500
(SCOORD POLYLINE/ELLIPSE, SCOORD3D). Only 1-3 lesions per study are measured, as a clinic's readers do
(ExportConfig, defaults): endpoint noise of 10% of the line, sometimes not the largest lesion, sometimes on a
slice near the largest cross-section, and on 30% of studies a second reader the next day, whose marks of
a lesion already measured on the same image mining must merge as duplicates; incidents a real export contains are spread round-robin over the patients so even a
4-patient export has each: measurements on another series, too small / too large rulers, duplicates by a
second reader, a truncated file, a non-DICOM file, an SR group pointing at a segmentation, a reference to
a deleted image, an image without PixelSpacing, a POINT marker and a Key Object Selection document.

`record.json` keeps, per patient, which demo lesions were measured, by whom, on which slice, how, and the
status a correct miner must give each mark (kept with its box, or the exclusion reason, "duplicate" included). Names and IDs are
obviously synthetic (no PHI).

This module is the driver (which patient gets which incident, the record); the clinic it drives is
bundle/demo/clinic/ (images, readers, GSPS, SR, incidents), over the shared writers in bundle/io/dicom_write.py.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from bundle.demo.clinic.config import INCIDENTS, ExportConfig
from bundle.demo.clinic.incidents import SIMULATE
from bundle.demo.clinic.patient import PatientExport
from bundle.demo.clinic.readers import measure_primary, measure_second
from bundle.demo.clinic.study import ClinicStudy
from bundle.mining.rules.boxes import BoxRules

__all__ = ["INCIDENTS", "ExportConfig", "export", "export_patient", "main"]


def study_date(cfg: ExportConfig, number: int) -> str:
    """Patient ``number`` is scanned one week after the one before it."""
    d = cfg.first_study_date
    return (_dt.date.fromisoformat(f"{d[:4]}-{d[4:6]}-{d[6:]}") + _dt.timedelta(days=7 * number)).strftime("%Y%m%d")


def export_patient(
    out: Path, demo_dir: Path, patient: dict, number: int, incidents: list[str], cfg: ExportConfig, rules: BoxRules, seed: int
) -> dict:
    """Write one patient's study and annotation objects; return its record."""
    rng = np.random.default_rng([seed, 7919, number])
    img = nib.load(demo_dir / patient["image"])
    vol = np.asarray(img.dataobj).astype(np.int16)
    mask = np.asarray(nib.load(demo_dir / patient["mask"]).dataobj)
    date = study_date(cfg, number)
    study = ClinicStudy(patient, vol, img.affine, date, number)
    w = PatientExport(out, study, mask, cfg, rng, rules)
    w.write_series("t1c")
    w.write_series("flair")
    lesions = sorted(patient["lesions"], key=lambda les: (-les["diameter_mm"], les["index"]))
    n_measure = min(len(lesions), int(rng.integers(1, cfg.max_measured + 1)))
    # an unread study (cfg.p_unread, own random stream; never one that carries an incident): images only
    unread = bool(lesions) and not incidents and np.random.default_rng([seed, 7919, number, 3]).random() < cfg.p_unread
    measured = [] if unread else measure_primary(w, lesions, n_measure)
    for inc in incidents if measured else []:  # a normal study has images only
        SIMULATE[inc](w, measured)
    second = [] if unread else measure_second(w, np.random.default_rng([seed, 7919, number, 2]), lesions, measured)
    for rec in measured + second:
        rec.pop("clean_lines", None)
    seen = {r["lesion"] for r in measured + second}

    def summary(recs: list[dict]) -> list[dict]:
        keys = ("lesion", "slice", "largest_slice", "status", "operator")
        return [{k: r[k] for k in keys} for r in recs]

    return {
        "patient": study.pid,
        "study_date": date,
        "study_instance_uid": study.study_uid,
        "measured_lesions": summary(measured),
        "second_reader_lesions": summary(second),
        "unmeasured_lesions": [les["index"] for les in lesions if les["index"] not in seen],
        "unread": unread,
        "incidents": incidents,
        "marks": w.marks,
        "files": w.files,
    }


def _export_job(job: tuple) -> dict:
    return export_patient(*job)


def export(
    demo_dir: str | Path,
    out_dir: str | Path,
    seed: int = 0,
    config: ExportConfig | None = None,
    rules: BoxRules | None = None,
    splits: tuple[str, ...] | None = None,
    workers: int = 2,
) -> dict:
    """Write the simulated PACS export of a demo set under `out_dir/dicom` and its record as `out_dir/record.json`.

    splits: export only the patients of these demo splits (None: all). The demo keeps its test
    cohort out of the PACS: like the seed study's 100 test patients, it is a separately, fully
    labelled set, and its mined boxes would be thrown away anyway.
    """
    demo, out = Path(demo_dir), Path(out_dir)
    cfg, rules = config or ExportConfig(), rules or BoxRules()
    truth = json.loads((demo / "truth.json").read_text())
    split = truth.get("split", {})
    # a patient keeps its number (study date, UIDs, random stream) whichever splits are exported
    numbered = [(i, p) for i, p in enumerate(truth["patients"]) if splits is None or split.get(p["patient_id"]) in splits]
    per_patient: dict[int, list[str]] = {i: [] for i, _ in numbered}
    # incidents go round-robin over patients with lesions: most need a measured lesion to act on
    with_lesions = [i for i, p in numbered if p["lesions"]]
    if not with_lesions:
        raise ValueError(f"{demo / 'truth.json'}: no exported patient has a lesion; nothing for a reader to measure")
    for k, inc in enumerate(INCIDENTS):
        per_patient[with_lesions[k % len(with_lesions)]].append(inc)
    jobs = [(out / "dicom", demo, p, i, per_patient[i], cfg, rules, seed) for i, p in numbered]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            records = pool.map(_export_job, jobs)  # ordered, and each patient has its own seed: same bytes as serial
    else:
        records = [_export_job(j) for j in jobs]
    marks = [m for r in records for m in r["marks"]]
    file_issues = [f for r in records for f in r["files"] if "expected" in f]
    expected: dict[str, int] = {}
    for m in marks:
        expected[m["status"]] = expected.get(m["status"], 0) + 1
    for f in file_issues:
        if f["expected"] != "corrupt":  # a corrupt file's mark is already counted above
            expected[f["expected"]] = expected.get(f["expected"], 0) + 1
    record = {
        "demo_dir": str(demo),
        "seed": seed,
        "config": cfg.__dict__,
        "rules": rules.__dict__,
        "split": split,
        "splits_exported": list(splits) if splits is not None else "all",
        "patients": records,
        "expected_counts": dict(sorted(expected.items())),
        "note": "status 'kept' marks must be mined as boxes (IoU >= 0.9 with 'box'); every other status is the exclusion reason",
    }
    (out / "record.json").write_text(json.dumps(record, indent=1))
    return record


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", required=True, help="demo folder written by bundle.demo.synth.generate")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-measured", type=int, default=3)
    a = ap.parse_args(argv)
    rec = export(a.demo, a.out, a.seed, ExportConfig(max_measured=a.max_measured))
    print(json.dumps(rec["expected_counts"]))


if __name__ == "__main__":
    main()
