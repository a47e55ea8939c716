"""What an inference run reads: one image, or a section of a datalist.

Why not a plain ``load_datalist`` expression: the model zoo (``ci/verify_bundle.py``)
and MONAI Label build ``dataset`` and ``evaluator`` to check the bundle's properties in the bare
package, where no datalist exists. Building must not need data; running does, and says so.
"""

from __future__ import annotations

from pathlib import Path

from bundle.datalist.schema import load_datalist


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
        raise FileNotFoundError(f"{data_list_file_path}: no such datalist; give --input_image or --data_list_file_path")
    raise ValueError(f"{data_list_file_path}: section '{data_list_key}' is empty; nothing to infer")
