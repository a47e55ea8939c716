"""The datalist item schema, as code: what mining writes and what training, self-training and evaluation read.

A datalist is a JSON object with the sections `training`, `validation` and `test` (MONAI's decathlon
layout); each item is one image (a 2D slice or a volume) with its boxes. Conventions (docs/README.md):
- `image`: path relative to the datalist's folder (or absolute);
- `box`: boxes in the image's array (voxel) coordinates, max exclusive: [x0, y0, x1, y1] for a slice
  (x = DICOM column), [x0, y0, z0, x1, y1, z1] for a volume; `label`: one integer per box, from 0;
- every other field is optional; per-box fields (`long_mm`, `provenance`, ...) have one entry per box.
- a key slice may say where it was cut from: `volume` (path, as `image`) and `slice` (its index on the last
  array axis); a 2.5D model reads the slice's neighbours there (bundle/transforms/slices.py).
Why a dataclass: one place says which fields exist, in which order they are written, and what a valid
item is, so a datalist from another site fails loudly naming the file, the item and the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bundle.io.errors import InputError, install_excepthook  # re-exported: train.yaml installs it

__all__ = ["IGNORE_LABEL", "DatalistError", "DatalistItem", "install_excepthook", "load_datalist", "read_datalist", "write_datalist"]

SECTIONS = ("training", "validation", "test")
# Training pipelines carry an item's `ignore_box` regions beside its boxes with this label (never written to a
# datalist): neither positive nor negative in the loss (bundle/networks/detector.py).
IGNORE_LABEL = -1
BOX_MODES = ("xyxy", "xyzxyz", "ccwh", "cccwhd")  # the modes validate() knows: array corners, world centre-size
PER_BOX = ("long_mm", "z_half_extent_slices", "provenance", "box_source", "box_score", "box_round")


class DatalistError(InputError):
    """A datalist that breaks the schema; the message names the file, the item and the field."""


@dataclass
class DatalistItem:
    """One image and its boxes. Fields left None are not written; `extra` keeps fields other tools added."""

    image: str | list[str]
    box: list[list[float]] | None = None  # None only in unlabelled datalists (inference input)
    label: list[int] | None = None
    patient: str | None = None
    split_source: str | None = None  # split_file | csv | computed: where the patient's split came from
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    frame: int | None = None  # 1-based frame of a multi-frame image
    instance_number: int | None = None
    spacing: list[float] | None = None  # (x mm, y mm[, z mm]) of the array axes
    long_mm: list[float] | None = None
    z_half_extent_slices: list[float | None] | None = None  # 3D option: half depth of each lesion, in slices
    provenance: list[dict[str, Any]] | None = None  # per box: source object, reader, rule that kept it, ...
    box_source: list[str] | None = None  # self-training: mined | pseudo
    box_score: list[float | None] | None = None
    box_round: list[int | None] | None = None
    ignore_box: list[list[float]] | None = None  # regions that may hold unlabelled lesions: not background in the loss
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name != "extra" and getattr(self, f.name) is not None:
                out[f.name] = getattr(self, f.name)
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "item", box_mode: str = "xyxy", labelled: bool = True) -> DatalistItem:
        """Validated item; raises DatalistError naming `where` and the field. Unlabelled items need only `image`."""
        if not isinstance(d, dict):
            raise DatalistError(f"{where}: an item must be an object, got {type(d).__name__}")
        for key in ("image", "box", "label") if labelled else ("image",):
            if key not in d:
                raise DatalistError(f"{where}: field '{key}' is missing")
        known = {f.name for f in fields(cls)} - {"extra"}
        item = cls(**{k: v for k, v in d.items() if k in known}, extra={k: v for k, v in d.items() if k not in known})
        item.validate(where, box_mode)
        return item

    def validate(self, where: str = "item", box_mode: str = "xyxy") -> None:
        """Types and shapes; corner modes (xyxy, xyzxyz) need end >= start, centre modes (ccwh, cccwhd) sizes >= 0."""
        paths = self.image if isinstance(self.image, list) else [self.image]  # a list: channels (MONAI LoadImaged)
        if not paths or not all(isinstance(v, str) and v for v in paths):
            raise DatalistError(f"{where}: field 'image' must be a non-empty path (or list of paths), got {self.image!r}")
        if self.box is None and self.label is None:
            return
        if not isinstance(self.box, list):
            raise DatalistError(f"{where}: field 'box' must be a list of boxes, got {type(self.box).__name__}")
        dims = {len(b) if isinstance(b, list | tuple) else -1 for b in self.box}
        if dims - {4, 6} or len(dims) > 1:
            raise DatalistError(f"{where}: field 'box' must hold boxes of 4 (2D) or 6 (3D) numbers each, got lengths {sorted(dims)}")
        for i, b in enumerate(self.box):
            if not all(isinstance(v, int | float) and math.isfinite(v) for v in b):
                raise DatalistError(f"{where}: field 'box'[{i}] has a value that is not a finite number: {b}")
            k = len(b) // 2
            if box_mode.startswith("cc") and any(v < 0 for v in b[k:]):
                raise DatalistError(f"{where}: field 'box'[{i}] has a negative size ({box_mode}): {b}")
            if not box_mode.startswith("cc") and any(b[j + k] < b[j] for j in range(k)):
                raise DatalistError(f"{where}: field 'box'[{i}] ends before it starts ({box_mode}): {b}")
        if not isinstance(self.label, list) or len(self.label) != len(self.box):
            raise DatalistError(f"{where}: field 'label' needs one integer per box ({len(self.box)}), got {self.label!r}")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in self.label):
            raise DatalistError(f"{where}: field 'label' must hold integers >= 0, got {self.label!r}")
        if self.ignore_box is not None:
            if not isinstance(self.ignore_box, list) or any(
                not isinstance(b, list | tuple) or len(b) != len(self.box[0] if self.box else b) for b in self.ignore_box
            ):
                raise DatalistError(f"{where}: field 'ignore_box' must be a list of boxes like 'box'")
        for name in PER_BOX:
            v = getattr(self, name)
            if v is not None and (not isinstance(v, list) or len(v) != len(self.box)):
                raise DatalistError(f"{where}: field '{name}' needs one entry per box ({len(self.box)})")


def read_datalist(path: str | Path, box_mode: str = "xyxy", labelled: bool = True) -> dict[str, list[dict[str, Any]]]:
    """The whole datalist, every item validated; sections kept as written (paths not resolved).

    Sections are `training`, `validation`, `test` and any other list of items; other keys are metadata.
    """
    path = Path(path)
    if box_mode not in BOX_MODES:
        raise DatalistError(f"{path}: box mode {box_mode!r} is not one of {list(BOX_MODES)}")
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatalistError(f"{path}: datalist not found") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise DatalistError(f"{path}: cannot be read as a datalist ({type(exc).__name__})") from None
    except json.JSONDecodeError as exc:
        raise DatalistError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise DatalistError(f"{path}: a datalist is an object with sections {list(SECTIONS)}")
    for section, items in doc.items():
        if section in SECTIONS or isinstance(items, list):
            if not isinstance(items, list):
                raise DatalistError(f"{path}: section '{section}' must be a list of items")
            for i, d in enumerate(items):
                DatalistItem.from_dict(d, f"{path}: {section}[{i}]", box_mode, labelled)
    return doc


def load_datalist(
    path: str | Path, section: str, base_dir: str | Path | None = None, box_mode: str = "xyxy", labelled: bool = True
) -> list[dict[str, Any]]:
    """One section, validated, paths resolved by `monai.data.load_decathlon_datalist` (what the configs used before).

    `box_mode` is how the boxes are written: array corners (xyxy, xyzxyz; mining's datalists) or MONAI
    Label's world centre-size boxes (cccwhd; configs/train_volume.yaml). Inference reads unlabelled lists.
    """
    from monai.data import load_decathlon_datalist

    path = Path(path)
    doc = read_datalist(path, box_mode, labelled)
    if section not in doc:
        raise DatalistError(f"{path}: section '{section}' is missing (has {sorted(doc)})")
    return load_decathlon_datalist(path, data_list_key=section, base_dir=base_dir)


def write_datalist(doc: dict[str, list[DatalistItem | dict[str, Any]]], path: str | Path) -> Path:
    """Write sections of items (validated) as indented JSON; the byte layout mining has always written."""
    path = Path(path)
    out: dict[str, Any] = {}
    for section, items in doc.items():
        if not isinstance(items, list):  # metadata
            out[section] = items
            continue
        out[section] = []
        for i, it in enumerate(items):
            item = it if isinstance(it, DatalistItem) else DatalistItem.from_dict(it, f"{path}: {section}[{i}]")
            item.validate(f"{path}: {section}[{i}]")
            out[section].append(item.to_dict())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return path
