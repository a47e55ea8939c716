"""configs/network.yaml is the one home of the network's keys: every model config takes them by macro, and they
resolve to the same values from any working directory, in the repository and in a packaged (inlined) config."""

from __future__ import annotations

import os

import pytest
import yaml
from monai.bundle import ConfigParser

from bundle.paths import CONFIGS, ROOT, inline_macros, read_config

MODEL_CONFIGS = ("train.yaml", "inference.yaml", "inference_volume.yaml")
NETWORK = yaml.safe_load((CONFIGS / "network.yaml").read_text())


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_every_network_key_is_taken_from_network_yaml(name):
    raw = yaml.safe_load((CONFIGS / name).read_text())
    written_here = {k for k in NETWORK if raw.get(k) != f"%configs/network.yaml#{k}"}
    assert not written_here, f"{name} writes {sorted(written_here)} itself"


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_macros_resolve_from_another_working_directory(name, tmp_path):
    cwd = os.getcwd()
    os.chdir(tmp_path)  # MONAI reads a macro's file relative to here: nothing there
    try:
        parser = read_config(ConfigParser(), CONFIGS / name)
    finally:
        os.chdir(cwd)
    for key in ("base_anchor_shapes", "feature_map_scales", "backbone_channels", "nms_thresh"):
        assert parser[key] == NETWORK[key]
    assert parser["network_def"]["_target_"] == NETWORK["network_def"]["_target_"]


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_inlined_config_stands_alone_and_equals_the_resolved_one(name):
    text = inline_macros((CONFIGS / name).read_text(), ROOT)
    assert "%configs/" not in text
    alone = yaml.safe_load(text)
    resolved = {k: v for k, v in read_config(ConfigParser(), CONFIGS / name).get().items() if k != "_meta_"}
    assert alone == resolved
