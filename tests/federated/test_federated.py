"""The bundle as a MONAI FL client: two simulated hospitals train a round each, FedAvg, evaluate.

NVIDIA FLARE's FedAvg aggregator (the one the NVFlare job runs, bundle/federated/job.py) is checked here against
the reference rule in bundle/federated/fedavg.py; tests/federated/test_nvflare.py runs the whole job in NVFlare's simulator.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.fl.client import MonaiAlgo
from monai.fl.utils.constants import WeightType
from monai.fl.utils.exchange_object import ExchangeObject

from bundle.federated.fedavg import fedavg

TINY = {"batch_size": 2, "num_samples": 1, "num_workers": 0, "patch_size": [64, 64], "val_patch_size": [64, 64]}


def _site(repo_root: Path, tiny_demo: Path, root: Path, patient: str, validation: slice) -> MonaiAlgo:
    """One hospital: its own bundle root (the bundle's configs, as an FL system provisions them) and datalist."""
    root.mkdir(parents=True)
    (root / "configs").symlink_to(repo_root / "configs")
    for p in tiny_demo.iterdir():
        if p.name != "datalist.json":
            (root / p.name).symlink_to(p)
    d = json.loads((tiny_demo / "datalist.json").read_text())
    site = {"training": [x for x in d["training"] if x["patient"] == patient], "validation": d["validation"][validation]}
    site["test"] = site["validation"]
    (root / "datalist.json").write_text(json.dumps(site))
    kwargs = {"dataset_dir": str(root), "data_list_file_path": str(root / "datalist.json"), **TINY}
    return MonaiAlgo(
        bundle_root=str(root),
        local_epochs=1,
        config_train_filename=["configs/train.yaml", "configs/fl_client.yaml"],
        config_evaluate_filename=["configs/train.yaml", "configs/evaluate.yaml", "configs/fl_client.yaml"],
        train_kwargs=dict(kwargs),
        eval_kwargs=dict(kwargs),
    )


def nvflare_fedavg(diffs: list[dict], weights: list[float], global_weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The global weights after NVFlare's InTimeAccumulateWeightedAggregator (the job's server aggregator) takes
    the sites' weight differences, each with its round's step count, as ClientAlgoExecutor sends them."""
    from nvflare.apis.dxo import DXO, DataKind, MetaKey
    from nvflare.apis.event_type import EventType
    from nvflare.apis.fl_constant import ReservedKey
    from nvflare.apis.fl_context import FLContext
    from nvflare.app_common.aggregators.intime_accumulate_model_aggregator import InTimeAccumulateWeightedAggregator
    from nvflare.app_common.app_constant import AppConstants

    agg = InTimeAccumulateWeightedAggregator(expected_data_kind=DataKind.WEIGHT_DIFF)
    ctx = FLContext()
    ctx.set_prop(AppConstants.CURRENT_ROUND, 0, private=True, sticky=False)
    agg.handle_event(EventType.START_RUN, ctx)  # what the server's engine does before the first round
    for i, (diff, w) in enumerate(zip(diffs, weights)):
        data = {k: torch.as_tensor(v).detach().cpu().numpy() for k, v in diff.items()}
        shareable = DXO(DataKind.WEIGHT_DIFF, data=data, meta={MetaKey.NUM_STEPS_CURRENT_ROUND: w}).to_shareable()
        shareable.set_peer_props({ReservedKey.IDENTITY_NAME: f"site-{i}"})
        shareable.add_cookie(AppConstants.CONTRIBUTION_ROUND, 0)
        assert agg.accept(shareable, ctx)
    mean_diff = agg.aggregate(ctx)["DXO"]["data"]
    return {k: global_weights[k].double() + torch.as_tensor(mean_diff[k]).double() for k in global_weights}


def _close(engine: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    """Float weights equal; integer buffers (BatchNorm's step count) within the reference's rounding."""
    assert set(engine) == set(reference)
    for k, v in reference.items():
        tol = 1e-6 if v.is_floating_point() else 0.5
        assert torch.allclose(engine[k], v.double(), atol=tol), k


def test_nvflare_aggregator_is_the_reference_fedavg():
    """Weighted by step count as NVFlare weighs, the engine's FedAvg is the reference item-weighted mean."""
    g = {"w": torch.tensor([1.0, 1.0]), "n": torch.tensor(0)}
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([4.0, 8.0]), "n": torch.tensor(6)}
    diffs = [{k: w[k] - g[k] for k in g} for w in (a, b)]
    updates = [ExchangeObject(weights=d, weight_type=WeightType.WEIGHT_DIFF) for d in diffs]
    _close(nvflare_fedavg(diffs, [1, 2], g), fedavg(updates, [1, 2], g))


def test_fedavg_is_the_item_weighted_mean():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([4.0, 8.0]), "n": torch.tensor(6)}
    full = [ExchangeObject(weights=a, weight_type=WeightType.WEIGHTS), ExchangeObject(weights=b, weight_type=WeightType.WEIGHTS)]
    avg = fedavg(full, [1, 2])
    assert torch.allclose(avg["w"], torch.tensor([3.0, 6.0])) and avg["n"].dtype == torch.int64 and int(avg["n"]) == 5
    g = {"w": torch.tensor([1.0, 1.0]), "n": torch.tensor(0)}
    diffs = [ExchangeObject(weights={k: v - g[k] for k, v in w.items()}, weight_type=WeightType.WEIGHT_DIFF) for w in (a, b)]
    assert torch.allclose(fedavg(diffs, [1, 2], g)["w"], avg["w"])
    with pytest.raises(ValueError, match="global weights"):
        fedavg(diffs, [1, 2])
    with pytest.raises(ValueError, match="counts"):
        fedavg(full, [0, 2])


@pytest.mark.slow
def test_two_hospitals_train_a_round_aggregate_and_evaluate(repo_root, tiny_demo, tmp_path):
    sites = [
        _site(repo_root, tiny_demo, tmp_path / "hospital_a", "demo-002", slice(0, 2)),
        _site(repo_root, tiny_demo, tmp_path / "hospital_b", "demo-003", slice(2, 4)),
    ]
    for i, algo in enumerate(sites):
        algo.initialize(extra={"fl_client_name": f"hospital_{i}"})
    n_items = [len(algo.train_workflow.train_dataset_data) for algo in sites]
    assert all(n > 0 for n in n_items) and sum(n_items) == 12

    torch.manual_seed(0)
    start = {k: v.clone() for k, v in sites[0].trainer.network.state_dict().items()}
    start = {k: (v + 0.01 * torch.randn_like(v)) if v.is_floating_point() else v for k, v in start.items()}  # the server's
    updates = []
    for algo in sites:
        algo.train(ExchangeObject(weights=start, weight_type=WeightType.WEIGHTS))
        assert algo.trainer.state.epoch == 1
        updates.append(algo.get_weights())
        assert updates[-1].weight_type == WeightType.WEIGHT_DIFF  # MonaiAlgo's default: only the change leaves the site
    local = [{k: start[k] + d for k, d in u.weights.items()} for u in updates]
    assert any(not torch.equal(local[0][k], start[k]) for k in start)  # the round trained
    assert any(not torch.equal(local[0][k], local[1][k]) for k in start)  # on different data

    agg = fedavg(updates, n_items, start)
    _close(nvflare_fedavg([u.weights for u in updates], n_items, start), agg)  # the FL engine's aggregate is the same
    total = sum(n_items)
    for k, v in agg.items():
        expected = (local[0][k].double() * n_items[0] + local[1][k].double() * n_items[1]) / total
        assert torch.allclose(v.double(), expected.round() if not v.is_floating_point() else expected, atol=1e-6), k

    for algo in sites:
        metrics = algo.evaluate(ExchangeObject(weights=agg, weight_type=WeightType.WEIGHTS)).metrics
        assert {"val_mAP", "val_mAP_F1", "val_mAP_mAR"} <= set(metrics)
        assert all(0.0 <= metrics[k] <= 1.0 for k in ("val_mAP", "val_mAP_mAR"))
        # the evaluator ran the aggregate, bit for bit
        assert all(torch.equal(algo.evaluator.network.state_dict()[k].cpu(), agg[k]) for k in agg)
    assert not (tmp_path / "hospital_a" / "models" / "train_state").exists()  # FL rounds keep no local resume state
