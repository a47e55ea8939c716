"""COCO mAP/mAR through MONAI's COCOMetric, and an ignite metric for validation.

Why: the model zoo reports COCO mAP; wrapping MONAI's implementation keeps our figures
comparable with the zoo's detection bundles.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ignite.metrics import Metric
from monai.apps.detection.metrics.coco import COCOMetric
from monai.apps.detection.metrics.matching import matching_batch
from monai.data.box_utils import box_iou

from bundle.metrics.matching import best_f1_threshold, match_image

IOU_RANGE = (0.1, 0.5, 0.05)  # start, end (included), step: small lesions make IoU 0.5:0.95 too harsh
MAX_DETECTION = 100


def coco_label(kind: str = "mAP", iou_range: Sequence[float] = IOU_RANGE, max_detection: int = MAX_DETECTION) -> str:
    """The exact name of a COCO figure, e.g. 'COCO mAP@[IoU 0.10:0.50:0.05]': a bare "mAP" hides its IoU range."""
    lo, hi, step = iou_range
    return f"COCO {kind}@[IoU {lo:.2f}:{hi:.2f}:{step:.2f}], max {max_detection} detections per image"


def coco_key(kind: str = "mAP", iou_range: Sequence[float] = IOU_RANGE, max_detection: int = MAX_DETECTION) -> str:
    """The key MONAI's COCOMetric gives that figure."""
    lo, hi, step = iou_range
    return f"{kind}_IoU_{lo:.2f}_{hi:.2f}_{step:.2f}_MaxDet_{max_detection}"


def coco_metrics(
    pred_boxes: Sequence,
    pred_scores: Sequence,
    pred_labels: Sequence,
    gt_boxes: Sequence,
    gt_labels: Sequence,
    classes: Sequence[str] = ("tumor",),
    iou_range: tuple[float, float, float] = IOU_RANGE,
    iou_list: Sequence[float] = (0.1, 0.5),
    max_detection: int = MAX_DETECTION,
) -> dict[str, float]:
    """COCO mAP/mAR over iou_range plus AP/AR at each IoU in iou_list, one entry per image in each list."""
    metric = COCOMetric(classes=list(classes), iou_list=list(iou_list), iou_range=list(iou_range), max_detection=[max_detection])
    as_np = [[np.asarray(x) for x in seq] for seq in (pred_boxes, pred_scores, pred_labels, gt_boxes, gt_labels)]
    pb, ps, pl, gb, gl = as_np
    dims = next((b.shape[-1] for b in pb + gb if b.size), 4)
    pb = [b.reshape(-1, dims).astype(np.float64) for b in pb]
    gb = [b.reshape(-1, dims).astype(np.float64) for b in gb]
    results = matching_batch(
        iou_fn=box_iou,
        iou_thresholds=metric.iou_thresholds,
        pred_boxes=pb,
        pred_classes=[x.reshape(-1).astype(int) for x in pl],
        pred_scores=[x.reshape(-1).astype(np.float64) for x in ps],
        gt_boxes=gb,
        gt_classes=[x.reshape(-1).astype(int) for x in gl],
        max_detections=max_detection,
    )
    return {k: float(v) for k, v in metric(results)[0].items()}


class DetectionMetric(Metric):
    """Accumulates an evaluator's per-image predictions; computes COCO mAP and best F1 at IoU 0.5.

    ``output_key`` selects the reported number (the validation key metric), the rest go to
    ``engine.state.metric_details``-style logging via ``last_results``.
    """

    def __init__(self, output_key: str = "mAP", iou_threshold: float = 0.5, device: str | torch.device = "cpu") -> None:
        self.output_key = output_key
        self.iou_threshold = iou_threshold
        self.last_results: dict[str, float] = {}
        super().__init__(output_transform=lambda x: x, device=device)

    def reset(self) -> None:
        self._records: list[dict] = []

    def iteration_completed(self, engine) -> None:
        """The evaluator's output is {"items": [per-image dicts]}, not ignite's (y_pred, y)."""
        self.update(engine.state.output["items"])

    def update(self, output) -> None:
        for r in output:
            self._records.append({k: np.asarray(r[k]) for k in ("pred_box", "pred_score", "pred_label", "box", "label") if k in r})

    def compute(self) -> float:
        recs = self._records
        if not recs:
            return 0.0
        res = coco_metrics(
            [r["pred_box"] for r in recs],
            [r["pred_score"] for r in recs],
            [r["pred_label"] for r in recs],
            [r.get("box", np.zeros((0, 4))) for r in recs],
            [r.get("label", np.zeros(0)) for r in recs],
        )
        summary = {
            "mAP": res.get(coco_key("mAP"), 0.0),
            "mAR": res.get(coco_key("mAR"), 0.0),
            "AP_IoU_0.50": res.get("AP_IoU_0.50_MaxDet_100", 0.0),
        }
        matches = [
            match_image(r["pred_box"], r["pred_score"], r.get("box", np.zeros((0, 4))), iou_threshold=self.iou_threshold) for r in recs
        ]
        thr, best = best_f1_threshold(matches)
        summary.update({"F1": best["f1"], "precision": best["precision"], "recall": best["recall"], "threshold": thr})
        self.last_results = summary
        return float(summary[self.output_key])

    def completed(self, engine, name: str) -> None:
        """Publish every figure, not only the key one, so StatsHandler and JSON writers see them."""
        super().completed(engine, name)
        for k, v in self.last_results.items():
            engine.state.metrics[f"{name}_{k}"] = v
