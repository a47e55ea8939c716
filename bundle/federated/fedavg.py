"""Federated averaging for hospitals that train this bundle as MONAI FL clients (configs/fl_client.yaml).

Why: images never leave a hospital; each site trains a round from the same global weights with
``monai.fl.client.MonaiAlgo`` and sends back weights (or their difference to the global ones). The
server's step is FedAvg (McMahan et al., 2017): the mean of the sites' weights, each weighted by its
number of training items, so a site with twice the data pulls twice as hard. An FL system (NVIDIA
FLARE) has its own aggregator; this function is the same rule for simulations, tests and small
federations run by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.fl.utils.constants import WeightType
from monai.fl.utils.exchange_object import ExchangeObject


def site_weights(update: ExchangeObject, global_weights: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """A site's full weights from what it sent: weights as they are, a weight difference added to the global weights."""
    if update.weight_type == WeightType.WEIGHT_DIFF:
        if global_weights is None:
            raise ValueError("a site sent weight differences: give the global weights they were trained from")
        return {k: global_weights[k].cpu() + d.cpu() for k, d in update.weights.items()}
    if update.weight_type not in (None, WeightType.WEIGHTS):
        raise ValueError(f"cannot aggregate weights of type {update.weight_type}")
    return {k: torch.as_tensor(v).cpu() for k, v in update.weights.items()}


def fedavg(
    updates: Sequence[ExchangeObject], n_items: Sequence[int], global_weights: Mapping[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The FedAvg global weights: sum over sites of n_items[i] / sum(n_items) * weights[i].

    Every site must send the same keys. Integer tensors (BatchNorm's ``num_batches_tracked``) are
    averaged the same way and rounded back to their dtype.
    """
    if len(updates) != len(n_items) or not updates:
        raise ValueError(f"{len(updates)} site updates but {len(n_items)} item counts")
    if any(n <= 0 for n in n_items):
        raise ValueError(f"every site needs training items to be weighted; counts: {list(n_items)}")
    sites = [site_weights(u, global_weights) for u in updates]
    keys = set(sites[0])
    for i, s in enumerate(sites[1:], start=1):
        if set(s) != keys:
            raise ValueError(f"site {i} sent other keys than site 0: {sorted(set(s) ^ keys)[:5]}")
    total = float(sum(n_items))
    out = {}
    for k in sites[0]:
        mean = sum(s[k].double() * (n / total) for s, n in zip(sites, n_items))
        dtype = sites[0][k].dtype
        out[k] = (mean.round() if not dtype.is_floating_point else mean).to(dtype)
    return out
