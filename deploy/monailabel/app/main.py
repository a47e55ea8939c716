"""The MONAI Label app for this bundle: detection in 3D Slicer, /train from reviewed boxes, and active learning.

MONAI Label's sample ``monaibundle`` app serves the bundle's inference and training; this app does the same
(``BundleInferTask``, ``BundleTrainTask`` for every bundle under ``model/``) and adds the strategy that tells
a radiologist which study to review next (``/activelearning/detection_uncertainty``; lib/detection_uncertainty.py)
and its scoring method (``/scoring/detection_uncertainty``). docs/deployment.md shows the loop in Slicer.

    monailabel start_server --app deploy/monailabel/app --studies /data/studies --conf models brain_mri_tumor_detection
"""

from __future__ import annotations

import logging
import os

import monailabel
from lib.detection_uncertainty import DetectionUncertainty, DetectionUncertaintyScoring
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask
from monailabel.utils.others.generic import get_bundle_models, strtobool

logger = logging.getLogger(__name__)


class MyApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict):
        self.models = get_bundle_models(app_dir, conf)
        # one strategy for the first bundle that ships the active-learning config (this bundle does)
        paths = [b for b in self.models.values() if os.path.isfile(os.path.join(b, "configs", "active_learning.yaml"))]
        self.scoring = DetectionUncertaintyScoring(paths[0]) if paths else None
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"Brain MRI tumor detection ({monailabel.__version__})",
            description="Tumor boxes on T1 post-contrast MRI from a MONAI bundle, with a review loop that teaches it",
            version=monailabel.__version__,
        )

    def init_infers(self) -> dict[str, InferTask]:
        return {n: BundleInferTask(b, self.conf) for n, b in self.models.items()}

    def init_trainers(self) -> dict[str, TrainTask]:
        if strtobool(self.conf.get("skip_trainers", "false")):
            return {}
        trainers = {n: BundleTrainTask(b, self.conf) for n, b in self.models.items()}
        return {n: t for n, t in trainers.items() if t and t.is_valid()}

    def init_strategies(self) -> dict[str, Strategy]:
        strategies: dict[str, Strategy] = {"random": Random(), "first": First()}
        if self.scoring:
            strategies["detection_uncertainty"] = DetectionUncertainty(self.scoring)
        logger.info(f"Active Learning Strategies:: {list(strategies)}")
        return strategies

    def init_scoring_methods(self) -> dict[str, ScoringMethod]:
        return {"detection_uncertainty": self.scoring} if self.scoring else {}
