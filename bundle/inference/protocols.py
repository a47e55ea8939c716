"""Protocol variants: the test volumes stored as other scanners' protocols store them, with their truth in each grid.

Why: a hospital's series comes at 0.5-1 mm in-plane, 1-6 mm slices, in any stored orientation (issue 24). The
evaluation scores the same brains as such series (configs/evaluate_volume.yaml ``protocol_variants``): each volume
resampled with MONAI (``Orientationd``, ``Spacingd``; thicker slices first blurred along z so that a slice averages
its thickness, as a thick acquisition does), each truth box moved to the same world box in the variant's grid
(:func:`bundle.transforms.grid.move_boxes`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.transforms import GaussianSmooth, LoadImage, Orientation, Spacing

from bundle.datalist.sections import load_truth
from bundle.transforms.grid import move_boxes, spacing_of_affine

# name -> what changes: "spacing" (mm per RAS axis; null keeps the stored one), "axcodes" (stored orientation)
DEFAULT_VARIANTS: dict[str, dict[str, Any]] = {
    "in_plane_0.75mm": {"spacing": [0.75, 0.75, None]},
    "slices_1mm": {"spacing": [None, None, 1.0]},
    "slices_6mm": {"spacing": [None, None, 6.0]},
    "stored_SPL": {"axcodes": "SPL"},  # axes stored (z, y, x), LPS-like directions
}


def resample(img: torch.Tensor, spacing: list | None = None, axcodes: str | None = None) -> torch.Tensor:
    """(C, X, Y, Z) MetaTensor in RAS -> the variant: thick slices blurred over their thickness, resampled, reoriented."""
    out = img
    if spacing:
        have = spacing_of_affine(out.affine)
        want = np.array([h if s is None else float(s) for h, s in zip(have, spacing)])
        # a thicker slice averages its thickness: a Gaussian of that FWHM along the axes that get coarser
        sigma = [float(w / 2.355 / h) if w > h * 1.01 else 0.0 for w, h in zip(want, have)]
        if any(sigma):
            out = GaussianSmooth(sigma=sigma)(out)
        out = Spacing(pixdim=want.tolist(), mode="bilinear")(out)
    if axcodes:
        out = Orientation(axcodes=axcodes)(out)
    return out


def _stamp(source: Path, spec: Mapping) -> str:
    return hashlib.md5((source.read_text() + json.dumps(dict(spec), sort_keys=True)).encode()).hexdigest()


def write_variant(datalist_file: str | Path, out_dir: str | Path, spec: Mapping[str, Any], section: str = "test") -> Path:
    """Writes the section's volumes as the variant ``spec`` and a datalist with their truth in the new grids; returns its path.

    Reused when the datalist and the spec are unchanged (a stamp of both), written again otherwise.
    """
    src, out = Path(datalist_file), Path(out_dir)
    dl = out / "datalist_volume.json"
    stamp = _stamp(src, spec)
    if dl.is_file() and json.loads(dl.read_text()).get("stamp") == stamp:
        return dl
    out.mkdir(parents=True, exist_ok=True)
    load = LoadImage(image_only=True, ensure_channel_first=True)
    items = []
    for i, item in enumerate(load_truth(src, section)):
        img = Orientation(axcodes="RAS")(load(item["image"]))
        stored = np.asarray(nib.load(item["image"]).affine, dtype=np.float64)
        var = resample(img, spec.get("spacing"), spec.get("axcodes"))
        name = f"{i:04d}_{Path(item['image']).name.split('.')[0]}.nii.gz"
        affine = np.asarray(var.affine, dtype=np.float64)
        nib.save(nib.Nifti1Image(np.asarray(var[0], dtype=np.float32), affine), out / name)
        new = {k: v for k, v in item.items() if k not in ("image", "box", "spacing", "ignore_box")}
        new["image"] = name
        new["box"] = np.round(move_boxes(item["box"], stored, affine), 4).tolist() if len(item["box"]) else []
        if "long_mm" not in item and len(item["box"]):  # sizes from the stored grid (a reoriented variant's first axes are not in-plane)
            b, zooms = np.asarray(item["box"], dtype=np.float64).reshape(-1, 6), nib.load(item["image"]).header.get_zooms()
            new["long_mm"] = np.maximum((b[:, 3] - b[:, 0]) * zooms[0], (b[:, 4] - b[:, 1]) * zooms[1]).round(3).tolist()
        new["source_image"] = item["image"]
        items.append(new)
    dl.write_text(json.dumps({"stamp": stamp, "variant": dict(spec), "source": str(src), section: items}, indent=1))
    return dl
