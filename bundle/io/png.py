"""DeepLesion key slice PNGs: 16-bit, stored value - 32768 = HU. Header check and decoding, no policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np

PNG_IMAGE = "deeplesion-png"  # ImageInfo.sop_class_uid of a DeepLesion key slice: no DICOM series rules apply


def png_info(path: Path) -> tuple[dict | None, str, str]:
    """(width, height) of a 16-bit key slice PNG, decoded fully so a truncated file is caught here, not later."""
    from PIL import Image

    if not path.is_file():
        return None, "image_missing", f"{path.name} not found"
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)
    except Exception as exc:  # noqa: BLE001 - any decoder failure means the slice is unusable
        return None, "image_unreadable", f"{path.name}: {type(exc).__name__}: {exc}"
    if arr.ndim != 2:
        return None, "image_unreadable", f"{path.name}: not a single grey plane (shape {arr.shape})"
    return {"columns": int(arr.shape[1]), "rows": int(arr.shape[0]), "dtype": str(arr.dtype)}, "", ""


def png_hu(data: bytes | str | Path) -> np.ndarray:
    """DeepLesion PNG (its bytes or its path) -> HU as int16 in (row, column) order: stored value - 32768."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data) if isinstance(data, bytes | bytearray) else data) as im:
        arr = np.asarray(im).astype(np.int32) - 32768
    return np.clip(arr, -32768, 32767).astype(np.int16)
