"""Patient-level data split: a patient's images never land in two splits."""

from __future__ import annotations

import numpy as np


def split_patients(patient_ids: list[str], seed: int, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> dict[str, str]:
    """Deterministic split by patient id (order of the input does not matter)."""
    ids = sorted(patient_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    n = len(ids)
    n_val = max(1, int(round(fractions[1] * n)))
    n_test = max(1, int(round(fractions[2] * n)))
    out = {}
    for rank, i in enumerate(order):
        out[ids[i]] = "validation" if rank < n_val else "test" if rank < n_val + n_test else "training"
    return out
