"""The training data pipeline: a lean cache that draws read without copying, augmented without meta tracking.

Why: MONAI's CacheDataset keeps the deterministic head of the transforms in memory (decoded, normalised
and padded key slices; decoded whole volumes for configs/train_series.yaml), but by default it deep-copies
the cached item on every draw (a whole volume, and the image file's header with it), MONAI's box crop
deep-copies it again for every crop, and the random part runs with MetaTensor tracking, whose bookkeeping
costs more than the arithmetic on a 96x96 crop. So MONAI's cached path was barely faster than decoding
every file again. :class:`LeanCacheDataset` caches plain tensors, shares them with the random transforms
(they read them and write new tensors: tests/engines/test_loader.py checks that the cache is unchanged and that
the batches are those of MONAI's CacheDataset, bit for bit) and runs those with tracking off; the last
transforms of train.yaml drop the metadata anyway. :func:`numpy_collation` hands batches from the worker
processes over cheaply, :func:`default_workers` sizes the workers to the machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from copy import deepcopy
from typing import Any

import torch
from monai.data import CacheDataset, MetaTensor, get_track_meta, set_track_meta
from monai.transforms import Compose, RandomizableTrait, Transform


def default_workers(cap: int = 8) -> int:
    """DataLoader worker processes for this machine: half of the cores this process may use, at most ``cap``.

    Half: the other half runs the network's threads on a CPU, or feeds the GPU; one core gets none (loading
    then runs between the steps in the main process).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(cap, cores // 2))


@contextmanager
def meta_tracking(on: bool) -> Iterator[None]:
    """MONAI's global MetaTensor tracking switched for the block, and back afterwards."""
    was = get_track_meta()
    set_track_meta(on)
    try:
        yield
    finally:
        set_track_meta(was)


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _tensors(v)


def _storage(t: torch.Tensor) -> int:
    """Where a tensor's memory starts (0 for an empty one: nothing to share)."""
    s = t.untyped_storage()
    return s.data_ptr() if s.nbytes() else 0


def _unshare(obj: Any, cached: set[int]) -> Any:
    """Outputs that are views into the cache (a crop no later transform copied) become tensors of their own."""
    if isinstance(obj, torch.Tensor):
        return obj.clone() if _storage(obj) in cached else obj
    if isinstance(obj, dict):
        return {k: _unshare(v, cached) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unshare(v, cached) for v in obj]
    return obj


def _numpy(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy()
    if isinstance(obj, dict):
        return {k: _numpy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_numpy(v) for v in obj]
    return obj


def numpy_collation(batch: list) -> list:
    """MONAI's ``no_collation`` (the batch stays a list of items) with every tensor as a NumPy array.

    Why: a worker hands a tensor over through a shared-memory file of its own, one per tensor; a batch of 8
    crops (24 tensors) took about 8 ms of the training process's time to receive, NumPy arrays in one pickle
    about 1.4 ms. The engine (bundle/engines/detection.py split_inputs) turns them back into tensors.
    """
    return _numpy(batch)


def plain_tensors(item: Any) -> Any:
    """The cached item with its MetaTensors as plain tensors: the image file's header and transform history dropped.

    Why: MONAI's RandCropBoxByPosNegLabeld deep-copies the whole item for every crop; with the header in the
    metadata (about 40 entries) that copy cost more than the crop (the key-slice loader ran 2x faster without).
    Nothing after the cache reads the metadata: the slicing of a volume (bundle/transforms/slices.py) gives
    its slice an affine that the last transforms drop with the rest.
    """
    if isinstance(item, MetaTensor):
        return item.as_tensor()
    if isinstance(item, dict):
        return {k: plain_tensors(v) for k, v in item.items()}
    if isinstance(item, list):
        return [plain_tensors(v) for v in item]
    return item


class LeanCacheDataset(CacheDataset):
    """CacheDataset whose draws share the cached item (``copy_cache=False`` by default) and augment with tracking off.

    ``track_meta_random``: MetaTensor tracking during the random transforms (off: the same numbers, a third of
    the time). A transform added after the first random one must not write into its input in place, or
    ``copy_cache=True`` is needed (then a draw deep-copies the item, as MONAI does). Items beyond
    ``cache_rate`` run the whole chain as in MONAI's Dataset.
    """

    def __init__(self, data, transform, *args, copy_cache: bool = False, track_meta_random: bool = False, **kwargs) -> None:
        self.track_meta_random = track_meta_random
        super().__init__(data, transform, *args, copy_cache=copy_cache, **kwargs)

    def _load_cache_item(self, idx: int):
        return plain_tensors(super()._load_cache_item(idx))

    def _first_random(self) -> int | None:
        if not isinstance(self.transform, Compose):
            raise ValueError("transform must be an instance of monai.transforms.Compose")
        return self.transform.get_index_of_first(lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform))

    def _transform(self, index: int):
        cache_index = index % len(self) if index % len(self) < self.cache_num and not self.hash_as_key else None
        if cache_index is None or self._first_random() is None:
            return super()._transform(index)
        data = self._cache[cache_index]
        if data is None:  # runtime cache
            data = self._cache[cache_index] = self._load_cache_item(cache_index)
        cached = {_storage(t) for t in _tensors(data)} - {0}
        item = deepcopy(data) if self.copy_cache else dict(data) if isinstance(data, dict) else data
        with meta_tracking(self.track_meta_random):
            out = self.transform(item, start=self._first_random())
        return out if self.copy_cache else _unshare(out, cached)
