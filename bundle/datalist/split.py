"""Patient-level data split: a patient's images never land in two splits."""

from __future__ import annotations

import json
from pathlib import Path

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


def load_split(path: str | Path | None) -> dict[str, str]:
    """Patient -> split from a JSON mapping, a demo truth.json / simulator record.json ('split' key)."""
    if not path:
        return {}
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict) and isinstance(data.get("split"), dict):
        data = data["split"]
    return {str(k): str(v) for k, v in data.items()}


def assign_splits(patients: list[str], given: dict[str, str], fallback: dict[str, str], seed: int) -> tuple[dict[str, str], dict[str, str]]:
    """(patient -> split, patient -> where it came from): the split file first, then the source's own split
    (DeepLesion's Train_Val_Test), then a seeded split of the patients left."""
    missing = [p for p in patients if p not in given and p not in fallback]
    computed = split_patients(missing, seed) if missing else {}
    split, origin = {}, {}
    for p in patients:
        split[p] = given.get(p) or fallback.get(p) or computed[p]
        origin[p] = "split_file" if p in given else "csv" if p in fallback else "computed"
    return split, origin
