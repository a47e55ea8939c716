"""The README's main command, end to end on the tiny demo: every stage runs and the results page is written."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bundle.demo.experiment import split_by_pseudonym
from bundle.demo.run import DemoOptions

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("demo_script", ROOT / "scripts" / "demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_script_flags_are_the_options():
    """scripts/demo.py only parses: no flag means DemoOptions' defaults, and each flag lands in its field."""
    parse = _script().parse
    assert parse([]) == DemoOptions()
    o = parse(["--size", "tiny", "--epochs", "2", "--score_threshold", "0.4", "--work", "w", "--series_rounds", "2"])
    assert (o.size, o.epochs, o.score_threshold, o.work, o.seed, o.series_rounds) == ("tiny", 2, 0.4, "w", 0, 2)
    assert DemoOptions().series and DemoOptions().series_rounds == 1  # mean-teacher self-training, kept only when it wins
    assert DemoOptions().context_slices == 3  # ... + 2.5D at 36 epochs


def test_script_rejects_options_that_cannot_run(capsys):
    parse = _script().parse
    for argv, says in ((["--context_slices", "2"], "odd"), (["--context_slices", "3", "--series", "false"], "needs --series true")):
        with pytest.raises(SystemExit):
            parse(argv)
        assert says in capsys.readouterr().err
    assert parse(["--context_slices", "1", "--series", "false"]).context_slices == 1


def test_split_file_is_keyed_by_pseudonym():
    """Mining sees only pseudonyms; the demo's split reaches it through the linkage table."""
    split = {"demo-000": "training", "demo-001": "validation", "demo-002": "test"}
    linkage = {"P9": "demo-001", "P3": "demo-000"}  # the test patient was never exported
    assert split_by_pseudonym(split, linkage) == {"P9": "validation", "P3": "training"}


@pytest.mark.slow
def test_demo_command_runs_end_to_end(tmp_path):
    results = tmp_path / "results.md"
    # one round of mean-teacher series self-training (the default)
    cmd = [sys.executable, "scripts/demo.py", "--size", "tiny", "--epochs", "2", "--n_bootstrap", "50", "--series_rounds", "1"]
    cmd += [
        "--work",
        str(tmp_path / "work"),
        "--data",
        str(tmp_path / "data"),
        "--results",
        str(results),
        "--model_dir",
        str(tmp_path / "models"),
    ]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    r = json.loads((tmp_path / "work" / "results.json").read_text())
    assert set(r["models"]) == {"mined_only", "self_trained", "oracle", "untrained"}
    assert r["test_patients"] >= 1 and r["experiment"]["training_images"] >= 1
    # the paired test compares exactly the two reported models, at their reported operating points
    models, t = r["models"], r["b_vs_a"]
    assert t["difference"] == pytest.approx(models["self_trained"]["f1"] - models["mined_only"]["f1"], abs=1e-12)
    assert t["n_patients"] == r["test_patients"] and t["n_resamples"] == 50 and t["ci_low"] <= t["ci_high"]
    # two-sided P = 2 (k + 1) / (n + 1) for an integer k >= 0, capped at 1: never below the +1 floor
    k = t["p_value"] * 51 / 2 - 1
    assert t["p_value"] == 1.0 or (k >= 0 and k == pytest.approx(round(k), abs=1e-9))
    # the test cohort never entered the PACS export: no mined item belongs to a test patient
    truth = json.loads((tmp_path / "data" / "demo" / "truth.json").read_text())
    exported = {p.name for p in (tmp_path / "data" / "pacs_export" / "dicom").iterdir() if p.is_dir()}
    assert exported and all(truth["split"][p] != "test" for p in exported)
    # (b) ships with its operating point, unless that point keeps nothing on validation (a 2-epoch model may): then the
    # demo refuses to ship, says so on the page, and still reports every figure
    shipped = r["volume"]["shipped"]
    assert (tmp_path / "models" / "model.pt").is_file() == shipped["ok"] == (tmp_path / "models" / "operating_point.json").is_file()
    assert shipped["ok"] or ("**(b) is not shipped**" in results.read_text() and "keeps nothing" in shipped["reason"])
    page = results.read_text()
    kept = (
        "self-trained (round 1 of 1 kept on validation)"
        if r["self_training_best_round"]
        else "the round-0 teacher (1 self-training round(s)"
    )
    assert f"(b) whole series + ignore regions + 2.5D (3 slices){':' if not r['self_training_best_round'] else ','} {kept}" in page
    assert "Self-training rounds" in page
    assert "(b) is the round with the best validation sensitivity >= 10 mm at the shipped false-box limits" in page  # as kept
    assert (tmp_path / "work" / "eval" / ("self_trained" if r["self_training_best_round"] else "teacher_round0")).is_dir()
    # the shipped model is 2.5D (docs/results.md's 36-epoch choice): 3 input channels, read back from the model
    from bundle.engines.checkpoints import input_channels

    b_model = tmp_path / "models" if shipped["ok"] else tmp_path / "work" / "selftrain_series" / "round0" / "models"
    assert r["context_slices"] == 3 and input_channels(b_model) == 3
    assert r["series_rounds"] == 1 and len(r["self_training"]) in (1, 2)  # round 0, and round 1 unless it stopped early
    # the volume-level ceiling: (b)'s recipe on complete boxes, by lesion size, beside (a) and (b); only (b) ships
    v = r["volume"]
    assert set(v["oracle_volume"]["by_size"]) == set(v["self_trained"]["by_size"]) and "old_rule" in v["oracle_volume"]
    assert "(c) volume oracle" in page and "By lesion long axis" in page
    assert not (tmp_path / "work" / "oracle_volume" / "models" / "operating_point.json").exists()
    metrics = json.loads((tmp_path / "work" / "eval_volume" / "oracle_volume" / "metrics_volume.json").read_text())
    assert metrics["provenance"]["git"]["commit"] and metrics["provenance"]["run"]["model_md5"]
