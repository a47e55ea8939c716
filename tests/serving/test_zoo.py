"""Model zoo path: TorchScript export gives the checkpoint's boxes; the package passes the zoo's own checks."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow


def _infer(repo_root, bundle_root, tiny_demo, config, out):
    wf = ConfigWorkflow(
        config_file=config,
        meta_file=str(repo_root / "configs" / "metadata.json"),
        logging_file=str(repo_root / "configs" / "logging.conf"),
        workflow_type="infer",
        bundle_root=str(bundle_root),
        dataset_dir=str(tiny_demo),
        data_list_file_path=str(tiny_demo / "datalist.json"),
        data_list_key="validation",
        output_path=str(out),
        score_threshold=0.0,
        val_patch_size=[64, 64],
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    return json.loads(out.read_text())["predictions"]


@pytest.fixture(scope="module")
def zoo_package(repo_root, served_bundle, tmp_path_factory):
    """The zoo package of the served model (scripts/package_bundle.py, as a submitter runs it)."""
    from bundle.serving.package import NAME, package

    return package(tmp_path_factory.mktemp("zoo") / NAME, root=repo_root, models_dir=served_bundle / "models")


def _zoo_checks(repo_root, package_folder, cwd) -> list[dict]:
    """tests/serving/zoo_checks.py in its own process with the package first on sys.path, as the zoo runs verify_bundle.py."""
    folder = Path(package_folder)
    out = subprocess.run(
        [sys.executable, str(repo_root / "tests" / "serving" / "zoo_checks.py"), str(folder.parent), folder.name,
         "--properties", str(repo_root / "tests" / "serving" / "bundle_properties_monailabel.py")],
        cwd=cwd, capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )  # fmt: skip
    steps = [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{"step"')]
    assert out.returncode == 0, (steps, out.stderr[-3000:])
    return steps


@pytest.mark.slow
@pytest.mark.parametrize("target", ["zoo", "monailabel"])
def test_package_passes_the_zoos_checks(repo_root, served_bundle, zoo_package, target, tmp_path):
    """verify_bundle_directory, verify_version_changes, verify_bundle_properties (MONAI Label), verify_torchscript."""
    from bundle.serving.package import NAME, package

    folder = (
        zoo_package["folder"]
        if target == "zoo"
        else package(tmp_path / NAME, root=repo_root, target=target, make_zip=False, models_dir=served_bundle / "models")["folder"]
    )
    steps = {s["step"]: s for s in _zoo_checks(repo_root, folder, tmp_path)}
    assert list(steps) == [
        "verify_bundle_directory",
        "verify_version_changes",
        "verify_bundle_properties",
        "verify_torchscript",
        "bundle_code",
    ]
    assert all(s["ok"] for s in steps.values())
    assert steps["verify_bundle_directory"]["large_files"] == ["models/model.pt", "models/model.ts"]
    assert steps["verify_bundle_properties"]["supported_apps"] == {"monai-label": "0.8.5"}
    assert {"detector", "detector_ops", "network_def", "preprocessing", "postprocessing", "dataset", "evaluator"} <= set(
        steps["verify_bundle_properties"]["checked"]
    )
    assert steps["verify_torchscript"] == {
        "step": "verify_torchscript",
        "ok": True,
        "exported": "models/verify_model.ts",
        "loaded": "models/model.ts",
    }
    assert steps["bundle_code"]["file"] == "bundle/__init__.py"  # the package's own code, not the repository's


@pytest.mark.slow
def test_large_files_list_exactly_the_packaged_models(zoo_package, served_bundle):
    """large_files.yml: the model files the package holds and their md5; model.ts is exported from this model.pt."""
    import yaml

    folder = Path(zoo_package["folder"])
    entries = yaml.safe_load((folder / "large_files.yml").read_text())["large_files"]
    held = sorted(f for f in zoo_package["files"] if f.startswith("models/model."))
    assert held == ["models/model.pt", "models/model.ts"]
    assert "models/grid.json" in zoo_package["files"]  # the canonical grid travels with its model (not a large file)
    assert sorted(e["path"] for e in entries) == held
    for e in entries:
        assert e["hash_type"] == "md5" and e["hash_val"] == hashlib.md5((folder / e["path"]).read_bytes()).hexdigest()
    weights = torch.load(folder / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in weights.values())  # the weights alone
    ts = torch.jit.load(str(folder / "models" / "model.ts"), map_location="cpu")
    ts_weights = ts.state_dict()
    assert set(ts_weights) == set(weights)
    for k, v in weights.items():
        assert torch.equal(ts_weights[k], v), k
    with zipfile.ZipFile(zoo_package["zip"]) as z:
        assert {"brain_mri_tumor_detection/" + f for f in held} <= set(z.namelist())


@pytest.mark.slow
def test_packaging_converts_an_old_checkpoint(repo_root, served_bundle, tmp_path):
    """A pre-0.5.0 model.pt ({"model", "optimizer"}) is packaged as its weights alone, and model.ts exported from it."""
    from bundle.serving.package import NAME, package

    weights = torch.load(served_bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    old = tmp_path / "old_models"
    old.mkdir()
    torch.save({"model": weights, "optimizer": {"state": {}, "param_groups": []}}, old / "model.pt")
    res = package(tmp_path / NAME, root=repo_root, make_zip=False, models_dir=old)
    got = torch.load(Path(res["folder"]) / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert set(got) == set(weights) and all(torch.equal(got[k], weights[k]) for k in weights)
    assert "models/model.ts" in res["files"]


@pytest.mark.slow
def test_torchscript_gives_the_checkpoint_boxes(repo_root, served_bundle, tiny_demo, tmp_path):
    ts = served_bundle / "models" / "model.ts"
    assert ts.is_file()
    net = torch.jit.load(str(ts))
    assert isinstance(net, torch.jit.ScriptModule) and net.spatial_dims == 2
    ref = _infer(repo_root, served_bundle, tiny_demo, str(repo_root / "configs" / "inference.yaml"), tmp_path / "pt.json")
    cfg = [str(repo_root / "configs" / "inference.yaml"), str(repo_root / "configs" / "inference_torchscript.yaml")]
    got = _infer(repo_root, served_bundle, tiny_demo, cfg, tmp_path / "ts.json")
    assert [p["image"] for p in got] == [p["image"] for p in ref]
    n_boxes = 0
    for a, b in zip(ref, got):
        assert len(a["box"]) == len(b["box"])
        n_boxes += len(a["box"])
        if a["box"]:
            np.testing.assert_allclose(np.asarray(b["box"]), np.asarray(a["box"]), atol=1e-3)
            np.testing.assert_allclose(np.asarray(b["score"]), np.asarray(a["score"]), atol=1e-4)
    assert n_boxes > 0  # score threshold 0: an empty comparison would prove nothing


def test_package_holds_what_configs_import_and_nothing_else(repo_root, tmp_path):
    from bundle.serving.package import NAME, bundle_modules, package

    res = package(tmp_path / NAME, root=repo_root)
    files = set(res["files"])
    for required in ("configs/metadata.json", "configs/inference.yaml", "LICENSE", "docs/README.md", "large_files.yml"):
        assert required in files
    assert not [f for f in files if f.startswith(("tests/", "scripts/", "data/")) or "__pycache__" in f or f.endswith(".pyc")]
    # every bundle module the configs name is there, and every packaged module is reached from a config
    mods = {str(p.relative_to(repo_root)) for p in bundle_modules(repo_root)}
    assert {f for f in files if f.startswith("bundle/")} == mods
    assert "bundle/networks/retinanet.py" in mods and "bundle/inference/linking.py" in mods
    assert "bundle/demo/synth.py" not in mods  # demo data generation is not imported by any config
    with zipfile.ZipFile(res["zip"]) as z:
        names = set(z.namelist())
    assert names == {f"{NAME}/{f}" for f in files}


def test_packaged_bundle_imports_on_its_own(repo_root, tmp_path):
    """The zip's configs resolve with only the package folder on sys.path (how the zoo and MONAI Label load it)."""
    import subprocess
    import sys

    from bundle.serving.package import NAME, package

    res = package(tmp_path / NAME, root=repo_root, make_zip=False)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from monai.bundle import ConfigParser;"
        "p = ConfigParser(); p.read_config(sys.argv[1] + '/configs/inference_volume.yaml'); p['bundle_root'] = sys.argv[1];"
        "p.get_parsed_content('detector'); p.get_parsed_content('preprocessing'); p.get_parsed_content('postprocessing');"
        "import bundle; assert bundle.__file__.startswith(sys.argv[1]), bundle.__file__; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code, res["folder"]], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_zoo_metadata_and_version_checks(repo_root):
    """The zoo's directory checks: required metadata keys, version listed in the changelog."""
    meta = json.loads((repo_root / "configs" / "metadata.json").read_text())
    for key in (
        "version",
        "changelog",
        "monai_version",
        "pytorch_version",
        "numpy_version",
        "task",
        "description",
        "authors",
        "copyright",
        "network_data_format",
    ):
        assert key in meta, key
    assert meta["version"] in meta["changelog"]
    newest = max(meta["changelog"], key=lambda v: tuple(int(x) for x in v.split(".")))
    assert newest == meta["version"]
    assert set(meta["network_data_format"]) >= {"inputs", "outputs"}
    # supported_apps names the MONAI Label version the integration test installs, so the zoo checks its properties
    pinned = re.search(r"monailabel==(\S+)", (repo_root / "deploy" / "monailabel" / "requirements.txt").read_text()).group(1)
    assert meta["supported_apps"] == {"monai-label": pinned}
