"""One split of a volume datalist run through the volume detector, its boxes saved: evaluate_volume.yaml's block.

Why: the validation and the test split are evaluated the same way (the datalist's split through the inference
preprocessing, the checkpoint loaded, every box saved down to a floor); only the split differs. The config writes
this block once and runs it per split (``per_split``), instead of two copies of a dataset, loader, handlers and evaluator.
"""

from __future__ import annotations

import os

import torch
from monai.data import DataLoader, Dataset
from monai.data.utils import no_collation
from monai.handlers import CheckpointLoader

from bundle.datalist import schema as datalist_schema
from bundle.engines.detection import DetectionEvaluator
from bundle.inference.predictions import VolumeDetectionSaver


class SplitEvaluation:
    """The ``split`` of ``datalist_file`` (boxes xyzxyz) through ``detector``; boxes saved to ``output_path``.

    ``datalist``, ``handlers`` and ``output_path`` are what the config's input screening and the report read;
    ``evaluator`` is the MONAI engine ``run()`` runs.
    """

    def __init__(
        self,
        split: str,
        datalist_file: str,
        output_dir: str,
        preprocessing,
        detector: torch.nn.Module,
        network: torch.nn.Module,
        ckpt_path: str,
        device: str | torch.device,
        amp: bool = False,
        save_score_threshold: float = float("-inf"),
    ) -> None:
        self.split = split
        self.datalist = datalist_schema.load_datalist(datalist_file, split, os.path.dirname(datalist_file), box_mode="xyzxyz")
        self.output_path = os.path.join(output_dir, f"predictions_volume_{split}.json")
        loader = DataLoader(
            Dataset(self.datalist, transform=preprocessing), batch_size=1, shuffle=False, num_workers=0, collate_fn=no_collation
        )
        self.handlers = [
            CheckpointLoader(load_path=ckpt_path, load_dict={"model": network}, map_location=device),
            VolumeDetectionSaver(output_path=self.output_path, score_threshold=save_score_threshold),
        ]
        self.evaluator = DetectionEvaluator(
            device=device, val_data_loader=loader, detector=detector, val_handlers=self.handlers, amp=amp, use_inferer=True
        )

    def run(self) -> None:
        self.evaluator.run()


def per_split(splits: list[str], **kwargs) -> dict[str, SplitEvaluation]:
    """One :class:`SplitEvaluation` per split, the same settings for each (the config's ``volume_eval``)."""
    return {split: SplitEvaluation(split, **kwargs) for split in splits}
