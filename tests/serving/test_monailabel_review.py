"""The review loop on a real MONAI Label server: /activelearning serves the most uncertain study, a review is saved
as its label, and training runs on it (MONAI Label's /train, and the bundle's own training beside the mined datalist).

The server runs this repository's app (deploy/monailabel/app) with the packaged bundle, in the layered MONAI Label
venv that tests/serving/test_monailabel.py builds. The expected order is computed here, independently of the server, by the
served bundle's own volume inference and bundle/activelearning/uncertainty.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests

MODEL = "brain_mri_tumor_detection"
STRATEGY = "detection_uncertainty"


def _scores(bundle: Path, image: Path, threshold: float, out: Path) -> list[float]:
    """The served bundle's own volume inference on one study (what the app's scoring runs), every box >= threshold."""
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file=str(bundle / "configs" / "inference.yaml"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        workflow_type="infer",
        bundle_root=str(bundle),
        input_image=str(image),
        output_path=str(out),
        score_threshold=threshold,
        device="$torch.device('cpu')",
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    return [float(s) for s in json.loads(out.read_text())["predictions"][0]["score"]]


@pytest.fixture(scope="module")
def review_server(monailabel_server, repo_root, served_bundle, tiny_demo, tmp_path_factory):
    from bundle.activelearning.uncertainty import UncertaintyRule
    from bundle.inference import operating_point
    from scripts.package_bundle import package

    base = tmp_path_factory.mktemp("monailabel_review")
    app = base / "app"
    shutil.copytree(repo_root / "deploy" / "monailabel" / "app", app, ignore=shutil.ignore_patterns("__pycache__"))
    store = base / "studies"
    store.mkdir()
    truth = json.loads((tiny_demo / "truth.json").read_text())
    for p in truth["patients"]:
        shutil.copy(tiny_demo / p["image"], store / f"{p['patient_id']}.nii.gz")
    # the shipped operating point: the median box score of the seconds-trained model over the studies, so that the
    # studies differ in how many boxes sit near it (a trained model ships the one validation chose)
    models = base / "models"
    shutil.copytree(served_bundle / "models", models, ignore=shutil.ignore_patterns("train_state", "operating_point.json"))
    probe = base / "probe"
    package(probe, root=repo_root, target="monailabel", make_zip=False, models_dir=models)
    # every box the detector keeps (its own floor, score_thresh, is far below any logit threshold here)
    everything = {p.name.split(".")[0]: _scores(probe, p, -1e6, base / f"{p.name}.json") for p in sorted(store.glob("*.nii.gz"))}
    threshold = float(np.median(np.concatenate([v for v in everything.values() if v])))
    operating_point.write(models, {"score_threshold": threshold, "rule": "test: median box score"})  # a logit, as scores are
    threshold = operating_point.load(models)["score_threshold"]  # as stored (float32)
    package(app / "model" / MODEL, root=repo_root, target="monailabel", make_zip=False, models_dir=models)
    lowest = UncertaintyRule().lowest_score(threshold)
    studies = {k: [s for s in v if s >= lowest] for k, v in everything.items()}

    with monailabel_server(app, store, base, "models", MODEL, "zoo_source", "github", "preload", "false") as url:
        yield {"url": url, "store": store, "log": base / "server.log", "bundle": app / "model" / MODEL, "threshold": threshold,
               "studies": studies, "truth": truth, "base": base}  # fmt: skip


def _next(server) -> dict:
    r = requests.post(f"{server['url']}/activelearning/{STRATEGY}", json={"device": "cpu"}, timeout=600)
    assert r.ok, r.text[-2000:] + server["log"].read_text()[-3000:]
    return r.json()


def _review(server, tiny_demo, study: str) -> None:
    """The reader's boxes for a study, as Slicer saves them: world LPS ROIs (here the demo truth: every lesion)."""
    from bundle.transforms.world import voxel_to_world

    patient = next(p for p in server["truth"]["patients"] if p["patient_id"] == study)
    world = voxel_to_world([les["box_vox"] for les in patient["lesions"]], nib.load(tiny_demo / patient["image"]).affine)
    markups = {"markups": [{"type": "ROI", "coordinateSystem": "LPS", "center": b[:3].tolist(), "size": b[3:].tolist()} for b in world]}
    r = requests.put(
        f"{server['url']}/datastore/label",
        params={"image": study, "tag": "final"},
        files={"label": (f"{study}.json", json.dumps(markups), "application/json")},
        timeout=60,
    )
    assert r.ok, r.text


@pytest.mark.slow
@pytest.mark.integration
def test_review_loop_serves_the_most_uncertain_study_and_trains_on_its_review(review_server, tiny_demo, pacs_export, repo_root, tmp_path):
    from bundle.activelearning.uncertainty import rank

    server = review_server
    info = requests.get(server["url"] + "/info/", timeout=30).json()
    assert STRATEGY in info["strategies"] and STRATEGY in info["scoring"]

    expected = [k for k, _ in rank(server["studies"], server["threshold"])]
    figures = dict(rank(server["studies"], server["threshold"]))
    assert figures[expected[0]]["uncertainty"] > 0, figures  # the ranking is decided by boxes near the threshold
    first = _next(server)
    assert first["id"] == expected[0], (first, figures)
    assert first["uncertainty"] == pytest.approx(figures[expected[0]]["uncertainty"], abs=1e-4)
    assert first["threshold"] == pytest.approx(server["threshold"])

    _review(server, tiny_demo, first["id"])  # reviewed: no longer offered; the next most uncertain one is
    second = _next(server)
    assert second["id"] == expected[1], (second, figures)
    _review(server, tiny_demo, second["id"])

    ckpt = server["bundle"] / "models" / "model.pt"
    before = ckpt.stat().st_mtime
    r = requests.post(
        f"{server['url']}/train/{MODEL}",
        params={"run_sync": "true"},
        json={"max_epochs": 1, "val_split": 0.5, "multi_gpu": False},
        timeout=600,
    )
    log = server["log"].read_text()
    assert r.ok and "Training Finished" in log, r.text + log[-3000:]
    assert ckpt.stat().st_mtime > before
    third = _next(server)  # a new model: the remaining studies are scored again before one is served
    assert third["id"] in expected[2:] and third[f"{STRATEGY}_ts"] == int(ckpt.stat().st_mtime)

    # the bundle's own training: the reviews as complete labels beside the mined datalist, one epoch on whole series
    from bundle.mining.pipeline import Miner
    from bundle.pacs.folder import FolderSource

    mined = tmp_path / "mined"
    Miner(str(mined), source=FolderSource(pacs_export / "dicom"), workers=1, progress=False).run()
    out = mined / "datalist_volumes_reviewed.json"
    run = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/active_learning.yaml", "--studies_dir", str(server["store"]),
         "--datalist", str(mined / "datalist_volumes.json"), "--output_datalist", str(out)],
        cwd=repo_root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    n_mined = len(json.loads((mined / "datalist_volumes.json").read_text())["training"])
    training = json.loads(out.read_text())["training"]
    reviewed = [d for d in training if d.get("review") == "complete"]
    assert {Path(d["image"]).name.split(".")[0] for d in reviewed} <= {first["id"], second["id"]} and len(training) == n_mined + len(
        reviewed
    )
    root = tmp_path / "train"
    train = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "['configs/train.yaml','configs/train_series.yaml']",
         "--bundle_root", str(root), "--dataset_dir", str(mined), "--data_list_file_path", str(out), "--epochs", "1", "--val_interval", "1",
         "--batch_size", "2", "--num_samples", "1", "--num_workers", "0", "--patch_size", "[64,64]", "--val_patch_size", "[64,64]"],
        cwd=repo_root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    assert (root / "models" / "model.pt").is_file()
