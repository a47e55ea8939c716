"""Model zoo path: TorchScript export gives the checkpoint's boxes; the package holds what the zoo checks."""

from __future__ import annotations

import json
import zipfile

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
    from scripts.package_bundle import NAME, bundle_modules, package

    res = package(tmp_path / NAME, root=repo_root)
    files = set(res["files"])
    for required in ("configs/metadata.json", "configs/inference.yaml", "LICENSE", "docs/README.md", "large_files.yml"):
        assert required in files
    assert not [f for f in files if f.startswith(("tests/", "scripts/", "data/")) or "__pycache__" in f or f.endswith(".pyc")]
    # every bundle module the configs name is there, and every packaged module is reached from a config
    mods = {str(p.relative_to(repo_root)) for p in bundle_modules(repo_root)}
    assert {f for f in files if f.startswith("bundle/")} == mods
    assert "bundle/networks/retinanet.py" in mods and "bundle/deploy/linking.py" in mods
    assert "bundle/demo/synth.py" not in mods  # demo data generation is not imported by any config
    with zipfile.ZipFile(res["zip"]) as z:
        names = set(z.namelist())
    assert names == {f"{NAME}/{f}" for f in files}


def test_packaged_bundle_imports_on_its_own(repo_root, tmp_path):
    """The zip's configs resolve with only the package folder on sys.path (how the zoo and MONAI Label load it)."""
    import subprocess
    import sys

    from scripts.package_bundle import NAME, package

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
