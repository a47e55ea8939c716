"""Ignite handlers that turn an evaluator's per-image outputs into files a person or script reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine, Events


def _jsonable(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


class MetricsJSONWriter:
    """Writes ``engine.state.metrics`` as JSON when an evaluation run completes."""

    def __init__(self, path: str, extra: dict | None = None) -> None:
        self.path = Path(path)
        self.extra = extra or {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        out = {k: float(v) for k, v in engine.state.metrics.items() if np.isscalar(v)}
        out.update(self.extra)
        self.path.write_text(json.dumps(out, indent=2))


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
        self.skipped: list[dict] = []  # inputs screened out as unusable (bundle.engines.inputs.screen_inputs)

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
                "box": _jsonable(np.asarray(r["pred_box"])[keep]),
                "label": _jsonable(np.asarray(r["pred_label"]).reshape(-1)[keep]),
                "score": _jsonable(scores[keep]),
            }
            rec.update({k: _jsonable(r[k]) for k in self.keep_keys if k in r})
            self.records.append(rec)

    def _write(self, engine: Engine) -> None:
        self.output_path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"box_mode": self.box_mode, "coordinates": self.coordinates, "predictions": self.records, "skipped": self.skipped}
        self.output_path.write_text(json.dumps(doc, indent=1))
