"""Ignite engines that drive MONAI's RetinaNetDetector.

Why: MONAI's SupervisedTrainer/Evaluator call ``network(inputs)`` on a stacked batch, but a
detector takes a *list* of images of any size plus a list of target dicts and returns a loss
dict (training) or a list of box dicts (inference). These engines adapt that signature and
otherwise keep everything MONAI gives (handlers, metrics, AMP, events).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils import ForwardMode
from torch.utils.data import DataLoader

from bundle.networks.detector import IGNORE_KEY, IGNORE_LABEL


def flatten_batch(batchdata: Iterable) -> list[dict]:
    """A no_collation batch is a list of items; a cropping transform makes each item a list."""
    out: list[dict] = []
    for item in batchdata:
        if isinstance(item, dict):
            out.append(item)
        else:
            out.extend(flatten_batch(item))
    return out


def split_inputs(items: list[dict], device: torch.device, box_key: str, label_key: str, non_blocking: bool = False):
    """Images as a list and targets as the detector's list of {box, label[, ignore_box]} dicts.

    Boxes labelled ``IGNORE_LABEL`` travelled through the crop, flip and clip transforms with the real boxes;
    here they leave ``box`` for the target's ``ignore_box`` (bundle/networks/detector.py).
    """
    images = [torch.as_tensor(d["image"]).to(device, non_blocking=non_blocking) for d in items]  # NumPy from numpy_collation
    targets = []
    for d in items:
        if box_key in d:
            box = torch.as_tensor(d[box_key], dtype=torch.float32)
            lab = torch.as_tensor(d[label_key], dtype=torch.long).reshape(-1)
            box = box.reshape(len(lab), -1) if len(lab) else box
            ignore = lab == IGNORE_LABEL
            target = {box_key: box[~ignore].to(device), label_key: lab[~ignore].to(device)}
            if ignore.any():
                target[IGNORE_KEY] = box[ignore].to(device)
            targets.append(target)
    return images, targets


class DetectionTrainer(SupervisedTrainer):
    """Trains a RetinaNetDetector: loss = cls_weight * classification + box regression.

    A SupervisedTrainer (its loss is the detector's own) because MONAI FL's MonaiAlgo requires one.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: DataLoader | Iterable,
        detector: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        iteration_update: Callable | None = None,
        postprocessing: Callable | None = None,
        key_train_metric: dict | None = None,
        additional_metrics: dict | None = None,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        cls_loss_weight: float = 1.0,
        grad_clip: float | None = None,
    ) -> None:
        super().__init__(
            device=torch.device(device) if isinstance(device, str) else device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=detector.network,
            optimizer=optimizer,
            loss_function=None,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_train_metric=key_train_metric,
            additional_metrics=additional_metrics,
            train_handlers=train_handlers,
            amp=amp,
            decollate=False,
        )
        self.detector = detector
        self.network = detector.network  # handlers (CheckpointSaver, MONAI Label) look for .network
        self.optimizer = optimizer
        self.cls_loss_weight = cls_loss_weight
        self.grad_clip = grad_clip
        self.scaler = torch.amp.GradScaler("cuda") if amp else None

    def _iteration(self, engine: Any, batchdata: Any) -> dict:
        items = flatten_batch(batchdata)
        det = self.detector
        images, targets = split_inputs(items, engine.state.device, det.target_box_key, det.target_label_key, engine.non_blocking)
        det.train()
        engine.optimizer.zero_grad(set_to_none=True)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        if self.scaler is not None:
            with torch.autocast("cuda"):
                losses = det(images, targets)
        else:
            losses = det(images, targets)
        loss = self.cls_loss_weight * losses[det.cls_key] + losses[det.box_reg_key]
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(engine.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(det.network.parameters(), self.grad_clip)
            engine.optimizer.step()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return {
            "loss": loss.detach().item(),
            det.cls_key: losses[det.cls_key].detach().item(),
            det.box_reg_key: losses[det.box_reg_key].detach().item(),
        }


class DetectionEvaluator(SupervisedEvaluator):
    """Runs the detector (sliding window when set) and exposes pred/label lists to metrics and savers.

    A SupervisedEvaluator because MONAI FL's MonaiAlgo requires one.
    """

    def __init__(
        self,
        device: str | torch.device,
        val_data_loader: DataLoader | Iterable,
        detector: torch.nn.Module,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        postprocessing: Callable | None = None,
        key_val_metric: dict | None = None,
        additional_metrics: dict | None = None,
        val_handlers: Sequence | None = None,
        amp: bool = False,
        use_inferer: bool = True,
    ) -> None:
        super().__init__(
            device=torch.device(device) if isinstance(device, str) else device,
            val_data_loader=val_data_loader,
            network=detector.network,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            key_val_metric=key_val_metric,
            additional_metrics=additional_metrics,
            val_handlers=val_handlers,
            amp=amp,
            mode=ForwardMode.EVAL,
            decollate=False,
        )
        self.detector = detector
        self.network = detector.network
        self.use_inferer = use_inferer
        # applied per image dict (boxes to world coordinates, mode conversion, ...)
        self.item_postprocessing = postprocessing

    def _iteration(self, engine: Any, batchdata: Any) -> dict:
        items = flatten_batch(batchdata)
        det = self.detector
        images, targets = split_inputs(items, engine.state.device, det.target_box_key, det.target_label_key, engine.non_blocking)
        det.eval()
        with torch.no_grad():
            if engine.amp:
                with torch.autocast("cuda"):
                    preds = det(images, use_inferer=self.use_inferer)
            else:
                preds = det(images, use_inferer=self.use_inferer)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        out = []
        for i, (item, pred) in enumerate(zip(items, preds)):
            rec = dict(item)
            rec["pred_box"] = pred[det.target_box_key].detach().float().cpu()
            rec["pred_label"] = pred[det.target_label_key].detach().cpu()
            rec["pred_score"] = pred[det.pred_score_key].detach().float().cpu()
            if i < len(targets):
                rec["box"] = targets[i][det.target_box_key].cpu()
                rec["label"] = targets[i][det.target_label_key].cpu()
            out.append(rec)
        if self.item_postprocessing is not None:
            out = [self.item_postprocessing(r) for r in out]
        return {"items": out}
