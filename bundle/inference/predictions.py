"""Prediction file for volume inference: array-coordinate boxes plus their world LPS boxes."""

from __future__ import annotations

import numpy as np
import torch
from ignite.engine import Engine

from bundle.engines.handlers import DetectionSaver, _jsonable
from bundle.transforms.world import voxel_to_world


class VolumeDetectionSaver(DetectionSaver):
    """``DetectionSaver`` for 3D boxes: adds ``box_world`` (LPS mm, ``world_mode``) per image.

    Why: one file serves both conventions — ``box`` stays in array coordinates like every
    datalist, ``box_world`` is what MONAI Label / Slicer / DICOM consumers compare against.
    """

    def __init__(
        self, output_path: str, score_threshold: float = 0.0, world_mode: str = "cccwhd", keep_keys: tuple[str, ...] = ("patient",)
    ) -> None:
        super().__init__(output_path, score_threshold=score_threshold, box_mode="xyzxyz", coordinates="image", keep_keys=keep_keys)
        self.world_mode = world_mode

    def _collect(self, engine: Engine) -> None:
        start = len(self.records)
        super()._collect(engine)
        for rec, r in zip(self.records[start:], engine.state.output["items"]):
            affine = np.asarray(torch.as_tensor(r["image"].affine).cpu())
            rec["box_world"] = _jsonable(
                voxel_to_world(np.asarray(rec["box"], dtype=np.float64).reshape(-1, 6), affine, lps=True, mode=self.world_mode)
            )
            rec["affine"] = _jsonable(affine)
            rec["shape"] = list(r["image"].shape[1:])

    def _write(self, engine: Engine) -> None:
        super()._write(engine)
        import json

        doc = json.loads(self.output_path.read_text())
        doc["world"] = {"box_mode": self.world_mode, "space": "LPS", "units": "mm", "key": "box_world"}
        self.output_path.write_text(json.dumps(doc, indent=1))
