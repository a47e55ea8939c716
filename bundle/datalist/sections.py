"""A datalist section as absolute paths: the truth records evaluation scores against, and where each image's spacing is.

Why here: evaluation, self-training and the demo all read a datalist's images from wherever the
datalist lives; the path rule and the spacing rule are the datalist's, not any one caller's.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib

from bundle.datalist.schema import read_datalist


def resolved(path: str) -> str:
    """The one spelling of an image path that predictions and truth are keyed by."""
    return str(Path(path).resolve())


def absolute_datalist(path: str | Path) -> dict:
    """A datalist with absolute image (and key slices' volume) paths, so rewritten datalists can live anywhere."""
    p = Path(path)
    doc = read_datalist(p)
    for section in doc.values():
        if isinstance(section, list):
            for item in section:
                for key in ("image", "volume"):  # volume: where a key slice's neighbours are (2.5D models)
                    if isinstance(item.get(key), str):
                        item[key] = str((p.parent / item[key]).resolve())
    return doc


def load_truth(datalist_path: str | Path, key: str) -> list[dict]:
    """Datalist section as records with absolute image paths."""
    p = Path(datalist_path)
    doc = read_datalist(p)
    if key not in doc:
        raise ValueError(f"{p}: datalist has no '{key}' section (has {sorted(doc)})")
    out = []
    for r in doc[key]:
        r = dict(r)
        r["image"] = resolved(str(p.parent / r["image"]))
        out.append(r)
    return out


def spacing_of(item: dict, dims: int) -> tuple[float, ...]:
    """Pixel spacing (mm) from the item or, failing that, from the image header (header only, no pixels)."""
    if "spacing" in item:
        return tuple(float(s) for s in item["spacing"][:dims])
    zooms = nib.load(item["image"]).header.get_zooms()
    return tuple(float(z) for z in zooms[:dims])
