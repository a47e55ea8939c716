"""The canonical grid: one voxel spacing that training and every inference path resample to.

Why: a 2D detector learns lesion sizes in pixels and 2.5D context in slices, so a model trained on one
protocol (1.5 x 1.5 x 4 mm) misreads another (0.75 mm in-plane, 1 mm slices). Resampling every volume to
one spacing with MONAI's ``Spacingd`` makes pixels millimetres again. The spacing is chosen once, from
the training series' own headers (:func:`plan`), and written to ``<ckpt_dir>/grid.json`` beside the
weights and ``operating_point.json``: the one file training writes and every reader (``inference_volume.yaml``,
``evaluate_volume.yaml``, MONAI Label, the Deploy app, the zoo's ``inference.yaml``) reads. No file: the
input's own grid (models trained before the grid existed).

Boxes: training boxes ride through the resampling as world boxes (``to_world`` / ``from_world``, the
half-voxel-exact conversions of :mod:`bundle.transforms.world`); predictions leave the canonical grid for
the input's own voxel grid (:class:`RememberInputGridd` before any reorientation, :func:`to_input_grid`).
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from bundle.transforms.world import voxel_to_world, world_to_voxel

FILENAME = "grid.json"
NATIVE = [-1.0, -1.0, -1.0]  # Spacingd: a non-positive spacing keeps the input's own


def spacing_of_affine(affine: np.ndarray | torch.Tensor) -> np.ndarray:
    """Voxel spacing (mm) along each array axis: the norms of the affine's columns."""
    a = np.asarray(torch.as_tensor(affine).detach().cpu(), dtype=np.float64)
    return np.linalg.norm(a[:3, :3], axis=0)


def ras_spacing(path: str | Path) -> np.ndarray:
    """A NIfTI's spacing per axis after reorientation to RAS (header only, no pixels)."""
    import nibabel as nib

    img = nib.load(str(path))
    ornt = nib.orientations.io_orientation(img.affine)  # row i: which RAS axis array axis i becomes
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=np.float64)
    if len(zooms) < 3:  # a key slice: its affine still says the slice's thickness along the third axis
        zooms = spacing_of_affine(img.affine)
    out = np.zeros(3)
    out[ornt[:, 0].astype(int)] = zooms
    return out


def choose_spacing(
    spacings: np.ndarray, small_lesion_mm: float = 10.0, min_pixels: float = 8.0, max_slice_mm: float = 6.0, max_upsampling: float = 1.5
) -> dict[str, Any]:
    """The canonical spacing from the series' own spacings (rows x, y, z; RAS axes).

    In-plane: the median in-plane spacing, or finer where a ``small_lesion_mm`` lesion would span fewer than
    ``min_pixels`` pixels (the smallest lesion the size rule keeps must meet an anchor), but at most ``max_upsampling``
    times finer than the median (interpolation adds pixels, not detail, and costs time). Slices: the median
    slice spacing, capped at ``max_slice_mm``. Medians, so one odd protocol does not set everyone's grid.
    """
    s = np.asarray(spacings, dtype=np.float64).reshape(-1, 3)
    if not len(s):
        raise ValueError("no series to choose a grid from")
    in_plane = float(np.median(s[:, :2]))
    target_xy = max(min(in_plane, small_lesion_mm / min_pixels), in_plane / max_upsampling)
    target_z = min(float(np.median(s[:, 2])), max_slice_mm)
    return {
        "spacing": [round(target_xy, 4), round(target_xy, 4), round(target_z, 4)],
        "rule": {
            "small_lesion_mm": small_lesion_mm,
            "min_pixels": min_pixels,
            "max_slice_mm": max_slice_mm,
            "max_upsampling": max_upsampling,
        },
        "series": int(len(s)),
        "median_spacing": [round(float(v), 4) for v in np.median(s, axis=0)],
        "spacing_range": [[round(float(v), 4) for v in s.min(0)], [round(float(v), 4) for v in s.max(0)]],
    }


def _header_spacing(path: Path) -> np.ndarray:
    """:func:`ras_spacing`, or one line naming the file when its header cannot be read (a PNG, a DICOM file)."""
    try:
        return ras_spacing(path)
    except Exception as e:  # nibabel's errors differ by format; each means the same here
        raise ValueError(
            f"{path}: no voxel spacing to plan the canonical grid from ({type(e).__name__}: {e}); "
            "convert it to NIfTI, give grid_spacing_mm, or set grid_enabled false"
        ) from None


def datalist_images(datalist_file: str | Path, sections: Iterable[str] = ("training",)) -> list[Path]:
    """The volumes of a datalist's sections (paths relative to the datalist)."""
    p = Path(datalist_file)
    doc = json.loads(p.read_text())
    return [p.parent / it["image"] for sec in sections for it in doc.get(sec, []) if isinstance(it, dict) and "image" in it]


def load(ckpt_dir: str | Path) -> dict[str, Any] | None:
    """``<ckpt_dir>/grid.json``, or None (the model works on the input's own grid)."""
    f = Path(ckpt_dir) / FILENAME
    return json.loads(f.read_text()) if f.is_file() else None


def spacing(ckpt_dir: str | Path) -> list[float]:
    """Spacingd's ``pixdim`` for this model: the canonical spacing, or the input's own where no grid was planned."""
    g = load(ckpt_dir)
    return list(g["spacing"]) if g and g.get("spacing") else list(NATIVE)


def write(ckpt_dir: str | Path, grid: dict[str, Any] | None) -> Path:
    """Writes ``grid.json`` (None: the input's own grid, ``{"spacing": null}``) and returns its path."""
    f = Path(ckpt_dir) / FILENAME
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(grid or {"spacing": None}, indent=1))
    return f


def plan(
    ckpt_dir: str | Path,
    datalist_file: str | Path | None,
    enabled: bool = True,
    spacing_mm: Sequence[float] | None = None,
    small_lesion_mm: float = 10.0,
    min_pixels: float = 8.0,
    max_slice_mm: float = 6.0,
    context_slices: int = 1,
    keep: bool = False,
    write_file: bool = True,
) -> list[float]:
    """Training's grid: an existing ``grid.json`` is kept with ``keep`` (resumed or fine-tuned models keep their grid), else
    ``spacing_mm`` if given, else chosen from the training series (:func:`choose_spacing`); written to
    ``<ckpt_dir>/grid.json`` with ``context_mm``, the 2.5D stack's farthest neighbour in mm (``context_slices``//2
    canonical slices). Returns Spacingd's ``pixdim``. ``enabled=False`` writes the native grid. ``write_file=False``
    plans without writing (multi-process training: every rank plans the same grid, rank 0 alone writes it)."""
    if keep and load(ckpt_dir) is not None:
        return spacing(ckpt_dir)
    g: dict[str, Any] | None = None
    if enabled and spacing_mm is not None:
        g = {"spacing": [float(v) for v in spacing_mm], "rule": "given"}
    elif enabled:
        images = datalist_images(datalist_file) if datalist_file else []
        if not images:
            raise ValueError(f"{datalist_file}: no training series to choose the canonical grid from; give grid_spacing_mm")
        g = choose_spacing(np.stack([_header_spacing(p) for p in images]), small_lesion_mm, min_pixels, max_slice_mm)
        g["datalist"] = str(datalist_file)
    if g is not None:
        g["context_mm"] = round((context_slices // 2) * float(g["spacing"][2]), 4)
    if write_file:
        write(ckpt_dir, g)
    return list(g["spacing"]) if g else list(NATIVE)


def context_mm(ckpt_dir: str | Path) -> float | None:
    """The 2.5D stack's farthest neighbour in mm as trained (None: neighbours are adjacent slices)."""
    g = load(ckpt_dir) or {}
    return g.get("context_mm") or None


# --- boxes across grids ---------------------------------------------------------------------------


def _as_3d(affine: np.ndarray) -> np.ndarray:
    """A 2D slice's 3x3 affine as a 4x4 one (the slice at z = 0)."""
    if affine.shape == (4, 4):
        return affine
    out = np.eye(4)
    out[:2, :2], out[:2, 3] = affine[:2, :2], affine[:2, 2]
    return out


def move_boxes(boxes: np.ndarray | Sequence, src_affine, dst_affine, dims: int | None = None) -> np.ndarray:
    """Array boxes (max exclusive; ``xyzxyz``, or ``xyxy`` with 3x3 affines) of the grid ``src_affine`` -> the same
    world box in ``dst_affine``'s grid. ``dims`` (default: 2 for 3x3 affines): 2 for slices, whose affine MONAI may keep 4x4."""
    src = np.asarray(torch.as_tensor(src_affine).detach().cpu(), dtype=np.float64)
    dst = np.asarray(torch.as_tensor(dst_affine).detach().cpu(), dtype=np.float64)
    dims = dims or (2 if src.shape == (3, 3) else 3)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 2 * dims)
    if not len(b) or (src.shape == dst.shape and np.allclose(src, dst, atol=1e-6)):
        return b
    if dims == 2:
        b3 = np.stack([b[:, 0], b[:, 1], np.zeros(len(b)), b[:, 2], b[:, 3], np.ones(len(b))], axis=1)
        out = world_to_voxel(voxel_to_world(b3, _as_3d(src), lps=True, mode="xyzxyz"), _as_3d(dst), lps=True, mode="xyzxyz")
        return out[:, [0, 1, 3, 4]]
    return world_to_voxel(voxel_to_world(b, src, lps=True, mode="xyzxyz"), dst, lps=True, mode="xyzxyz")


def to_input_grid(boxes: np.ndarray | Sequence, image) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Boxes in ``image``'s (canonical) grid -> the input's own voxel grid (:class:`RememberInputGridd`).

    Returns (boxes clipped to the input volume, its affine, its spatial shape); unchanged when the image was not remembered.
    """
    meta = getattr(image, "meta", {}) or {}
    here = getattr(image, "affine", None)
    shape = list(image.shape[1:])
    if "input_affine" not in meta or here is None:
        eye = torch.eye(len(shape) + 1)
        return (
            np.asarray(boxes, dtype=np.float64).reshape(-1, 2 * len(shape)),
            np.asarray(torch.as_tensor(here if here is not None else eye)),
            shape,
        )
    src = np.asarray(torch.as_tensor(meta["input_affine"]).cpu(), dtype=np.float64)
    in_shape = [int(v) for v in meta["input_shape"]]
    moved = np.array(move_boxes(boxes, here, src, dims=len(shape)), dtype=np.float64)  # a copy: clipped in place below
    # a coarser grid's edge voxel reaches half a voxel past the stored volume's first and last voxel: clip to the volume
    d = len(in_shape)
    moved[:, :d] = np.clip(moved[:, :d], 0, in_shape)
    moved[:, d:] = np.clip(moved[:, d:], 0, in_shape)
    return moved, src, in_shape


class RememberInputGridd(MapTransform):
    """Records the input's own grid (affine, spatial shape) in the image's meta, before any reorientation or resampling.

    Why: predictions go back to the grid the scanner stored (issue 24); the image's own affine after
    ``Spacingd`` says only where the canonical grid is.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if hasattr(img, "meta") and "input_affine" not in img.meta:
                img.meta["input_affine"] = torch.as_tensor(img.affine).clone()
                img.meta["input_shape"] = list(img.shape[1:])
        return d


class BoxesToInputGridd(MapTransform):
    """Replaces canonical-grid boxes (``xyzxyz``, or ``xyxy`` of a slice) by boxes in the input's own grid."""

    def __init__(self, box_keys: KeysCollection, box_ref_image_keys: str, allow_missing_keys: bool = False) -> None:
        super().__init__(box_keys, allow_missing_keys)
        self.ref = box_ref_image_keys

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            boxes, _, _ = to_input_grid(np.asarray(torch.as_tensor(d[key]).detach().cpu()), d[self.ref])
            d[key] = torch.as_tensor(boxes, dtype=torch.float32)
        return d


class BoxesToWorldMmd(MapTransform):
    """Training: array boxes (and ``ignore_box``) -> world LPS ``xyzxyz`` boxes, and each box's reach in slices -> mm,
    before ``Orientationd``/``Spacingd`` move the image; :class:`BoxesFromWorldMmd` brings them into the new grid.

    Why not MONAI's ``AffineBoxToWorldCoordinated``: it maps two corners without the half-voxel shift of a
    max-exclusive box edge (:mod:`bundle.transforms.world`); here a box must land on the same voxels after
    resampling. A missing or None box key is an empty box list.
    """

    def __init__(self, box_keys: KeysCollection, box_ref_image_keys: str = "image", extent_key: str = "z_half_extent_slices") -> None:
        super().__init__(box_keys, allow_missing_keys=True)
        self.ref, self.extent_key = box_ref_image_keys, extent_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        aff = d[self.ref].affine
        for key in self.keys:
            if key in d:
                b = np.asarray([] if d[key] is None else torch.as_tensor(d[key]).detach().cpu(), dtype=np.float64).reshape(-1, 6)
                d[key] = voxel_to_world(b, np.asarray(torch.as_tensor(aff)), lps=True, mode="xyzxyz") if len(b) else b
        if d.get(self.extent_key) is not None:
            dz = float(spacing_of_affine(aff)[2])
            d[self.extent_key] = [None if v is None else float(v) * dz for v in d[self.extent_key]]
        return d


class BoxesFromWorldMmd(BoxesToWorldMmd):
    """The inverse of :class:`BoxesToWorldMmd` on the (reoriented, resampled) image: world boxes -> its array boxes, reach mm -> slices."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        aff = d[self.ref].affine
        for key in self.keys:
            if key in d:
                b = np.asarray(d[key], dtype=np.float64).reshape(-1, 6)
                # rounded: a key slice's [k, k + 1) must not come back as [k + 1e-7, ...) and miss slice k
                moved = np.round(world_to_voxel(b, np.asarray(torch.as_tensor(aff)), lps=True, mode="xyzxyz"), 4) if len(b) else b
                d[key] = moved.tolist()  # a list: SliceWithBoxesd reads `ignore_box or []`
        if d.get(self.extent_key) is not None:
            dz = float(spacing_of_affine(aff)[2])
            d[self.extent_key] = [None if v is None else float(v) / dz for v in d[self.extent_key]]
        return d


def context_step(context_mm: float | None, slice_mm: float, context_slices: int) -> int:
    """Slices between a 2.5D stack's neighbours: ``context_mm`` (the farthest neighbour's distance) over ``k//2`` slices."""
    half = context_slices // 2
    if not context_mm or half == 0 or slice_mm <= 0:
        return 1
    return max(1, int(round(context_mm / (half * slice_mm))))


class ToGridd(MapTransform):
    """MONAI's ``Spacing`` on each key: the image resampled to the canonical grid.

    Why not ``Spacingd``: it also calls ``.update()`` on every other ``<key>_*`` entry as a meta dict, and MONAI Label's
    request carries ``image_path`` (a string), so its inference would fail. ``spacing_transform`` as in ``Spacingd``.
    """

    def __init__(self, keys: KeysCollection, pixdim: Sequence[float], mode: str = "bilinear", allow_missing_keys: bool = False) -> None:
        from monai.transforms import Spacing

        super().__init__(keys, allow_missing_keys)
        self.spacing_transform = Spacing(pixdim=pixdim, mode=mode)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.spacing_transform(d[key])
        return d


class SliceToGridd(ToGridd):
    """A key slice (or a 2.5D stack) resampled in-plane to the canonical grid with MONAI's ``Spacing``; ``box_keys``
    (array ``xyxy``) move with it, half-voxel exact (:func:`move_boxes`).

    Why: key-slice training (the seed study's recipe) learnt lesion sizes in the pixels of whatever protocol the
    slices came in; on the canonical grid its model reads a 0.75 mm slice as the series models do. Evaluation gives
    no ``box_keys``: its truth stays in the input's grid, where predictions return (:class:`BoxesToInputGridd`).
    """

    def __init__(self, keys: KeysCollection, pixdim: Sequence[float], box_keys: Sequence[str] = (), mode: str = "bilinear") -> None:
        super().__init__(keys, list(pixdim)[:2], mode)
        self.box_keys = list(box_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            before = torch.as_tensor(d[key].affine).clone()
            d[key] = self.spacing_transform(d[key])
            for bk in self.box_keys:
                if d.get(bk) is not None and len(d[bk]):
                    moved = move_boxes(np.asarray(torch.as_tensor(d[bk]).detach().cpu()), before, d[key].affine, dims=2)
                    d[bk] = np.round(moved, 4).tolist()
        return d
