"""scripts/ablation.py and scripts/replicate.py share one runner (bundle.steps.runner.run_experiment); they only parse and print."""

from __future__ import annotations

import importlib.util

import pytest

DIFF = {"difference": 0.1, "ci_low": -0.1, "ci_high": 0.3, "p_value": 0.5}


def _script(repo_root, name):
    spec = importlib.util.spec_from_file_location(f"{name}_script", repo_root / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    ("name", "argv", "config", "summary_file", "summary"),
    [
        (
            "replicate",
            ["--plan#epochs", "1"],
            "configs/experiments/replicate.yaml",
            "replicates.json",
            {"pooled": {"arms": {"a": {"f1": {"mean": 0.5, "sd": 0.1, "n": 2}}}, "b_vs_a": DIFF}},
        ),
        (
            "replicate",
            ["--experiment", "volume"],
            "configs/experiments/replicate_volume.yaml",
            "replicates_volume.json",
            {"replicates": [], "pooled": {"volume_b_vs_a": DIFF, "identical_rows": 0, "replicates": 0}},
        ),
        (
            "ablation",
            [],
            "configs/experiments/ablation.yaml",
            "ablation.json",
            {"pooled": {}, "replicates": [{"data_seed": 0, "train_seed": 0}]},
        ),
    ],
)
def test_experiment_scripts_run_their_config_through_the_one_runner(
    repo_root, monkeypatch, capsys, name, argv, config, summary_file, summary
):
    mod = _script(repo_root, name)
    calls = []

    def fake(config, root, default_work, summary_name, overrides):
        calls.append((config, root, summary_name, dict(overrides)))
        return summary, 12.0

    monkeypatch.setattr(mod, "run_experiment", fake)
    mod.main(argv)
    ((got, root, got_summary, overrides),) = calls
    assert (got, root, got_summary) == (config, repo_root, summary_file)
    assert "experiment" not in overrides and overrides.get("plan#epochs", "1") == "1"
    assert "wall time 12 s" in capsys.readouterr().out
