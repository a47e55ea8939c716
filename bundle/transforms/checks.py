"""The one check an input image passes before the network sees it.

Why: MONAI's loaders and the detector accept almost anything and fail far away from the cause (a NaN
volume ends in ``pred_whd_axis is NaN or Inf``, a 4D file in a conv channel mismatch). ``check_image``
reads the file as ``LoadImaged`` will, and raises ``BadImageError`` with one line naming the file and the
problem. ``CheckImaged`` runs it at the head of every inference preprocessing (configs, MONAI Label, the
Deploy app); ``bundle.inference.inputs.screen_inputs`` runs it over a batch to skip bad items.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import LoadImage, MapTransform

from bundle.io.errors import InputError

HTTP_STATUS = 422  # MONAI Label (FastAPI) answers a bad upload with this instead of 500


class BadImageError(InputError):
    """An input image the network must not see; the message is ``<file>: <problem>``."""


def bad_image(path: Any, problem: str) -> BadImageError:
    """The error for ``path``; inside a FastAPI server (MONAI Label) it is also an HTTPException (4xx).

    Why the switch: MONAI Label maps only ``HTTPException`` to a status other than 500, and runs the
    bundle's transforms unwrapped, so this is the one way the bundle can say "bad request". FastAPI is
    only consulted when the server has already imported it.
    """
    msg = f"{path}: {problem}"
    if "fastapi" in sys.modules:
        from fastapi import HTTPException

        class _HTTPBadImageError(BadImageError, HTTPException):
            def __init__(self, message: str) -> None:
                HTTPException.__init__(self, status_code=HTTP_STATUS, detail=message)
                self.args = (message,)

            def __str__(self) -> str:
                return self.args[0]

        return _HTTPBadImageError(msg)
    return BadImageError(msg)


def _check_path(path: str) -> None:
    p = Path(path)
    if not p.exists():
        raise bad_image(path, "matches no files" if any(c in str(path) for c in "*?[") else "no such file")
    if p.is_dir():
        raise bad_image(path, "is a directory, not an image file")
    if not os.access(p, os.R_OK):
        raise bad_image(path, "cannot be read (permission denied)")
    if p.stat().st_size == 0:
        raise bad_image(path, "is empty (0 bytes)")


def _read(path: str) -> torch.Tensor:
    """The image as LoadImaged reads it, native dtype; reader failures become one line."""
    try:
        return LoadImage(image_only=True, dtype=None)(path)
    except Exception as exc:  # any reader failure is a property of the file
        root = exc
        while root.__cause__ is not None or root.__context__ is not None:
            root = root.__cause__ or root.__context__
        reason = str(root).splitlines()[0] if str(root) else type(root).__name__
        raise bad_image(path, f"cannot be read as an image ({type(root).__name__}: {reason[:200]})") from exc


def _header_spacing(path: str, ndim: int) -> list[float] | None:
    """Raw NIfTI pixdim of the spatial axes (nibabel silently takes abs() of negative ones); None if not NIfTI."""
    if not str(path).endswith((".nii", ".nii.gz")):
        return None
    import nibabel as nib
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(path) as f:
            header = nib.Nifti1Header.from_fileobj(f, check=False)
    except Exception:  # not a readable NIfTI: _read says why
        return None
    return [float(v) for v in header["pixdim"][1 : ndim + 1]]


def check_array(img: Any, name: str, spatial_ndim: int) -> None:
    """Shape, dtype, values and geometry of an image array (no channel axis)."""
    arr = torch.as_tensor(img)
    if arr.dtype == torch.bool:
        raise bad_image(name, "has boolean voxels (a mask, not an image)")
    if arr.is_complex():
        raise bad_image(name, f"has complex voxels ({str(arr.dtype).removeprefix('torch.')}); expected real numbers")
    shape = "x".join(str(s) for s in arr.shape)
    if arr.ndim != spatial_ndim:
        want = "a 2D slice" if spatial_ndim == 2 else "a 3D volume"
        raise bad_image(name, f"has {arr.ndim} dimensions (shape {shape}); expected {want}")
    if min(arr.shape) < 1:
        raise bad_image(name, f"is empty (shape {shape})")
    values = arr.float()
    bad = int((~torch.isfinite(values)).sum())
    if bad:
        raise bad_image(name, f"has {bad} NaN or infinite voxels of {values.numel()}")
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:
        raise bad_image(name, f"is blank (every voxel is {lo:g})")
    affine = getattr(img, "affine", None)
    if affine is not None:
        cols = np.linalg.norm(np.asarray(torch.as_tensor(affine), dtype=float)[:spatial_ndim, :spatial_ndim], axis=0)
        if not np.all(np.isfinite(cols)) or np.any(cols <= 0):
            raise bad_image(name, f"has a degenerate affine (voxel spacing {np.round(cols, 4).tolist()} mm)")


def check_image(path: Any, spatial_ndim: int) -> None:
    """Raise BadImageError if the file at ``path`` (or an in-memory array) is unfit for the network."""
    if not isinstance(path, (str, os.PathLike)):
        meta = getattr(path, "meta", {}) or {}
        check_array(path, str(meta.get("filename_or_obj") or "input image"), spatial_ndim)
        return
    path = str(path)
    _check_path(path)
    spacing = _header_spacing(path, spatial_ndim)
    if spacing is not None and not all(np.isfinite(v) and v > 0 for v in spacing):
        raise bad_image(path, f"has a non-positive or non-finite voxel spacing in its header (pixdim {spacing})")
    check_array(_read(path), path, spatial_ndim)


class CheckImaged(MapTransform):
    """``check_image`` on each key: the first step of every inference preprocessing.

    Verdicts are remembered by (path, size, mtime), so a batch screened beforehand is not read twice
    for the check.
    """

    _passed: set[tuple[str, int, int, int]] = set()

    def __init__(self, keys: Any = "image", spatial_ndim: int = 2, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.spatial_ndim = spatial_ndim

    def _key(self, path: Any) -> tuple[str, int, int, int] | None:
        if not isinstance(path, (str, os.PathLike)) or not Path(path).is_file():
            return None
        st = Path(path).stat()
        return (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, self.spatial_ndim)

    def check(self, path: Any) -> None:
        key = self._key(path)
        if key is not None and key in self._passed:
            return
        check_image(path, self.spatial_ndim)
        if key is not None:
            self._passed.add(key)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            for path in d[key] if isinstance(d[key], (list, tuple)) else [d[key]]:
                self.check(path)
        return d
