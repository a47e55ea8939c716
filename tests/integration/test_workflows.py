"""Bundle workflows built the way the model zoo tests them: ConfigWorkflow on tiny data."""

from __future__ import annotations

import json

import pytest
from monai.bundle import ConfigWorkflow

TINY = {
    "epochs": 2,
    "val_interval": 1,
    "batch_size": 2,
    "num_samples": 1,
    "num_workers": 0,
    "patch_size": [64, 64],
    "val_patch_size": [64, 64],
}


def _workflow(repo_root, config, tmp_path, tiny_demo, workflow_type, **overrides):
    wf = ConfigWorkflow(
        config_file=config,
        meta_file=str(repo_root / "configs" / "metadata.json"),
        logging_file=str(repo_root / "configs" / "logging.conf"),
        workflow_type=workflow_type,
        bundle_root=str(tmp_path),
        dataset_dir=str(tiny_demo),
        data_list_file_path=str(tiny_demo / "datalist.json"),
        **overrides,
    )
    wf.initialize()
    return wf


@pytest.fixture(scope="module")
def trained(repo_root, tiny_demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    wf = _workflow(repo_root, str(repo_root / "configs" / "train.yaml"), root, tiny_demo, "train", **TINY)
    wf.run()
    wf.finalize()
    return root


@pytest.mark.slow
def test_train_writes_checkpoint(trained):
    """model.pt: the network's weights alone (the zoo's format); the resumable state in models/train_state."""
    import torch

    ckpt = torch.load(trained / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in ckpt.values())
    states = sorted((trained / "models" / "train_state").glob("*.pt"))
    assert [p.name for p in states] == ["train_state_checkpoint_epoch=1.pt", "train_state_checkpoint_epoch=2.pt"]
    state = torch.load(states[-1], map_location="cpu", weights_only=True)
    assert set(state) == {"model", "optimizer", "lr_scheduler", "trainer", "best_model", "rng_and_scaler"}
    assert state["trainer"]["iteration"] == 2 * state["trainer"]["epoch_length"]
    assert state["lr_scheduler"]["last_epoch"] == 2
    ((score, name),) = state["best_model"]["_saved"]  # the best-model bookkeeping: one model.pt, its score
    assert name == f"model_key_metric={score:.4f}.pt"
    assert set(ckpt) == set(state["model"])


@pytest.mark.slow
def test_train_then_evaluate_writes_metrics(repo_root, trained, tiny_demo):
    cfg = [str(repo_root / "configs" / "train.yaml"), str(repo_root / "configs" / "evaluate.yaml")]
    wf = _workflow(repo_root, cfg, trained, tiny_demo, "train", **TINY)
    wf.run()
    wf.finalize()
    metrics = json.loads((trained / "eval" / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["f1"] <= 1.0
    assert 0.0 <= metrics["test_mAP"] <= 1.0
    dl = json.loads((tiny_demo / "datalist.json").read_text())
    preds = json.loads((trained / "eval" / "predictions_test.json").read_text())
    assert len(preds["predictions"]) == len(dl["test"])
    assert metrics["test"]["tp"] + metrics["test"]["fn"] == sum(len(x["box"]) for x in dl["test"])


@pytest.mark.slow
def test_inference_checks_properties_and_writes_boxes(repo_root, trained, tiny_demo):
    out = trained / "eval" / "inference.json"
    wf = _workflow(
        repo_root,
        str(repo_root / "configs" / "inference.yaml"),
        trained,
        tiny_demo,
        "infer",
        output_path=str(out),
        score_threshold=0.0,
        val_patch_size=[64, 64],
    )
    assert wf.check_properties() in (None, [])
    wf.run()
    wf.finalize()
    preds = json.loads(out.read_text())
    assert preds["box_mode"] == "xyxy" and preds["coordinates"] == "image"
    dl = json.loads((tiny_demo / "datalist.json").read_text())
    assert len(preds["predictions"]) == len(dl["test"])
    for p in preds["predictions"]:
        assert len(p["box"]) == len(p["score"]) == len(p["label"])
        for b in p["box"]:
            assert b[0] <= b[2] and b[1] <= b[3]


@pytest.mark.slow
def test_inference_on_a_single_image(repo_root, trained, tiny_demo):
    dl = json.loads((tiny_demo / "datalist.json").read_text())
    image = str(tiny_demo / dl["test"][0]["image"])
    out = trained / "eval" / "single.json"
    wf = _workflow(
        repo_root,
        str(repo_root / "configs" / "inference.yaml"),
        trained,
        tiny_demo,
        "infer",
        input_image=image,
        output_path=str(out),
        val_patch_size=[64, 64],
    )
    wf.run()
    preds = json.loads(out.read_text())["predictions"]
    assert [p["image"] for p in preds] == [image]
