"""An NVIDIA FLARE job that trains this bundle at several hospitals: ScatterAndGather with FedAvg on the server.

Why: hospitals keep their images; an FL engine (NVFlare) sends the global weights to each site, each site
trains a round on its own mined datalist and sends back only the weight difference, and the server averages
them. The job is a plain NVFlare job folder (``meta.json`` + one app per site), so the same folder runs in
the simulator, in POC mode and in a provisioned production federation (docs/distributed.md).

Each site's app carries the bundle (configs in ``config/bundle/configs``, the ``bundle`` package in
``custom/``, which NVFlare puts on the site's ``sys.path``) and runs it as a MONAI FL client:
``monai.fl.client.MonaiAlgo`` driven by monai-nvflare's ``ClientAlgoExecutor``. The server builds the
initial global model from the same ``configs/train.yaml`` (monai-nvflare's ``MonaiBundlePersistor``) and
saves each round's global weights as ``FL_global_model.pt`` in its app folder.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundle import paths

BUNDLE_IN_APP = "config/bundle"  # the bundle root inside an app, relative to the app root (MonaiAlgo and the persistor join them)
TRAIN_CONFIGS = ["configs/train.yaml", "configs/fl_client.yaml"]
EVALUATE_CONFIGS = ["configs/train.yaml", "configs/evaluate.yaml", "configs/fl_client.yaml"]


@dataclass
class Site:
    """One hospital: its NVFlare client name and where its own data lies (paths as seen on that site's machine)."""

    name: str
    data_list_file_path: str
    dataset_dir: str


@dataclass
class JobSpec:
    """What the federation runs: rounds, local epochs per round, the validation metric, config overrides for every site."""

    name: str = "brain_mri_tumor_detection_fedavg"
    num_rounds: int = 2
    local_epochs: int = 1
    key_metric: str = "val_mAP"  # the bundle's validation key metric (configs/train.yaml), reported before each round
    overrides: dict[str, Any] = field(default_factory=dict)  # any train.yaml key, e.g. {"batch_size": 2}
    train_timeout: int = 0  # seconds a site may take for a round; 0: no limit


def server_config(spec: JobSpec, n_sites: int) -> dict:
    """config_fed_server.json: ScatterAndGather over every site, FedAvg of weight differences, the bundle's network."""
    return {
        "format_version": 2,
        "min_clients": n_sites,
        "num_rounds": spec.num_rounds,
        "workflows": [
            {
                "id": "scatter_and_gather",
                "path": "nvflare.app_common.workflows.scatter_and_gather.ScatterAndGather",
                "args": {
                    "min_clients": n_sites,
                    "num_rounds": spec.num_rounds,
                    "start_round": 0,
                    "wait_time_after_min_received": 0,
                    "aggregator_id": "aggregator",
                    "persistor_id": "persistor",
                    "shareable_generator_id": "shareable_generator",
                    "train_task_name": "train",
                    "train_timeout": spec.train_timeout,
                },
            }
        ],
        "components": [
            {
                "id": "persistor",
                "path": "monai_nvflare.monai_bundle_persistor.MonaiBundlePersistor",
                "args": {"bundle_root": BUNDLE_IN_APP, "config_train_filename": "configs/train.yaml", "network_def_key": "network_def"},
            },
            {
                "id": "shareable_generator",
                "path": "nvflare.app_common.shareablegenerators.full_model_shareable_generator.FullModelShareableGenerator",
                "args": {},
            },
            {
                # FedAvg: the weighted mean of the sites' weight differences, each site weighted by its training
                # iterations this round (MonaiAlgo reports them); bundle/federated/fedavg.py is the reference rule
                "id": "aggregator",
                "path": "nvflare.app_common.aggregators.intime_accumulate_model_aggregator.InTimeAccumulateWeightedAggregator",
                "args": {"expected_data_kind": "WEIGHT_DIFF"},
            },
            {"id": "model_selector", "path": "nvflare.app_common.widgets.intime_model_selector.IntimeModelSelector", "args": {}},
        ],
    }


def client_config(spec: JobSpec, site: Site) -> dict:
    """config_fed_client.json: the bundle as a MONAI FL client on this site's own datalist."""
    kwargs = {"data_list_file_path": site.data_list_file_path, "dataset_dir": site.dataset_dir, **spec.overrides}
    return {
        "format_version": 2,
        "executors": [
            {
                "tasks": ["train", "submit_model", "validate"],
                "executor": {
                    "id": "executor",
                    "path": "monai_nvflare.client_algo_executor.ClientAlgoExecutor",
                    "args": {"client_algo_id": "client_algo", "key_metric": spec.key_metric},
                },
            }
        ],
        "task_result_filters": [],
        "task_data_filters": [],
        "components": [
            {
                "id": "client_algo",
                "path": "monai.fl.client.MonaiAlgo",
                "args": {
                    "bundle_root": BUNDLE_IN_APP,
                    "local_epochs": spec.local_epochs,
                    "config_train_filename": TRAIN_CONFIGS,
                    "config_evaluate_filename": EVALUATE_CONFIGS,
                    "train_kwargs": dict(kwargs),
                    "eval_kwargs": dict(kwargs),
                },
            }
        ],
    }


def _add_bundle(app: Path, repo_root: Path) -> None:
    """Ship the bundle inside an app: its configs under config/bundle, its Python package under custom/."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "experiments")
    shutil.copytree(repo_root / "configs", app / BUNDLE_IN_APP / "configs", ignore=ignore)
    for cfg in (app / BUNDLE_IN_APP / "configs").glob("*.yaml"):  # NVFlare runs a site from its own workspace: no macro
        cfg.write_text(paths.inline_macros(cfg.read_text(), repo_root))  # reaches configs/network.yaml there, so it is inlined
    shutil.copytree(repo_root / "bundle", app / "custom" / "bundle", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "demo"))


def write_job(out: Path, sites: list[Site], spec: JobSpec | None = None, repo_root: Path | None = None) -> Path:
    """Write the NVFlare job folder: meta.json, app_server, and one app per site (each pointing at its own datalist)."""
    spec = spec or JobSpec()
    if len({s.name for s in sites}) != len(sites) or not sites:
        raise ValueError(f"sites need distinct names: {[s.name for s in sites]}")
    repo_root = repo_root or paths.ROOT
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    apps: dict[str, Mapping] = {"app_server": {"config_fed_server.json": server_config(spec, len(sites))}}
    apps |= {f"app_{s.name}": {"config_fed_client.json": client_config(spec, s)} for s in sites}
    for app, files in apps.items():
        for fname, cfg in files.items():
            (out / app / "config").mkdir(parents=True, exist_ok=True)
            (out / app / "config" / fname).write_text(json.dumps(cfg, indent=2) + "\n")
        _add_bundle(out / app, repo_root)
    meta = {
        "name": spec.name,
        "resource_spec": {},
        "min_clients": len(sites),
        "deploy_map": {"app_server": ["server"], **{f"app_{s.name}": [s.name] for s in sites}},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out
