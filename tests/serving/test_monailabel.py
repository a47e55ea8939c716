"""MONAI Label path: a real `monailabel start_server` (own venv, loopback) serving this bundle's volume config.

What is checked: the server loads the bundle as a 3D detection model, /infer returns world LPS
cccwhd ROIs that are exactly this bundle's own volume inference converted to world, and the ROIs
do not depend on how the volume is stored (same image saved with flipped axes -> same ROIs).
What is not: that the ROIs lie on the lesions. The model here is trained for seconds; box
geometry against the demo truth is tested in test_volume.py (known transform, linking of exact
slice boxes). Training through /train is tried in test_train_through_server.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests

MODEL = "brain_mri_tumor_detection"
# configs/inference_volume.yaml score_threshold, which MONAI Label applies: a logit (that of probability 0.3), stored as float32
THRESHOLD = float(np.float32(-0.84729785))


@pytest.fixture(scope="module")
def server(monailabel_python, monailabel_server, repo_root, served_bundle, tiny_demo, tmp_path_factory):
    from bundle.serving.package import package

    base = tmp_path_factory.mktemp("monailabel")
    venv = Path(monailabel_python).parents[1]
    app = base / "app"
    shutil.copytree(venv / "monailabel" / "sample-apps" / "monaibundle", app, ignore=shutil.ignore_patterns("__pycache__"))
    # offline: the bundle sits in <app>/model/<name> and zoo_source is not "monaihosting"
    # the model ships with its operating point (issue 13): a copy of the served model with operating_point.json at
    # THRESHOLD, as configs/evaluate_volume.yaml writes it; the package makes it the MONAI Label default
    from bundle.inference import operating_point

    models = base / "models"
    shutil.copytree(served_bundle / "models", models, ignore=shutil.ignore_patterns("train_state", "operating_point.json"))
    operating_point.write(models, {"score_threshold": THRESHOLD, "rule": "test: fixed"})
    package(app / "model" / MODEL, root=repo_root, target="monailabel", make_zip=False, models_dir=models)
    store = base / "studies"
    store.mkdir()
    truth = json.loads((tiny_demo / "truth.json").read_text())
    src = tiny_demo / truth["patients"][0]["image"]
    shutil.copy(src, store / "demo-000.nii.gz")
    img = nib.load(src)
    # the same image stored with x and y reversed: a different array and affine, the same physical image
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = [img.shape[0] - 1, img.shape[1] - 1]
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[::-1, ::-1, :].copy(), img.affine @ flip), store / "demo-000-flipped.nii.gz")
    # a normal (lesion-free) demo volume: MONAI Label must show no more boxes than the shipped operating point allows
    from bundle.demo.synth import generate_patient

    generate_patient(np.random.default_rng([1, 900]), "demo-900", tuple(truth["patients"][0]["spacing"]), base / "normal", p_normal=1.0)
    shutil.copy(base / "normal" / "demo-900" / "t1c.nii.gz", store / "normal-900.nii.gz")
    # a bad input (docs/bad_inputs.md): one NaN voxel; /infer must answer 4xx naming the file and the problem
    bad = np.asarray(img.dataobj, dtype=np.float32).copy()
    bad[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(bad, img.affine), store / "bad-nan.nii.gz")
    conf = ["models", MODEL, "zoo_source", "github", "sam2", "false", "preload", "false"]
    with monailabel_server(app, store, base, *conf) as url:
        yield {"url": url, "app": app, "store": store, "log": base / "server.log", "bundle": app / "model" / MODEL}


def _own_predictions(server, image: str, out, score_threshold: float) -> dict:
    """The served bundle folder run by its own workflow (what MONAI Label runs) on a stored image: its one prediction."""
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file=str(server["bundle"] / "configs" / "inference.yaml"),
        meta_file=str(server["bundle"] / "configs" / "metadata.json"),
        workflow_type="infer",
        bundle_root=str(server["bundle"]),
        input_image=str(server["store"] / f"{image}.nii.gz"),
        output_path=str(out),
        score_threshold=score_threshold,
        device="$torch.device('cpu')",
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    return json.loads(out.read_text())["predictions"][0]


def _infer(server, image: str) -> dict:
    r = requests.post(
        f"{server['url']}/infer/{MODEL}",
        params={"image": image, "output": "json"},
        data={"params": json.dumps({"device": "cpu"})},
        timeout=600,
    )
    assert r.ok, r.text[-2000:] + (server["log"]).read_text()[-3000:]
    return r.json()


@pytest.mark.slow
@pytest.mark.integration
def test_server_lists_the_bundle_as_3d_detection(server):
    info = requests.get(server["url"] + "/info/", timeout=30).json()
    model = info["models"][MODEL]
    assert model["type"] == "detection" and model["dimension"] == 3
    assert model["labels"] == {"tumor": 0}
    assert MODEL in info.get("trainers", {})


@pytest.mark.slow
@pytest.mark.integration
def test_infer_returns_the_bundles_world_boxes(server, repo_root, tmp_path):

    res = _infer(server, "demo-000")
    rois = np.asarray(res["box"], dtype=float).reshape(-1, 6)
    assert len(rois) == len(res["label"]) and set(res["label"]) <= {0}
    # the same bundle folder, run by this bundle's own workflow: its world boxes are what Slicer must get
    own = np.asarray(_own_predictions(server, "demo-000", tmp_path / "own.json", THRESHOLD)["box_world"], dtype=float).reshape(-1, 6)
    assert len(own) >= 1, "the comparison needs at least one box above the threshold"
    assert len(rois) == len(own)
    np.testing.assert_allclose(rois, own, atol=1e-2)
    # cccwhd: positive sizes; centres inside the volume's world extent (LPS)
    img = nib.load(server["store"] / "demo-000.nii.gz")
    corners = np.array([[i, j, k, 1] for i in (0, img.shape[0]) for j in (0, img.shape[1]) for k in (0, img.shape[2])]) - [0.5, 0.5, 0.5, 0]
    lps = (corners @ img.affine.T)[:, :3] * [-1, -1, 1]
    assert np.all(rois[:, 3:] > 0)
    assert np.all(rois[:, :3] >= lps.min(0) - 1e-3) and np.all(rois[:, :3] <= lps.max(0) + 1e-3)


@pytest.mark.slow
@pytest.mark.integration
def test_infer_on_a_normal_volume_shows_only_boxes_at_the_shipped_operating_point(server, tmp_path):
    """The package's score threshold is the operating point shipped beside the model; /infer on a lesion-free
    volume returns exactly the boxes the bundle scores at or above it (none when validation put it above them)."""

    shipped = json.loads((server["bundle"] / "models" / "operating_point.json").read_text())["score_threshold"]
    assert shipped == THRESHOLD
    res = _infer(server, "normal-900")
    scores = np.asarray(_own_predictions(server, "normal-900", tmp_path / "all.json", -np.inf)["score"], dtype=float)
    assert len(res["label"]) == int((scores >= shipped).sum())


@pytest.mark.slow
@pytest.mark.integration
def test_rois_do_not_depend_on_how_the_volume_is_stored(server):
    a = np.asarray(_infer(server, "demo-000")["box"], dtype=float).reshape(-1, 6)
    b = np.asarray(_infer(server, "demo-000-flipped")["box"], dtype=float).reshape(-1, 6)
    assert len(a) == len(b) >= 1
    np.testing.assert_allclose(b, a, atol=1e-2)


@pytest.mark.slow
@pytest.mark.integration
def test_infer_on_a_bad_image_is_a_4xx_naming_the_problem(server):
    """The bundle's input check (bundle/transforms/checks.py) reaches the client as HTTP 422, not 500."""
    r = requests.post(
        f"{server['url']}/infer/{MODEL}",
        params={"image": "bad-nan", "output": "json"},
        data={"params": json.dumps({"device": "cpu"})},
        timeout=120,
    )
    assert r.status_code == 422, f"{r.status_code} {r.text[-2000:]}" + server["log"].read_text()[-3000:]
    detail = r.json()["detail"]
    assert detail.split(": ", 1)[0].endswith("bad-nan.nii.gz"), detail
    assert "has 1 NaN or infinite voxels of" in detail and "\n" not in detail
    assert requests.get(server["url"] + "/info/", timeout=30).ok  # the server is still up


@pytest.mark.slow
@pytest.mark.integration
def test_train_through_server(server, tiny_demo):
    """Labels as Slicer ROIs (world LPS cccwhd) -> /train -> a new checkpoint the server then infers with."""
    from bundle.transforms.world import voxel_to_world

    truth = json.loads((tiny_demo / "truth.json").read_text())
    patient = truth["patients"][0]
    world = voxel_to_world([les["box_vox"] for les in patient["lesions"]], nib.load(tiny_demo / patient["image"]).affine)
    for image in ("demo-000", "demo-000-flipped"):  # one physical image: the same world boxes label both
        markups = {"markups": [{"type": "ROI", "coordinateSystem": "LPS", "center": b[:3].tolist(), "size": b[3:].tolist()} for b in world]}
        r = requests.put(
            f"{server['url']}/datastore/label",
            params={"image": image, "tag": "final"},
            files={"label": (f"{image}.json", json.dumps(markups), "application/json")},
            timeout=60,
        )
        assert r.ok, r.text
    ckpt = server["bundle"] / "models" / "model.pt"
    before = ckpt.stat().st_mtime
    r = requests.post(
        f"{server['url']}/train/{MODEL}",
        params={"run_sync": "true"},
        json={"max_epochs": 1, "val_split": 0.5, "multi_gpu": False},
        timeout=600,
    )
    log = server["log"].read_text()
    assert r.ok, r.text + log[-3000:]
    assert "Training Finished" in log and "Current run is terminating due to exception" not in log, log[-3000:]
    assert ckpt.stat().st_mtime > before  # the validation after the epoch wrote a new best checkpoint
    import torch

    weights = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in weights.values())  # the weights alone, as the zoo and MONAI Label read them
    assert not (server["bundle"] / "models" / "train_state").exists()  # the package's train.yaml saves no resumable state
    res = _infer(server, "demo-000")  # the server reloads the new weights and still answers
    assert len(res["box"]) == len(res["label"])
