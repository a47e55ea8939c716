"""The model zoo's offline checks on a packaged bundle, with the MONAI calls and arguments of its ``ci/verify_bundle.py``.

Why a script: the zoo runs them in a process whose ``sys.path`` starts with the bundle folder, so
the bundle's own ``bundle`` package (the one in the zip) is what the configs import. tests/serving/test_zoo.py
runs it that way; it prints one JSON line per step and exits non-zero at the first failure.

Steps (Project-MONAI/model-zoo ``ci/verify_bundle.py``, ``ci/utils.py``): ``verify_bundle_directory``
(large files through ``download_url``, necessary and preferred files), ``verify_version_changes``,
``verify_bundle_properties`` (``create_workflow`` + ``check_properties`` with an app's properties),
``verify_torchscript`` (``ckpt_export`` without ``key_in_ckpt``, then ``torch.jit.load`` of the
provided ``model.ts``). Left out: ``verify_metadata_format`` (downloads the schema) and
``verify_data_shape``, which the zoo skips for detection bundles (``exclude_verify_shape_list``:
a RetinaNet returns head outputs, not one tensor).

    python tests/serving/zoo_checks.py MODELS_PATH BUNDLE_NAME [--properties FILE] [--model-info FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys


def _find_bundle_file(root_dir: str, file: str, suffix=("json", "yaml", "yml")) -> str | None:
    name = None
    for s in suffix:
        if f"{file}.{s}" in os.listdir(root_dir):
            name = f"{file}.{s}"
    return name


def verify_bundle_directory(bundle_path: str) -> dict:
    from monai.apps.utils import download_url
    from monai.bundle.config_parser import ConfigParser

    checked = []
    large = _find_bundle_file(bundle_path, "large_files")
    if large is not None:
        parser = ConfigParser()
        parser.read_config(os.path.join(bundle_path, large))
        for lf in parser.get()["large_files"]:
            lf = dict(lf)
            lf["fuzzy"] = True
            if lf.get("hash_val", None) == "":
                lf.pop("hash_val")
            if lf.get("hash_type", None) == "":
                lf.pop("hash_type")
            lf["filepath"] = os.path.join(bundle_path, lf.pop("path"))
            download_url(**lf)  # a present file with the right hash is not downloaded; a wrong hash raises
            checked.append(os.path.relpath(lf["filepath"], bundle_path))
    for f in ("configs/metadata.json", "LICENSE", "models/model.pt"):
        if not os.path.exists(os.path.join(bundle_path, f)):
            raise ValueError(f"necessary file {f} is not existing.")
    if _find_bundle_file(os.path.join(bundle_path, "configs"), "inference") is None:
        raise ValueError("inference config file is not existing.")
    return {"large_files": checked}


def verify_version_changes(bundle_path: str, bundle_name: str, model_info: dict) -> dict:
    with open(os.path.join(bundle_path, "configs/metadata.json")) as f:
        metadata = json.load(f)
    for key in ("version", "changelog"):
        if key not in metadata:
            raise ValueError(f"'{key}' is missing in configs/metadata.json of bundle: {bundle_name}.")
    if metadata["version"] not in metadata["changelog"]:
        raise ValueError(f"version number: {metadata['version']} is missing in 'changelog'")
    if f"{bundle_name}_v{metadata['version']}" in model_info:
        raise ValueError(f"version number: {metadata['version']} is already used of bundle: {bundle_name}.")
    return {"version": metadata["version"]}


def verify_bundle_properties(bundle_path: str, properties_path: str) -> dict:
    from monai.bundle import create_workflow

    spec = importlib.util.spec_from_file_location("bundle_properties", properties_path)
    props = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(props)
    with open(os.path.join(bundle_path, "configs/metadata.json")) as f:
        apps = json.load(f).get("supported_apps", {})
    config_name = _find_bundle_file(os.path.join(bundle_path, "configs"), "inference")
    workflow = create_workflow(
        workflow_type="inference",
        bundle_root=bundle_path,
        config_file=os.path.join(bundle_path, f"configs/{config_name}"),
        logging_file=os.path.join(bundle_path, "configs/logging.conf"),
        meta_file=os.path.join(bundle_path, "configs/metadata.json"),
    )
    workflow.properties = {**props.MetaProperties, **props.InferProperties}
    missing = workflow.check_properties()
    if missing:
        raise ValueError(f"check properties for workflow failed: {missing}, app_properties_path: {properties_path}")
    return {"supported_apps": apps, "checked": sorted(workflow.properties)}


def verify_torchscript(bundle_path: str, net_id: str = "network_def", config_file: str = "configs/inference.yaml") -> dict:
    import torch
    from monai.bundle import ckpt_export

    ckpt_export(
        net_id=net_id,
        filepath=os.path.join(bundle_path, "models/verify_model.ts"),
        ckpt_file=os.path.join(bundle_path, "models", "model.pt"),
        meta_file=os.path.join(bundle_path, "configs/metadata.json"),
        config_file=os.path.join(bundle_path, config_file),
        bundle_root=bundle_path,
    )
    out = {"exported": "models/verify_model.ts"}
    ts = os.path.join(bundle_path, "models", "model.ts")
    if os.path.exists(ts):
        torch.jit.load(ts)
        out["loaded"] = "models/model.ts"
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models_path")
    p.add_argument("bundle")
    p.add_argument("--properties", default=None, help="an app's bundle_properties.py (default: skip that step)")
    p.add_argument("--model-info", default=None, help="the zoo's models/model_info.json (default: empty)")
    a = p.parse_args()
    bundle_path = os.path.join(a.models_path, a.bundle)
    sys.path.insert(0, bundle_path)  # as the zoo does: the bundle's own code first
    model_info = json.load(open(a.model_info)) if a.model_info else {}
    config_file = os.path.join("configs", _find_bundle_file(os.path.join(bundle_path, "configs"), "inference"))
    steps = [
        ("verify_bundle_directory", lambda: verify_bundle_directory(bundle_path)),
        ("verify_version_changes", lambda: verify_version_changes(bundle_path, a.bundle, model_info)),
    ]
    if a.properties:
        steps.append(("verify_bundle_properties", lambda: verify_bundle_properties(bundle_path, a.properties)))
    steps.append(("verify_torchscript", lambda: verify_torchscript(bundle_path, "network_def", config_file)))
    for name, step in steps:
        try:
            res = step()
        except Exception as e:
            print(json.dumps({"step": name, "ok": False, "error": f"{type(e).__name__}: {e}"}), flush=True)
            return 1
        print(json.dumps({"step": name, "ok": True, **res}), flush=True)
    import bundle

    print(json.dumps({"step": "bundle_code", "ok": True, "file": os.path.relpath(bundle.__file__, bundle_path)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
