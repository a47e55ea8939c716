"""A shipped 2.5D model: every reader takes its input (k adjacent slices) from the model itself.

The serving tests (zoo, TorchScript, volume inference, MONAI Label, the Deploy app) run the conftest's
served model, which is 2.5D; these check the parts in between: reading k from a checkpoint, a key slice
getting its neighbours from its volume, the configs following the model, the packaged metadata.
"""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle.engines.checkpoints import input_channels
from bundle.io.errors import InputError
from bundle.transforms.slices import KeySliceContextd


def _network(repo_root, k: int) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(repo_root / "configs" / "train.yaml"))
    parser["context_slices"] = k
    torch.manual_seed(0)
    return parser.get_parsed_content("network_def")


def _item(tiny_demo, z: int) -> dict:
    """A tiny-demo key slice as configs/inference.yaml loads it: (1, X, Y) image, its volume and index."""
    from monai.transforms import EnsureChannelFirstd, LoadImaged

    items = [it for s in ("training", "validation", "test") for it in json.loads((tiny_demo / "datalist.json").read_text())[s]]
    it = next(i for i in items if i["slice"] == z)
    d = {"image": str(tiny_demo / it["image"]), "volume": str(tiny_demo / it["volume"]), "slice": z}
    d = LoadImaged("image", image_only=True)(d)
    return EnsureChannelFirstd("image", channel_dim="no_channel")(d)


def test_input_channels_come_from_the_models_first_convolution(repo_root, tmp_path):
    net = _network(repo_root, 3)
    (tmp_path / "pt").mkdir()
    torch.save(net.state_dict(), tmp_path / "pt" / "model.pt")
    assert input_channels(tmp_path / "pt") == 3
    assert input_channels(tmp_path / "pt" / "model.pt") == 3  # the file itself (the Deploy app's --model)
    (tmp_path / "ts").mkdir()
    torch.jit.script(_network(repo_root, 5)).save(str(tmp_path / "ts" / "model.ts"))  # TorchScript alone
    assert input_channels(tmp_path / "ts") == 5
    assert input_channels(tmp_path / "none", default=1) == 1  # the bare package: no model yet
    (tmp_path / "old").mkdir()  # a pre-0.5.0 {"model": ..., "optimizer": ...} checkpoint
    torch.save({"model": _network(repo_root, 1).state_dict(), "optimizer": {}}, tmp_path / "old" / "model.pt")
    assert input_channels(tmp_path / "old") == 1


def test_key_slice_gets_its_neighbours_from_its_volume(tiny_demo):
    vol = np.asarray(nib.load(tiny_demo / "demo-000" / "t1c.nii.gz").dataobj, dtype=np.float32)
    out = KeySliceContextd(3)(_item(tiny_demo, 8))["image"]
    assert out.shape == (3, *vol.shape[:2])
    for c, src in enumerate((7, 8, 9)):
        np.testing.assert_allclose(np.asarray(out[c]), vol[:, :, src], rtol=1e-5)
    assert str(out.meta["filename_or_obj"]).endswith("_z008.nii.gz")  # predictions still name the key slice
    edge = KeySliceContextd(5)(_item(tiny_demo, 0))["image"]  # the first slice: its missing neighbours repeat it
    for c, src in enumerate((0, 0, 0, 1, 2)):
        np.testing.assert_allclose(np.asarray(edge[c]), vol[:, :, src], rtol=1e-5)
    same = _item(tiny_demo, 8)
    assert KeySliceContextd(1)(same)["image"] is same["image"]  # 2D models: untouched


def test_key_slice_without_its_volume_or_with_a_wrong_index_is_named(tiny_demo):
    item = _item(tiny_demo, 8)
    with pytest.raises(InputError, match="'volume' and 'slice'"):
        KeySliceContextd(3)({"image": item["image"]})
    with pytest.raises(InputError, match="slice 9 of .* is not this image"):
        KeySliceContextd(3)(item | {"slice": 9})
    with pytest.raises(InputError, match="'slice' 99 of"):
        KeySliceContextd(3)(item | {"slice": 99})
    with pytest.raises(InputError, match="no such volume"):
        KeySliceContextd(3)(item | {"volume": str(tiny_demo / "missing.nii.gz")})
    with pytest.raises(ValueError, match="odd"):
        KeySliceContextd(2)


def test_key_slice_evaluation_follows_the_evaluated_model(repo_root, served_bundle, tiny_demo):
    """train.yaml + evaluate.yaml (the seed study's key-slice comparison) read k from the checkpoint."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(repo_root / "configs" / "train.yaml"), str(repo_root / "configs" / "evaluate.yaml")])
    parser.update(
        {"bundle_root": str(served_bundle), "dataset_dir": str(tiny_demo), "data_list_file_path": str(tiny_demo / "datalist.json")}
    )
    assert parser.get_parsed_content("context_slices") == 3
    assert parser.get_parsed_content("network").feature_extractor.body.conv1.in_channels == 3
    # the demo and the ablation name the model file (--ckpt_path) outside ckpt_dir: k comes from that file
    elsewhere = ConfigParser()
    elsewhere.read_config([str(repo_root / "configs" / "train.yaml"), str(repo_root / "configs" / "evaluate.yaml")])
    elsewhere.update({"bundle_root": str(tiny_demo), "ckpt_path": str(served_bundle / "models" / "model.pt")})
    assert elsewhere.get_parsed_content("context_slices") == 3
    item = parser.get_parsed_content("test_datalist")[0]
    out = parser.get_parsed_content("validate#preprocessing")(item)
    assert out["image"].shape[0] == 3 and out["box"].shape[1] == 4


def test_2d_inference_of_a_25d_model_on_a_bare_slice_is_one_line(repo_root, served_bundle, tiny_demo):
    out = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml", "--bundle_root", str(served_bundle),
         "--input_image", str(tiny_demo / "slices" / "demo-000_z008.nii.gz"), "--output_path", str(served_bundle / "bare.json")],
        cwd=repo_root, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "demo-000_z008.nii.gz: the model takes 3 adjacent slices" in out.stderr


def test_package_describes_the_models_input(repo_root, served_bundle, tmp_path):
    from bundle.serving.package import NAME, package

    res = package(tmp_path / NAME, root=repo_root, make_zip=False, models_dir=served_bundle / "models")
    meta = json.loads((tmp_path / NAME / "configs" / "metadata.json").read_text())
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 3 and image["channel_def"] == {"0": "slice z-1", "1": "slice z", "2": "slice z+1"}
    ts = torch.jit.load(str(tmp_path / NAME / "models" / "model.ts"), map_location="cpu")
    assert "models/model.ts" in res["files"] and ts.state_dict()["feature_extractor.body.conv1.weight"].shape[1] == 3
