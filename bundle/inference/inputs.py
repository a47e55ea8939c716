"""What an inference run reads: one image, or a section of a datalist; a batch screened for bad images.

Why not a plain ``load_datalist`` expression: the model zoo (``ci/verify_bundle.py``)
and MONAI Label build ``dataset`` and ``evaluator`` to check the bundle's properties in the bare
package, where no datalist exists. Building must not need data; running does, and says so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bundle.datalist.schema import load_datalist
from bundle.io.errors import InputError, install_excepthook

__all__ = ["inference_datalist", "install_excepthook", "require_inputs", "screen_inputs"]
from bundle.inference.dicom_input import CheckVolumed
from bundle.transforms.checks import BadImageError, CheckImaged

logger = logging.getLogger(__name__)


def inference_datalist(input_image: str, data_list_file_path: str, data_list_key: str, base_dir: str) -> list[dict]:
    """``[{"image": input_image}]``, else the datalist's section; ``[]`` while neither exists."""
    if input_image:
        return [{"image": input_image}]
    if not Path(data_list_file_path).is_file():
        return []
    return load_datalist(data_list_file_path, data_list_key, base_dir, labelled=False)


def require_inputs(datalist: list, input_image: str, data_list_file_path: str, data_list_key: str) -> None:
    """Stop before running on nothing, naming what is missing."""
    if datalist:
        return
    if not input_image and not Path(data_list_file_path).is_file():
        raise InputError(f"{data_list_file_path}: no such datalist; give --input_image or --data_list_file_path")
    raise InputError(f"{data_list_file_path}: section '{data_list_key}' is empty; nothing to infer")


def screen_inputs(
    datalist: list[dict],
    handlers: list | tuple = (),
    spatial_ndim: int = 2,
    key: str = "image",
    source: str = "",
    series_rules: Any = None,
) -> list[dict]:
    """Drop (in place) the items whose image fails ``check_image``; one log line each; the skipped records.

    Why in place, from ``initialize``: the config's ``dataset`` holds this very list, so the run sees only
    good items without the config changing shape. Savers among ``handlers`` (anything with a ``skipped``
    list) write the skipped items into their output file. A run whose every input is bad stops with the
    (first) item's one-line error. An empty list is left alone (the bare package builds without data),
    unless ``source`` (the glob or path it came from) is given: then ``source`` itself becomes the one
    item, so running stops with "matches no files" while building still needs no data.
    """
    if not datalist and source:
        datalist.append({key: source})
        return []
    # volumes may be DICOM (a series or study folder, an Enhanced MR file; series_rules pick in a study folder)
    check = CheckVolumed(key, spatial_ndim, series_rules) if spatial_ndim == 3 else CheckImaged(key, spatial_ndim)
    kept, skipped, first = [], [], None
    for item in datalist:
        try:
            check(item)
        except BadImageError as exc:
            first = first or exc
            skipped.append({"image": str(item.get(key)), "reason": str(exc)})
            logger.warning("skipped: %s", exc)
        else:
            kept.append(item)
    datalist[:] = kept
    for h in handlers or ():
        if isinstance(getattr(h, "skipped", None), list):
            h.skipped[:] = skipped
    if first is not None and not kept:
        if len(skipped) == 1:
            raise first
        raise BadImageError(f"all {len(skipped)} input images are unusable; the first: {first}")
    if skipped:
        logger.warning("%d of %d input images skipped (listed under 'skipped' in the output)", len(skipped), len(skipped) + len(kept))
    return skipped
