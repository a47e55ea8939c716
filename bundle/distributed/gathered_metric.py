"""What multi-process training (torchrun, configs/multi_gpu_train.yaml) needs beyond MONAI's own parts.

Why: each process validates its DistributedSampler share of the validation set, but COCO mAP and the
best F1 are not averages of per-share figures; they need every image's boxes. The metric gathers all
shares before computing, so every rank gets the same figure over the whole set and the best-model
saver on rank 0 decides on it.
"""

from __future__ import annotations

import torch.distributed as dist

from bundle.metrics.coco import DetectionMetric


def is_main_process() -> bool:
    """True outside torch.distributed and on rank 0: the one process that writes files."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class GatheredDetectionMetric(DetectionMetric):
    """DetectionMetric over the images of every rank (a no-op gather in a single process)."""

    def compute(self) -> float:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            shares: list = [None] * dist.get_world_size()
            dist.all_gather_object(shares, self._records)
            self._records = [r for share in shares for r in share]
        return super().compute()
