"""The training loader (bundle/engines/loader.py): MONAI's CacheDataset batches, bit for bit, from a cache no draw changes."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SERIES = "datalist_volumes_loader_test.json"


@pytest.fixture(scope="module")
def series_demo(tiny_demo) -> Path:
    """The tiny demo's training and validation volumes as a whole-series datalist (configs/train_series.yaml)."""
    from bundle.demo.volumes import write_volume_datalist

    write_volume_datalist(tiny_demo, tiny_demo / SERIES, ("training", "validation"))
    return tiny_demo


def _parser(demo: Path, series: bool, workers: int, monai_cache: bool = False):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / "train.yaml")] + ([str(ROOT / "configs" / "train_series.yaml")] if series else []))
    parser.update({"dataset_dir": str(demo), "num_workers": workers, "device": "$torch.device('cpu')", "amp": False, "seed": 5})
    parser.update({"patch_size": [64, 64], "batch_size": 2})
    if series:
        parser["data_list_file_path"] = str(demo / SERIES)
    if monai_cache:  # the previous path: MONAI's CacheDataset, a deep copy per draw, tracked metadata
        parser["train#dataset#_target_"] = "CacheDataset"
    return parser


def _batches(parser, epochs: int) -> tuple[list, object]:
    from monai.utils import set_determinism

    from bundle.engines.detection import flatten_batch

    set_determinism(seed=parser["seed"])
    loader = parser.get_parsed_content("train#dataloader")
    out = [[{k: d[k] for k in ("image", "box", "label")} for d in flatten_batch(b)] for _ in range(epochs) for b in loader]
    set_determinism(seed=None)
    return out, loader.dataset


def _same(a: list, b: list) -> bool:
    flat_a, flat_b = [d for x in a for d in x], [d for x in b for d in x]
    return len(flat_a) == len(flat_b) and all(
        torch.equal(torch.as_tensor(x[k]), torch.as_tensor(y[k])) for x, y in zip(flat_a, flat_b) for k in x
    )


@pytest.mark.parametrize(("series", "workers"), [(False, 0), (False, 2), (True, 0)])
def test_lean_cache_gives_monai_cache_batches_and_leaves_the_cache_alone(series_demo, series, workers):
    from bundle.engines.loader import LeanCacheDataset, _storage

    new_parser = _parser(series_demo, series, workers)
    ds = new_parser.get_parsed_content("train#dataset")
    assert isinstance(ds, LeanCacheDataset) and not ds.copy_cache
    before = copy.deepcopy(ds._cache)
    new, drawn_from = _batches(new_parser, epochs=3)
    assert drawn_from is ds
    old, old_ds = _batches(_parser(series_demo, series, workers, monai_cache=True), epochs=3)
    assert type(old_ds).__name__ == "CacheDataset" and len(new) == len(old) > 0
    assert _same(new, old), "the lean cache changed the training batches"
    # no draw wrote into the cache, and no batch tensor is a view into it
    assert all(
        torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for a, b in zip(before, ds._cache) for k in ("image", "box", "label")
    )
    cached = {_storage(t) for item in ds._cache for t in item.values() if isinstance(t, torch.Tensor)} - {0}
    assert not any(_storage(torch.as_tensor(d[k])) in cached for batch in new for d in batch for k in d)
    if series:  # the cache holds whole volumes, each drawn from several times an epoch
        assert ds._cache[0]["image"].ndim == 4


def test_default_workers_follow_the_cores(monkeypatch):
    import os

    from bundle.engines import loader

    for cores, workers in ((1, 0), (2, 1), (6, 3), (64, 8)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)), raising=False)
        assert loader.default_workers() == workers


def test_train_config_fixes_its_workers_and_takes_an_override(tiny_demo):
    """A fixed default: the worker count is part of what a seed fixes, so it must not follow the machine."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "train.yaml"))
    assert parser.get_parsed_content("num_workers") == 2
    parser.update({"dataset_dir": str(tiny_demo), "num_workers": 1, "persistent_workers": True})
    loader = parser.get_parsed_content("train#dataloader")
    assert loader.num_workers == 1 and loader.persistent_workers
