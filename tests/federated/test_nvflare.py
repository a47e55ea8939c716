"""The bundle federated on NVIDIA FLARE: the job of bundle/federated/job.py run by NVFlare's simulator on CPU.

Two simulated hospitals, each with its own mined datalist (the tiny demo's PACS export mined, its training patients
split between the sites), run 2 rounds of ScatterAndGather with FedAvg through monai-nvflare's ClientAlgoExecutor
and MONAI FL's MonaiAlgo. The global model the server saved must load strictly into the bundle's network and
validate with configs/evaluate.yaml.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TINY = {"batch_size": 2, "num_samples": 1, "num_workers": 0, "patch_size": [64, 64], "val_patch_size": [64, 64], "torch_threads": 1}


@pytest.fixture(scope="module")
def hospitals(pacs_export, tmp_path_factory) -> dict[str, Path]:
    """Mine the PACS export once; each hospital gets the mined training items of its own patients as its datalist."""
    from bundle.mining.pipeline import Miner
    from bundle.pacs.folder import FolderSource

    mined = tmp_path_factory.mktemp("mined")
    Miner(str(mined), source=FolderSource(pacs_export / "dicom"), workers=1, progress=False).run()
    d = json.loads((mined / "datalist.json").read_text())
    patients = sorted({x["patient"] for x in d["training"]})
    assert len(patients) >= 2 and d["validation"]
    sites = {}
    for name, patient in zip(("hospital-a", "hospital-b"), patients):
        own = {"training": [x for x in d["training"] if x["patient"] == patient], "validation": d["validation"], "test": d["validation"]}
        sites[name] = mined / f"datalist_{name}.json"
        sites[name].write_text(json.dumps(own))
    return sites


@pytest.mark.slow
@pytest.mark.integration
def test_nvflare_simulator_trains_two_rounds_and_the_global_model_validates(hospitals, repo_root, tmp_path):
    from monai.bundle import ConfigParser

    from bundle.federated.job import JobSpec, Site, write_job

    sites = [Site(name, str(path), str(path.parent)) for name, path in hospitals.items()]
    job = write_job(tmp_path / "job", sites, JobSpec(num_rounds=2, overrides=TINY))
    nvflare = Path(sys.executable).parent / "nvflare"
    ws = tmp_path / "workspace"
    run = subprocess.run(
        [str(nvflare), "simulator", str(job), "-w", str(ws), "-c", ",".join(hospitals), "-t", str(len(hospitals))],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )  # fmt: skip
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    # every round aggregated both hospitals' contributions and finished
    for r in range(2):
        assert f"aggregating 2 update(s) at round {r}" in log and f"Round {r} finished" in log, log[-4000:]
    assert {m for m in re.findall(r"Contribution from (\S+) ACCEPTED", log)} == set(hospitals)
    assert "Finished ScatterAndGather Training" in log and "Traceback" not in log, log[-4000:]

    saved = torch.load(ws / "server" / "simulate_job" / "app_server" / "FL_global_model.pt", map_location="cpu", weights_only=False)
    parser = ConfigParser()
    parser.read_config(str(repo_root / "configs" / "train.yaml"))
    net = parser.get_parsed_content("network_def")
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(saved["model"], strict=True)  # the global model is the bundle's network, key for key
    assert any(not torch.equal(initial[k], v) for k, v in net.state_dict().items() if v.is_floating_point())

    root = tmp_path / "global"
    (root / "models").mkdir(parents=True)
    torch.save(net.state_dict(), root / "models" / "model.pt")  # the zoo's format: the weights alone
    first = hospitals["hospital-a"]
    data = ["--bundle_root", str(root), "--dataset_dir", str(first.parent), "--data_list_file_path", str(first)]
    tiny = [a for k, v in TINY.items() for a in (f"--{k}", json.dumps(v))]
    ev = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "['configs/train.yaml','configs/evaluate.yaml']",
         *data, *tiny, "--n_bootstrap", "20"],
        cwd=repo_root, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert ev.returncode == 0, ev.stderr[-3000:]
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert metrics and (root / "eval" / "predictions_validation.json").is_file()
