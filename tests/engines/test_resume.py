"""A training killed mid-epoch (SIGKILL) restarts from its last state without losing the validated best model."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.handlers import CheckpointSaver
from monai.transforms import Compose, RandFlipd, RandGaussianNoised

from bundle.engines.checkpoints import KeyMetricState, ResumeState

TINY = ["--batch_size", "4", "--num_samples", "1", "--num_workers", "0", "--patch_size", "[64,64]", "--val_patch_size", "[64,64]"]


def _draws(transforms: list) -> list:
    return [torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random(), *[t.R.rand() for t in transforms]]


def test_resume_state_restores_every_generator_and_the_scaler():
    aug = Compose([RandFlipd("image", prob=0.5), RandGaussianNoised("image", prob=0.5)])
    trainer = type("T", (), {"scaler": torch.amp.GradScaler("cpu", init_scale=8.0)})()
    state = ResumeState(trainer, aug)
    assert len(state.transforms) >= 3  # the Compose, both transforms (and the noise transform's inner one)
    saved = state.state_dict()
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"resume_state_{os.getpid()}.pt"
    torch.save(saved, path)  # the training state is read back with weights_only=True: it must survive that
    saved = torch.load(path, weights_only=True)
    path.unlink()
    expected = _draws(state.transforms)
    trainer.scaler.scale(torch.tensor(1.0))  # the scaler learned another scale since
    trainer.scaler.update(new_scale=2.0)
    ResumeState(trainer, aug).load_state_dict(saved)
    assert _draws(state.transforms) == expected
    assert trainer.scaler.get_scale() == 8.0


def test_a_best_saved_after_the_training_state_is_not_replaced_by_a_worse_one(tmp_path):
    net = torch.nn.Linear(2, 1)

    def saver():
        return CheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_name="m", key_metric_filename="model.pt")

    first = saver()
    first_state = KeyMetricState(first)
    engine = Engine(lambda e, b: None)
    engine.state.metrics = {"m": 0.3}
    first.metrics_completed(engine)
    state = first_state.state_dict()  # the training state saved here ...
    torch.nn.init.constant_(net.weight, 1.0)
    engine.state.metrics = {"m": 0.6}
    first.metrics_completed(engine)  # ... and a better model after it, then the run is killed
    assert json.loads((tmp_path / "model_key_metric.json").read_text())["priority"] == 0.6
    before = (tmp_path / "model.pt").read_bytes()

    resumed = saver()
    KeyMetricState(resumed).load_state_dict(state)
    torch.nn.init.constant_(net.weight, 2.0)
    engine.state.metrics = {"m": 0.5}  # better than the state's 0.3, worse than model.pt's 0.6
    resumed.metrics_completed(engine)
    assert (tmp_path / "model.pt").read_bytes() == before
    engine.state.metrics = {"m": 0.7}
    resumed.metrics_completed(engine)
    assert (tmp_path / "model.pt").read_bytes() != before
    assert json.loads((tmp_path / "model_key_metric.json").read_text())["priority"] == 0.7


def _wait_for(log: Path, pattern: str, proc: subprocess.Popen, timeout: float = 150) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if re.search(pattern, log.read_text() if log.exists() else ""):
            return
        if proc.poll() is not None:
            raise AssertionError(f"training ended (exit {proc.returncode}) before {pattern!r}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"no {pattern!r} within {timeout} s:\n{log.read_text()[-3000:]}")


def _validations(text: str) -> list[tuple[int, float]]:
    return [(int(e), float(v)) for e, v in re.findall(r"Epoch\[(\d+)\] Metrics -- val_mAP: ([0-9.]+)", text)]


@pytest.mark.slow
def test_training_killed_mid_epoch_resumes_and_keeps_the_best_model(repo_root, tiny_demo, tmp_path):
    from tests.distributed.test_distributed import small_demo

    demo = small_demo(tiny_demo, tmp_path / "demo")
    root = tmp_path / "bundle"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.yaml", "--logging_file", "configs/logging.conf",
           "--bundle_root", str(root), "--dataset_dir", str(demo), "--data_list_file_path", str(demo / "datalist.json"),
           "--epochs", "2", "--val_interval", "1", *TINY]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first_log = tmp_path / "first.log"
    with open(first_log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=repo_root, stdout=out, stderr=subprocess.STDOUT, env=env)
        # epoch 1 validated (model.pt) and saved its state; kill in the middle of epoch 2
        _wait_for(first_log, r"Epoch: 2/2, Iter: 1/3", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    models = root / "models"
    states = sorted(p.name for p in (models / "train_state").glob("*.pt"))
    assert states == ["train_state_checkpoint_epoch=1.pt"], states
    record = json.loads((models / "model_key_metric.json").read_text())
    best_before, weights_before = record["priority"], (models / "model.pt").read_bytes()
    assert _validations(first_log.read_text()) == [(1, pytest.approx(best_before, abs=1e-4))]

    rerun = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, env=env, timeout=240)
    log = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, log[-3000:]
    assert re.search(r"resuming training from .*train_state_checkpoint_epoch=1\.pt \(epoch 1 of 2\)", log)
    assert "Epoch: 1/2" not in log and "Epoch: 2/2, Iter: 1/3" in log  # epoch 1 is not trained again
    assert "Epoch[2] Complete" in log
    assert sorted(p.name for p in (models / "train_state").glob("*.pt")) == [
        "train_state_checkpoint_epoch=1.pt",
        "train_state_checkpoint_epoch=2.pt",
    ]
    final = torch.load(models / "train_state" / "train_state_checkpoint_epoch=2.pt", weights_only=True)
    assert set(final) >= {"model", "optimizer", "lr_scheduler", "trainer", "best_model", "rng_and_scaler"}

    # the best model only ever improves: model.pt is the best of epoch 1 and the resumed validations
    resumed = _validations(log)
    assert [e for e, _ in resumed] == [2]
    best_after = json.loads((models / "model_key_metric.json").read_text())["priority"]
    assert best_after == pytest.approx(max([best_before] + [v for _, v in resumed]), abs=1e-4)
    assert [x[0] for x in final["best_model"]["_saved"]] == [pytest.approx(best_after)]
    if best_after == best_before:
        assert (models / "model.pt").read_bytes() == weights_before
