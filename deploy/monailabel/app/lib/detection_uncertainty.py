"""MONAI Label active learning for this detection bundle: score unreviewed studies, serve the most uncertain first.

Why: upstream MONAI Label has epistemic (dropout) scoring for segmentation only; a detector's uncertainty is in
its boxes. Each unreviewed study is run through the served bundle's own volume inference (the boxes /infer
returns, but kept down to the lowest score that can count), and its box scores are kept in the datastore's image
info for the current model file. The strategy ranks studies with the bundle's rule
(bundle/activelearning/uncertainty.py, knobs in configs/active_learning.yaml) at the shipped operating point.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import torch
from monai.bundle import ConfigParser, ConfigWorkflow
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy

logger = logging.getLogger(__name__)

KEY = "detection_uncertainty"


@contextlib.contextmanager
def _on_path(path: str) -> Iterator[None]:
    """The bundle root on sys.path while its code runs (what MONAI Label's bundle tasks do)."""
    added = path not in sys.path
    if added:
        sys.path.insert(0, path)
    try:
        yield
    finally:
        if added and path in sys.path:
            sys.path.remove(path)


class DetectionUncertaintyScoring(ScoringMethod):
    """Run the bundle on every unreviewed study not yet scored by the current model; store its box scores."""

    def __init__(self, bundle_path: str):
        super().__init__("Detector's box scores near the shipped operating point (bundle inference per study)")
        self.bundle_path = bundle_path

    def model_ts(self) -> int:
        model = os.path.join(self.bundle_path, "models", "model.pt")
        return int(os.stat(model).st_mtime) if os.path.exists(model) else 0

    def rule_and_threshold(self) -> tuple[Any, float, str]:
        """The bundle's uncertainty rule, the operating point shipped beside its model, and what its scores are."""
        with _on_path(self.bundle_path):
            from bundle.inference import operating_point

            parser = ConfigParser()
            parser.read_config(os.path.join(self.bundle_path, "configs", "active_learning.yaml"))
            rule = parser.get_parsed_content("uncertainty_rule")
            threshold = float(operating_point.load(os.path.join(self.bundle_path, "models"))["score_threshold"])
        return rule, threshold, operating_point.SCORE_KIND

    def box_scores(self, image: str, lowest: float, device: str) -> list[float]:
        """The served bundle's own volume inference on one study, every box scoring at least ``lowest``."""
        with _on_path(self.bundle_path), tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "predictions.json")
            wf = ConfigWorkflow(
                config_file=os.path.join(self.bundle_path, "configs", "inference.yaml"),
                meta_file=os.path.join(self.bundle_path, "configs", "metadata.json"),
                workflow_type="infer",
                bundle_root=self.bundle_path,
                input_image=image,
                output_path=out,
                score_threshold=lowest,
                device=f"$torch.device('{device}')",
            )
            wf.initialize()
            wf.run()
            wf.finalize()
            with open(out) as f:
                return [float(s) for s in json.load(f)["predictions"][0]["score"]]

    def __call__(self, request: dict, datastore: Datastore) -> dict:
        rule, threshold, kind = self.rule_and_threshold()
        ts = self.model_ts()
        device = request.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        done, skipped, t0 = 0, 0, time.time()
        for image_id in datastore.get_unlabeled_images():
            if datastore.get_image_info(image_id).get(f"{KEY}_ts") == ts:
                skipped += 1
                continue
            scores = self.box_scores(datastore.get_image_uri(image_id), rule.lowest_score(threshold, kind), device)
            figures = rule.study(scores, threshold, kind)
            datastore.update_image_info(image_id, {f"{KEY}_scores": scores, f"{KEY}_ts": ts, KEY: figures["uncertainty"]})
            done += 1
        summary = {"executed": done, "skipped": skipped, "threshold": threshold, "latency": round(time.time() - t0, 3)}
        logger.info(f"{KEY}: {summary}")
        return summary


class DetectionUncertainty(Strategy):
    """The unreviewed study whose boxes sit most, and closest, around the operating point (scored on demand)."""

    def __init__(self, scoring: DetectionUncertaintyScoring):
        super().__init__("Most uncertain study first: boxes near the detector's shipped operating point")
        self.scoring = scoring

    def __call__(self, request: dict, datastore: Datastore) -> dict | None:
        images = datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels"))
        if not images:
            return None
        self.scoring(request, datastore)  # studies new since the last call, or all after /train wrote a new model
        rule, threshold, kind = self.scoring.rule_and_threshold()
        with _on_path(self.scoring.bundle_path):
            from bundle.activelearning.uncertainty import rank

            ranked = rank({i: datastore.get_image_info(i).get(f"{KEY}_scores", []) for i in images}, threshold, rule, kind)
        image, figures = ranked[0]
        logger.info(f"{KEY}: selected {image} {figures}; next: {[k for k, _ in ranked[1:4]]}")
        return {"id": image, **figures, "threshold": threshold}
