"""Multi-process training the model zoo's way: torchrun, train.yaml + multi_gpu_train.yaml, gloo on CPU."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from bundle.engines.checkpoints import network_weights

TINY = ["--epochs", "2", "--val_interval", "2", "--batch_size", "2", "--num_samples", "1", "--num_workers", "0"]
TINY += ["--patch_size", "[64,64]", "--val_patch_size", "[64,64]"]


def small_demo(tiny_demo: Path, out: Path, n_validation: int = 4) -> Path:
    """The tiny demo (linked, not copied) with its first n_validation validation slices: validation takes seconds."""
    out.mkdir(parents=True, exist_ok=True)
    for p in tiny_demo.iterdir():
        if p.name != "datalist.json":
            (out / p.name).symlink_to(p)
    d = json.loads((tiny_demo / "datalist.json").read_text())
    d["validation"] = d["validation"][:n_validation]
    (out / "datalist.json").write_text(json.dumps(d))
    return out


def test_rank_zero_handler_indices_name_the_loggers(repo_root):
    """multi_gpu_train.yaml disables train.yaml's loggers on ranks > 0 by list index: the indices must name them."""
    gpu = ConfigParser.load_config_file(str(repo_root / "configs" / "multi_gpu_train.yaml"))
    train = ConfigParser.load_config_file(str(repo_root / "configs" / "train.yaml"))
    disabled = [k.removesuffix("#_disabled_") for k in gpu if k.endswith("#_disabled_")]
    assert len(disabled) == 4
    for key in disabled:
        section, handlers, index = key.split("#")
        target = train[section][handlers][int(index)]["_target_"]
        assert target in ("StatsHandler", "TensorBoardStatsHandler"), (key, target)


@pytest.mark.slow
def test_torchrun_two_processes_train_and_the_checkpoint_validates(repo_root, tiny_demo, tmp_path):
    demo = small_demo(tiny_demo, tmp_path / "demo")  # 4 validation slices: 2 a rank
    root, logs = tmp_path / "bundle", tmp_path / "logs"
    data = ["--bundle_root", str(root), "--dataset_dir", str(demo), "--data_list_file_path", str(demo / "datalist.json")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--log-dir", str(logs), "--redirects", "3",
           "-m", "monai.bundle", "run", "--config_file", "['configs/train.yaml','configs/multi_gpu_train.yaml']",
           "--logging_file", "configs/logging.conf", *data, *TINY]  # fmt: skip
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=240)
    rank_logs = {int(p.parent.name): p.read_text() for p in logs.rglob("stdout.log")}
    assert proc.returncode == 0, proc.stderr[-3000:] + "".join(p.read_text()[-2000:] for p in logs.rglob("std*.log"))

    # each rank trained on its half: 12 training slices / 2 ranks / batch 2 = 3 iterations an epoch, not 6
    assert "Epoch: 2/2, Iter: 3/3" in rank_logs[0]
    assert re.search(r"Key metric: val_mAP best value: [0-9.]+ at epoch: 2", rank_logs[0])
    assert "Epoch: " not in rank_logs[1] and "Key metric" not in rank_logs[1]  # rank 1 logs warnings only

    # rank 0 alone wrote: the weights, n_saved training states, one TensorBoard file per handler, all from one process
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    events = [f for f in files if "tfevents" in f]
    assert [f for f in files if f not in events] == [
        "models/grid.json",  # planned by every rank, written by rank 0
        "models/model.pt",
        "models/model_key_metric.json",
        "models/train_state/train_state_checkpoint_epoch=1.pt",
        "models/train_state/train_state_checkpoint_epoch=2.pt",
    ]
    assert len(events) == 2 and len({f.split(".")[-2] for f in events}) == 1, events  # name ends .<pid>.<n>

    # model.pt is the bare network (DDP unwrapped): it loads strictly into a plain network_def and evaluates
    parser = ConfigParser()
    parser.read_config(str(repo_root / "configs" / "train.yaml"))
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(network_weights(root / "models" / "model.pt"), strict=True)
    weights = torch.load(root / "models" / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in weights)
    ev = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "['configs/train.yaml','configs/evaluate.yaml']",
         *data, "--n_bootstrap", "20", "--val_patch_size", "[64,64]"],
        cwd=repo_root, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert ev.returncode == 0, ev.stderr[-3000:]
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert metrics and (root / "eval" / "predictions_test.json").is_file()
