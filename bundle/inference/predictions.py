"""Prediction files: the writers an evaluator's handlers use (2D slices, 3D volumes with world LPS boxes) and their reader.

Why one home: evaluation, self-training, the benchmark and the serving paths all read what volume or
slice inference wrote; the format is defined once, beside the code that writes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine, Events

from bundle.datalist.sections import resolved
from bundle.transforms.grid import to_input_grid
from bundle.transforms.world import voxel_to_world


def jsonable(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return v


class DetectionSaver:
    """Collects predicted boxes per image and writes one JSON file at the end of a run.

    Boxes stay in the datalist's convention (image array coordinates, ``xyxy``/``xyzxyz``) unless
    the postprocessing converted them; ``box_mode`` and ``coordinates`` record which.
    """

    def __init__(
        self,
        output_path: str,
        score_threshold: float = 0.0,
        box_mode: str = "xyxy",
        coordinates: str = "image",
        keep_keys: tuple[str, ...] = ("patient", "slice", "volume"),
    ) -> None:
        self.output_path = Path(output_path)
        self.score_threshold = score_threshold
        self.box_mode = box_mode
        self.coordinates = coordinates
        self.keep_keys = keep_keys
        self.records: list[dict] = []
        self.skipped: list[dict] = []  # inputs screened out as unusable (bundle.inference.inputs.screen_inputs)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda e: self.records.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _collect(self, engine: Engine) -> None:
        for r in engine.state.output["items"]:
            scores = np.asarray(r["pred_score"]).reshape(-1)
            keep = scores >= self.score_threshold
            image = r["image"]
            path = getattr(image, "meta", {}).get("filename_or_obj", "")
            rec = {
                "image": str(path),
                "box": jsonable(np.asarray(r["pred_box"])[keep]),
                "label": jsonable(np.asarray(r["pred_label"]).reshape(-1)[keep]),
                "score": jsonable(scores[keep]),
            }
            rec.update({k: jsonable(r[k]) for k in self.keep_keys if k in r})
            self.records.append(rec)

    def _write(self, engine: Engine) -> None:
        self.output_path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"box_mode": self.box_mode, "coordinates": self.coordinates, "predictions": self.records, "skipped": self.skipped}
        self.output_path.write_text(json.dumps(doc, indent=1))


class VolumeDetectionSaver(DetectionSaver):
    """``DetectionSaver`` for 3D boxes: adds ``box_world`` (LPS mm, ``world_mode``) per image and the file's ``score_kind``.

    Why: one file serves both conventions — ``box`` stays in array coordinates like every
    datalist, ``box_world`` is what MONAI Label / Slicer / DICOM consumers compare against.
    """

    def __init__(
        self,
        output_path: str,
        score_threshold: float = 0.0,
        world_mode: str = "cccwhd",
        keep_keys: tuple[str, ...] = ("patient",),
        score_kind: str = "logit",
    ) -> None:
        super().__init__(output_path, score_threshold=score_threshold, box_mode="xyzxyz", coordinates="image", keep_keys=keep_keys)
        self.world_mode = world_mode
        self.score_kind = score_kind  # configs/inference_volume.yaml's detector returns the classification logit

    def _collect(self, engine: Engine) -> None:
        start = len(self.records)
        super()._collect(engine)
        for rec, r in zip(self.records[start:], engine.state.output["items"]):
            # boxes leave the canonical grid for the input's own voxel grid (bundle/transforms/grid.py)
            boxes, affine, shape = to_input_grid(np.asarray(rec["box"], dtype=np.float64).reshape(-1, 6), r["image"])
            rec["box"] = jsonable(boxes)
            rec["box_world"] = jsonable(voxel_to_world(boxes, affine, lps=True, mode=self.world_mode))
            rec["affine"] = jsonable(affine)
            rec["shape"] = shape

    def _write(self, engine: Engine) -> None:
        super()._write(engine)
        doc = json.loads(self.output_path.read_text())
        doc["world"] = {"box_mode": self.world_mode, "space": "LPS", "units": "mm", "key": "box_world"}
        doc["score_kind"] = self.score_kind
        self.output_path.write_text(json.dumps(doc, indent=1))


# -- reading a prediction file back --------------------------------------------------------------


def load_predictions(path: str | Path) -> dict[str, dict]:
    """Predictions JSON (DetectionSaver) -> {absolute image path: record}; empty or bad files name themselves."""
    p = Path(path)
    text = p.read_text() if p.exists() else ""
    if not text.strip():
        raise ValueError(f"{p}: predictions file is missing or empty")
    try:
        doc = json.loads(text)
        recs = doc["predictions"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{p}: not a predictions file (needs a 'predictions' list): {e}") from e
    out = {}
    for i, r in enumerate(recs):
        if "image" not in r:
            raise ValueError(f"{p}: predictions[{i}] has no 'image' field")
        for f in ("box", "score"):
            if f not in r:
                raise ValueError(f"{p}: predictions[{i}] ({r['image']}) has no '{f}' field")
        r.setdefault("label", [0] * len(r["score"]))
        out[resolved(r["image"])] = r
    return out


def skipped_images(path: str | Path) -> set[str]:
    """Images the run screened out as unusable (the predictions file's ``skipped``): scored as absent, not as misses."""
    doc = json.loads(Path(path).read_text())
    return {resolved(r["image"]) for r in doc.get("skipped", [])}


def pair(preds: dict[str, dict], truth: list[dict], where: str) -> list[tuple[dict, dict]]:
    """(truth, prediction) per truth image; a prediction for an image not in the truth is an error."""
    known = {t["image"] for t in truth}
    unknown = sorted(set(preds) - known)
    if unknown:
        raise ValueError(f"{where}: predictions for {len(unknown)} image(s) not in the truth, e.g. {unknown[0]}")
    empty = {"box": [], "score": [], "label": []}
    return [(t, preds.get(t["image"], empty)) for t in truth]
