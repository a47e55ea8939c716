"""Checkpoint formats and resuming: model.pt is the weights alone; training resumes from its own state files."""

from __future__ import annotations

import json

import pytest
import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigWorkflow
from monai.handlers import CheckpointLoader, CheckpointSaver

from bundle.engines.checkpoints import KeyMetricState, convert, main, network_weights, resume_path
from bundle.inference.inputs import inference_datalist, require_inputs

TINY = {"batch_size": 2, "num_samples": 1, "num_workers": 0, "patch_size": [64, 64], "val_patch_size": [64, 64], "val_interval": 1}


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))


def _same(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_weights_load_from_both_formats_and_convert(tmp_path, capsys):
    net = _net()
    sd = net.state_dict()
    torch.save(sd, tmp_path / "new.pt")
    torch.save({"model": sd, "optimizer": torch.optim.SGD(net.parameters(), lr=0.1).state_dict()}, tmp_path / "old.pt")
    assert _same(network_weights(tmp_path / "new.pt"), sd)
    assert _same(network_weights(tmp_path / "old.pt"), sd)
    # MONAI's CheckpointLoader with the configs' load_dict {"model": network} reads both as well
    for name in ("new.pt", "old.pt"):
        other = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
        engine = Engine(lambda e, b: None)
        CheckpointLoader(load_path=str(tmp_path / name), load_dict={"model": other})(engine)
        assert _same(other.state_dict(), sd), name
    assert main([str(tmp_path / "old.pt"), str(tmp_path / "converted.pt")]) == 0
    assert "converted to the weights alone" in capsys.readouterr().out
    assert _same(torch.load(tmp_path / "converted.pt", weights_only=True), sd)
    assert convert(tmp_path / "old.pt") is True and convert(tmp_path / "old.pt") is False  # in place, then already done
    assert _same(torch.load(tmp_path / "old.pt", weights_only=True), sd)


def test_unusable_checkpoints_fail_naming_the_file(tmp_path):
    torch.save({"optimizer": {"state": {}}}, tmp_path / "state.pt")
    with pytest.raises(ValueError, match=r"state\.pt: not network weights"):
        network_weights(tmp_path / "state.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pt: not a readable PyTorch checkpoint"):
        network_weights(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match=r"missing\.pt: no such checkpoint"):
        network_weights(tmp_path / "missing.pt")


def _state(epoch: int, epoch_length: int = 3) -> dict:
    return {"trainer": {"epoch_length": epoch_length, "iteration": epoch * epoch_length, "max_epochs": 4}}


def test_resume_path_picks_the_newest_unfinished_state(tmp_path):
    assert resume_path(tmp_path / "none", 4) is None
    torch.save(_state(1), tmp_path / "a_epoch=1.pt")
    torch.save(_state(2), tmp_path / "a_epoch=2.pt")
    (tmp_path / "a_epoch=3.pt").write_bytes(b"\x80\x02truncated")  # killed while saving
    assert resume_path(tmp_path, 4) == str(tmp_path / "a_epoch=2.pt")
    assert resume_path(tmp_path, 4, resume=False) is None
    assert resume_path(tmp_path, 2) is None  # a finished run is not resumed: the same config trains anew


def test_key_metric_state_round_trip(tmp_path):
    net = _net()
    a = CheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_name="m", key_metric_filename="model.pt")
    engine = Engine(lambda e, b: None)
    engine.state.metrics = {"m": 0.25}
    a.metrics_completed(engine)
    assert (tmp_path / "model.pt").is_file()
    b = CheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_name="m", key_metric_filename="model.pt")
    KeyMetricState(b).load_state_dict(KeyMetricState(a).state_dict())
    before = (tmp_path / "model.pt").stat().st_mtime_ns
    engine.state.metrics = {"m": 0.1}  # worse than before the "interruption": model.pt stays
    b.metrics_completed(engine)
    assert (tmp_path / "model.pt").stat().st_mtime_ns == before
    engine.state.metrics = {"m": 0.5}
    b.metrics_completed(engine)
    assert KeyMetricState(b).state_dict()["_saved"][0][0] == 0.5


def test_inference_datalist_builds_without_data_and_run_says_what_is_missing(tmp_path):
    assert inference_datalist("", str(tmp_path / "datalist.json"), "test", str(tmp_path)) == []
    assert inference_datalist("img.nii.gz", str(tmp_path / "datalist.json"), "test", str(tmp_path)) == [{"image": "img.nii.gz"}]
    from bundle.io.errors import InputError  # one `error:` line from the configs' hook (docs/bad_inputs.md)

    with pytest.raises(InputError, match=r"datalist\.json: no such datalist; give --input_image"):
        require_inputs([], "", str(tmp_path / "datalist.json"), "test")


def _train(repo_root, root, tiny_demo, **overrides) -> ConfigWorkflow:
    wf = ConfigWorkflow(
        config_file=str(repo_root / "configs" / "train.yaml"),
        meta_file=str(repo_root / "configs" / "metadata.json"),
        logging_file=str(repo_root / "configs" / "logging.conf"),
        workflow_type="train",
        bundle_root=str(root),
        dataset_dir=str(tiny_demo),
        data_list_file_path=str(tiny_demo / "datalist.json"),
        **TINY,
        **overrides,
    )
    wf.initialize()
    return wf


@pytest.mark.slow
def test_training_resumes_where_it_stopped(repo_root, tiny_demo, tmp_path):
    """2 of 4 epochs (as if killed), then the same config: epochs 3 and 4 only, from the saved weights,
    optimizer, scheduler and best-model bookkeeping; model.pt stays the weights alone."""
    wf = _train(repo_root, tmp_path, tiny_demo, epochs=4, **{"train#trainer#max_epochs": 2})
    wf.run()
    wf.finalize()
    states = tmp_path / "models" / "train_state"
    saved = torch.load(states / "train_state_checkpoint_epoch=2.pt", weights_only=True)
    assert saved["lr_scheduler"]["T_max"] == 4 and saved["lr_scheduler"]["last_epoch"] == 2
    # key slices train on the canonical grid planned from their own headers: the tiny demo's 3 mm pixels at most 1.5x finer
    assert json.loads((tmp_path / "models" / "grid.json").read_text())["spacing"][:2] == [2.0, 2.0]

    wf = _train(repo_root, tmp_path, tiny_demo, epochs=4)
    trainer = wf.parser.get_parsed_content("train#trainer")
    network = wf.parser.get_parsed_content("network")
    best = wf.parser.get_parsed_content("validate#best_model_saver")
    seen: dict = {"epochs": []}

    def at_first_epoch(engine):
        if not seen["epochs"]:
            seen["weights"] = {k: v.detach().clone() for k, v in network.state_dict().items()}
            seen["best"] = KeyMetricState(best).state_dict()["_saved"]
            seen["lr"] = trainer.optimizer.param_groups[0]["lr"]

    trainer.add_event_handler(Events.EPOCH_STARTED, at_first_epoch)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen["epochs"].append(e.state.epoch))
    wf.run()
    wf.finalize()
    assert seen["epochs"] == [3, 4]
    assert _same(seen["weights"], saved["model"])
    assert [tuple(x) for x in seen["best"]] == [tuple(x) for x in saved["best_model"]["_saved"]]
    assert seen["lr"] == pytest.approx(saved["lr_scheduler"]["_last_lr"][0])  # the cosine schedule goes on, not from the top
    assert sorted(p.name for p in states.glob("*.pt")) == ["train_state_checkpoint_epoch=3.pt", "train_state_checkpoint_epoch=4.pt"]
    final = torch.load(states / "train_state_checkpoint_epoch=4.pt", weights_only=True)
    assert final["trainer"]["iteration"] == 4 * final["trainer"]["epoch_length"]
    assert final["best_model"]["_saved"][0][0] >= saved["best_model"]["_saved"][0][0]  # the best only ever improves
    weights = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in weights.values())

    # states that already reach the run's length are a finished run: a new run trains anew and clears them
    wf = _train(repo_root, tmp_path, tiny_demo, epochs=4, **{"train#trainer#max_epochs": 1})
    wf.run()
    wf.finalize()
    assert sorted(p.name for p in states.glob("*.pt")) == ["train_state_checkpoint_epoch=1.pt"]


@pytest.mark.parametrize("configs", [["train.yaml"], ["train.yaml", "train_volume.yaml"], ["train.yaml", "evaluate.yaml"], "monailabel"])
def test_every_training_config_resolves_its_checkpoint_expressions(repo_root, tmp_path, configs):
    """A merged config replaces `imports`; each must still import what the checkpoint expressions name.
    MONAI Label's package never resumes (it fine-tunes from model.pt on every /train request)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    if configs == "monailabel":
        from bundle.serving.package import NAME, package

        folder = package(tmp_path / NAME, root=repo_root, target="monailabel", make_zip=False, models_dir=tmp_path / "none")["folder"]
        parser.read_config(f"{folder}/configs/train.yaml")
    else:
        parser.read_config([str(repo_root / "configs" / c) for c in configs])
    parser["bundle_root"] = str(tmp_path)
    parser["device"] = "$torch.device('cpu')"
    (tmp_path / "models" / "train_state").mkdir(parents=True)
    torch.save(_state(1), tmp_path / "models" / "train_state" / "s.pt")
    resumes = configs != "monailabel"
    assert parser.get_parsed_content("resume_from") == (str(tmp_path / "models" / "train_state" / "s.pt") if resumes else None)
    assert parser.get_parsed_content("train_state_interval") == (1 if resumes else 0)
    if configs == ["train.yaml", "evaluate.yaml"]:
        # evaluation loads the checkpoint it scores (ckpt_path, CheckpointLoader), never a training start
        assert not any("pretrained_ckpt" in e for e in parser["initialize"])
        return
    # pretrained weights (a self-training student's start) load from a pre-0.5.0 file through the same helper
    weights = {
        k: torch.randn_like(v) if v.is_floating_point() else v for k, v in parser.get_parsed_content("network_def").state_dict().items()
    }
    torch.save({"model": weights, "optimizer": {"state": {}, "param_groups": []}}, tmp_path / "old.pt")
    parser["pretrained_ckpt"] = str(tmp_path / "old.pt")
    (i,) = [i for i, e in enumerate(parser["initialize"]) if "pretrained_ckpt" in e]
    parser.get_parsed_content(f"initialize#{i}")
    assert _same(parser.get_parsed_content("network").state_dict(), weights)
