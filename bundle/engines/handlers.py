"""Ignite handlers that write an evaluation run's figures; the prediction files are bundle.inference.predictions'."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from ignite.engine import Engine, Events


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
