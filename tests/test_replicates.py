"""The replicate experiment: pooling, the two-level bootstrap (training variance in the CI), and the command on the tiny demo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bundle.metrics.bootstrap import paired_test
from bundle.metrics.replicates import mean_sd, two_level_difference

ROOT = Path(__file__).resolve().parents[1]


def _counts(tp: int, fp: int, fn: int, n: int = 20) -> np.ndarray:
    return np.tile([tp, fp, fn], (n, 1))


def test_identical_arms_differ_by_nothing():
    a = [_counts(3, 1, 1), _counts(2, 2, 1)]
    d = two_level_difference(a, a, n_resamples=200)
    assert d["difference"] == 0 and d["ci_low"] == 0 and d["ci_high"] == 0 and d["p_value"] == 1.0
    assert d["share_b_better"] == 0.0


def test_better_everywhere_gives_the_smallest_p():
    a = [_counts(2, 2, 2), _counts(2, 2, 2), _counts(2, 2, 2)]
    b = [_counts(4, 0, 0), _counts(4, 0, 0), _counts(3, 1, 1)]
    d = two_level_difference(b, a, n_resamples=499)
    assert d["ci_low"] > 0 and d["p_value"] == pytest.approx(2 / 500) and d["share_b_better"] == 1.0
    assert d["difference"] == pytest.approx(np.mean([1.0 - 0.5, 1.0 - 0.5, 0.75 - 0.5]))


def test_training_variance_widens_the_interval():
    """Two trainings of the same arm disagree: each replicate alone looks significant, pooled it is not."""
    rng = np.random.default_rng(0)
    a = [_counts(3, 1, 1, 40), _counts(3, 1, 1, 40)]
    b = [_counts(4, 0, 0, 40), _counts(2, 2, 2, 40)]
    b = [x + rng.integers(0, 2, x.shape) * [1, 0, 0] for x in b]  # not all patients alike
    per_rep = [paired_test(b[i], a[i], 500, seed=1) for i in range(2)]
    assert per_rep[0]["ci_low"] > 0 and per_rep[1]["ci_high"] < 0  # patient-only bootstrap: two confident, opposite claims
    d = two_level_difference(b, a, n_resamples=500, seed=1)
    assert d["ci_low"] < 0 < d["ci_high"] and d["p_value"] > 0.05 and d["share_b_better"] == 0.5


def test_arms_must_share_replicates_and_patients():
    with pytest.raises(ValueError, match="same replicates"):
        two_level_difference([_counts(1, 0, 0)], [], n_resamples=10)
    with pytest.raises(ValueError, match="different patients"):
        two_level_difference([_counts(1, 0, 0, 5)], [_counts(1, 0, 0, 6)], n_resamples=10)


def test_mean_sd():
    assert mean_sd([0.5, 0.7]) == {"mean": pytest.approx(0.6), "sd": pytest.approx(np.std([0.5, 0.7], ddof=1)), "n": 2}
    assert mean_sd([0.4])["sd"] == 0.0


def test_oracle_restricted_to_the_size_rule(tmp_path):
    from bundle.datalist.rules import SizeRule
    from bundle.demo.replicate import restrict_to_size_rule

    item = {"image": "a.nii.gz", "spacing": [1.0, 1.0], "box": [[0, 0, 5, 5], [0, 0, 20, 12], [0, 0, 80, 30]], "label": [0, 0, 0]}
    item["box_source"] = ["oracle"] * 3
    src = tmp_path / "oracle.json"
    src.write_text(json.dumps({"training": [item], "validation": [item], "test": []}))
    out = json.loads(Path(restrict_to_size_rule(str(src), tmp_path / "c.json", SizeRule())).read_text())
    assert out["training"][0]["box"] == [[0, 0, 20, 12]] and out["training"][0]["label"] == [0]
    assert out["training"][0]["box_source"] == ["oracle"]
    assert len(out["validation"][0]["box"]) == 3  # evaluation truth untouched


@pytest.mark.slow
def test_replicate_command_on_the_tiny_demo(tmp_path):
    """1 data seed x 2 training seeds, every arm, pooled, the page with pictures; a rerun reuses the replicates."""
    from bundle.demo.replicate import ARMS, ReplicatePlan, run

    tiny = {"val_interval": 1, "batch_size": 2, "num_samples": 1, "num_workers": 0, "patch_size": [64, 64], "val_patch_size": [64, 64]}
    plan = ReplicatePlan(data_seeds=[4], train_seeds=[0, 1], size="tiny", epochs=1, n_bootstrap=50, train_overrides=tiny, pictures=1)
    page = tmp_path / "results.md"
    s = run(plan, str(tmp_path / "work"), str(page))
    assert [(r["data_seed"], r["train_seed"]) for r in s["replicates"]] == [(4, 0), (4, 1)]
    for arm in ARMS:
        assert s["pooled"]["arms"][arm]["f1"]["n"] == 2
        c = [np.asarray(r["arms"][arm]["counts"]) for r in s["replicates"]]
        assert c[0].shape == c[1].shape and c[0].shape[1] == 3
        assert s["replicates"][0]["arms"][arm]["test"]["f1"] == pytest.approx(
            2 * c[0][:, 0].sum() / max(1, 2 * c[0][:, 0].sum() + c[0][:, 1].sum() + c[0][:, 2].sum())
        )
    assert s["pooled"]["b_vs_a"]["n_replicates"] == 2
    text = page.read_text()
    assert "(b) - (a)" in text and "Pooled over replicates" in text and "Data seeds [4]" in text
    assert "python scripts/replicate.py --plan#data_seeds '[4]' --plan#size tiny --plan#epochs '1'" in text
    pics = list((tmp_path / "results_pictures").glob("*.png"))
    assert len(pics) == 1 and pics[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = run(plan, str(tmp_path / "work"), None)
    assert again["replicates"] == s["replicates"]


def test_the_page_names_the_command_that_reproduces_it():
    from dataclasses import asdict

    from bundle.demo.replicate import ReplicatePlan
    from bundle.demo.replicate_page import command

    default = asdict(ReplicatePlan())
    assert command(default, default) == "python scripts/replicate.py"
    plan = asdict(ReplicatePlan(data_seeds=[2027], epochs=5))
    assert command(plan, default) == "python scripts/replicate.py --plan#data_seeds '[2027]' --plan#epochs '5'"
