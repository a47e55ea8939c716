"""A study a radiologist reviewed in MONAI Label (3D Slicer) becomes a complete training item.

Why: mined labels are incomplete (a reader measures one or two lesions), so training keeps an ignore region
around each measured lesion's reach and never calls the rest of the series background with certainty.
After a review the reader has kept, corrected or drawn every box: the boxes are positives over their whole
3D extent and every other voxel of the series is background. The item therefore carries no
``z_half_extent_slices`` and no ``ignore_box`` (bundle/transforms/slices.py then adds no ignore regions), and
it replaces the mined item of the same series, whose labels it completes.

MONAI Label saves a review as Slicer's markups JSON (``{"markups": [{"type": "ROI", "coordinateSystem":
"LPS", "center": [...], "size": [...]}]}``) under ``<studies>/labels/final/<image id>.json``; boxes leave
here in the datalist's convention (array ``xyzxyz`` of the image as stored).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bundle.datalist.schema import read_datalist, write_datalist
from bundle.transforms.world import world_to_voxel


def markup_boxes(markups: dict, source: str = "label") -> np.ndarray:
    """World LPS ``cccwhd`` boxes of a markups document's ROIs (Slicer writes LPS; RAS is converted)."""
    boxes = []
    for i, m in enumerate(markups.get("markups", [])):
        if m.get("type", "ROI") != "ROI":
            continue
        if "center" not in m or "size" not in m:
            raise ValueError(f"{source}: markup {i} has no center/size")
        c, s = np.asarray(m["center"], float), np.asarray(m["size"], float)
        if m.get("coordinateSystem", "LPS").upper() == "RAS":
            c = c * [-1, -1, 1]
        boxes.append([*c, *np.abs(s)])
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 6)


def reviewed_item(image: Path, label: Path, image_ref: str | None = None, patient: str | None = None, reader: str = "") -> dict[str, Any]:
    """The complete datalist item of one reviewed volume: every reviewed box positive, nothing ignored."""
    img = nib.load(str(image))
    vox = world_to_voxel(markup_boxes(json.loads(Path(label).read_text()), str(label)), img.affine)
    shape = np.asarray(img.shape[:3], dtype=float)
    vox = np.clip(vox, 0, np.concatenate([shape, shape]))  # a box drawn past the volume's edge ends at it
    zooms = [round(float(z), 6) for z in img.header.get_zooms()[:3]]
    return {
        "image": image_ref or str(image),
        "box": [[round(float(v), 3) for v in b] for b in vox],
        "label": [0] * len(vox),
        "patient": patient or Path(label).stem,
        "spacing": zooms,
        "n_slices": int(shape[2]),
        "review": "complete",  # every lesion boxed: the rest of the series is background, not ignore
        "provenance": [{"source": str(Path(label).name), "reader": reader, "kind": "review", "rule": "reviewed: complete labels"}]
        * len(vox),
    }


def add_reviewed(datalist: Path, reviewed: list[dict[str, Any]], out: Path, match_key: str = "image") -> dict[str, int]:
    """Write ``out``: the mined volume datalist with the reviewed items in training, each replacing its mined item.

    A mined item is replaced when its ``match_key`` (the image path, or e.g. ``series_instance_uid``) equals the
    reviewed one's; reviewed studies of validation or test patients stay out of training (the split is by patient).
    """
    doc = read_datalist(datalist, box_mode="xyzxyz")
    held_out = {d.get("patient") for s in ("validation", "test") for d in doc.get(s, [])}
    keys = {r.get(match_key) for r in reviewed}
    before = len(doc.get("training", []))
    kept = [d for d in doc.get("training", []) if d.get(match_key) not in keys]
    added = [r for r in reviewed if r.get("patient") not in held_out]
    doc["training"] = kept + added
    write_datalist(doc, out)
    return {"mined": before, "replaced": before - len(kept), "reviewed": len(added), "held_out": len(reviewed) - len(added)}


def reviewed_studies(studies: Path, tag: str = "final") -> list[dict[str, Any]]:
    """Every study of a MONAI Label datastore folder with a saved label of ``tag``, as complete items (absolute paths)."""
    studies = Path(studies)
    items = []
    for label in sorted((studies / "labels" / tag).glob("*.json")):
        image = next((p for p in studies.iterdir() if p.is_file() and p.name.split(".")[0] == label.stem), None)
        if image is None:
            raise FileNotFoundError(f"{label}: no image '{label.stem}.*' in {studies}")
        items.append(reviewed_item(image.resolve(), label, patient=label.stem, reader=f"monailabel:{tag}"))
    return items


def add_reviewed_studies(studies: Path, datalist: Path, out: Path, tag: str = "final") -> dict[str, int]:
    """``configs/active_learning.yaml``'s run: the datastore's reviewed studies added to the mined datalist."""
    return add_reviewed(Path(datalist), reviewed_studies(studies, tag), Path(out))
