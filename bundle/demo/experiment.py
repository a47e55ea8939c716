"""Datalists for the seed study's experiment on the demo data: mined-only, self-trained, oracle.

Why here: the demo knows what a hospital never knows, every lesion on every image. This module
turns the mined datalist (pseudonymised patients, converted slices) back into demo coordinates
through the de-identification linkage table and the slice number, so the oracle can train on
complete boxes of the very same images and the pseudo-boxes can be scored.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from bundle.datalist.schema import PER_BOX
from bundle.datalist.sections import absolute_datalist
from bundle.demo.synth import slice_boxes


def load_linkage(path: str | Path | None) -> dict[str, str]:
    """Pseudonym -> original patient id (identity when the export was not de-identified)."""
    if not path:
        return {}
    with open(path, newline="") as f:
        return {row["pseudonym"]: row["patient_id"] for row in csv.DictReader(f)}


def split_by_pseudonym(split: dict[str, str], to_demo: dict[str, str]) -> dict[str, str]:
    """The demo's patient split keyed by pseudonym: mining sees only de-identified patients, the split file must too."""
    return {p: split[o] for p, o in to_demo.items()}


def complete_boxes(demo_dir: Path, truth: dict, patient: str, z: int, min_visible_mm: float) -> list[list[int]]:
    """Every lesion cross-section on slice z of a demo patient (the oracle's labels)."""
    p = next(p for p in truth["patients"] if p["patient_id"] == patient)
    mask = np.asarray(nib.load(demo_dir / p["mask"]).dataobj)[:, :, z]
    return [b for _, b in slice_boxes(mask, tuple(p["spacing"][:2]), min_visible_mm)]


def build(
    demo_dir: str | Path,
    mined_datalist: str | Path,
    out_dir: str | Path,
    linkage: str | Path | None = None,
    min_visible_mm: float = 5.0,
) -> dict[str, str]:
    """Write mined.json, oracle.json and truth_map.json; validation and test are the demo's complete truth.

    Validation is fully annotated on purpose: a mined validation set would count every correct
    detection of an unmeasured lesion as a false positive and so penalise exactly what
    self-training adds. A team gets the same by fully labelling a small validation set.
    """
    demo, out = Path(demo_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth = json.loads((demo / "truth.json").read_text())
    demo_dl = absolute_datalist(demo / "datalist.json")
    mined = absolute_datalist(mined_datalist)
    to_demo = load_linkage(linkage)
    unknown = sorted({it["patient"] for it in mined["training"] if to_demo.get(it["patient"], it["patient"]) not in truth["split"]})
    if unknown:
        raise ValueError(f"{mined_datalist}: patients {unknown[:3]} are neither demo patients nor in the linkage table {linkage}")
    # mined validation/test patients stay out of training; evaluation uses the demo's complete truth
    training = []
    oracle_training = []
    truth_map: dict[str, list] = {}
    for it in mined["training"]:
        patient = to_demo.get(it["patient"], it["patient"])
        if truth["split"][patient] != "training":
            raise ValueError(f"{it['image']}: patient {patient} is in the demo's {truth['split'][patient]} split, not training")
        full = complete_boxes(demo, truth, patient, int(it["instance_number"]) - 1, min_visible_mm)
        truth_map[it["image"]] = full
        training.append(it)
        # the mined per-box fields (provenance, long_mm, ...) describe the mined boxes, not the oracle's: dropped
        image_fields = {k: v for k, v in it.items() if k not in PER_BOX}
        oracle_training.append(image_fields | {"box": full, "label": [0] * len(full), "box_source": ["oracle"] * len(full)})
    sections = {"validation": demo_dl["validation"], "test": demo_dl["test"]}
    paths = {}
    for name, tr in (("mined", training), ("oracle", oracle_training)):
        p = out / f"{name}.json"
        p.write_text(json.dumps({"training": tr} | sections, indent=1))
        paths[name] = str(p)
    (out / "truth_map.json").write_text(json.dumps(truth_map, indent=1))
    paths["truth_map"] = str(out / "truth_map.json")
    n_mined = sum(len(i["box"]) for i in training)
    n_full = sum(len(b) for b in truth_map.values())
    paths["counts"] = {"training_images": len(training), "mined_boxes": n_mined, "complete_boxes": n_full}
    return paths


def slice_truth(demo_dir: Path, patient: dict, min_visible_mm: float) -> list[list[int]]:
    """Every lesion cross-section of a demo volume as a one-slice 3D box [x0, y0, z, x1, y1, z + 1]."""
    mask = np.asarray(nib.load(demo_dir / patient["mask"]).dataobj)
    out = []
    for z in range(mask.shape[2]):
        if mask[:, :, z].any():
            out += [
                [b[0], b[1], z, b[2], b[3], z + 1] for _, b in slice_boxes(mask[:, :, z], tuple(patient["spacing"][:2]), min_visible_mm)
            ]
    return out


def build_series(
    demo_dir: str | Path,
    mined_volumes: str | Path,
    out_dir: str | Path,
    linkage: str | Path | None = None,
    min_visible_mm: float = 5.0,
) -> dict[str, str]:
    """Whole-series datalists: series_mined.json (mined volumes, mined boxes on their key slices) and
    series_oracle.json (the same volumes, every lesion cross-section boxed); validation and test are the demo's
    volumes with every cross-section boxed (what training-time validation samples its slices from).
    """
    demo, out = Path(demo_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth = json.loads((demo / "truth.json").read_text())
    by_id = {p["patient_id"]: p for p in truth["patients"]}
    mined = absolute_datalist(mined_volumes)
    to_demo = load_linkage(linkage)

    def truth_item(p: dict) -> dict:
        boxes = slice_truth(demo, p, min_visible_mm)
        return {
            "image": str(demo / p["image"]),
            "box": boxes,
            "label": [0] * len(boxes),
            "patient": p["patient_id"],
            "spacing": p["spacing"],
        }

    sections = {s: [truth_item(p) for p in truth["patients"] if truth["split"][p["patient_id"]] == s] for s in ("validation", "test")}
    training, oracle = [], []
    for it in mined["training"]:
        patient = to_demo.get(it["patient"], it["patient"])
        if truth["split"].get(patient) != "training":
            raise ValueError(f"{it['image']}: patient {patient} is not a training patient of the demo")
        training.append(it)
        full = slice_truth(demo, by_id[patient], min_visible_mm)
        image_fields = {k: v for k, v in it.items() if k not in PER_BOX}
        oracle.append(image_fields | {"box": full, "label": [0] * len(full), "box_source": ["oracle"] * len(full)})
    paths = {}
    truth_map = {it["image"]: o["box"] for it, o in zip(training, oracle)}
    (out / "series_truth_map.json").write_text(json.dumps(truth_map))
    paths["series_truth_map"] = str(out / "series_truth_map.json")
    for name, tr in (("series_mined", training), ("series_oracle", oracle)):
        p = out / f"{name}.json"
        p.write_text(json.dumps({"training": tr} | sections, indent=1))
        paths[name] = str(p)
    return paths
