"""The replicate experiment: pooling, the two-level bootstrap (training variance in the CI), and the command on the tiny demo."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from bundle.metrics.bootstrap import paired_test
from bundle.metrics.replicates import mean_sd, two_level_difference

ROOT = Path(__file__).resolve().parents[2]


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


# ---- the volume-level replicate (issue 25): teacher vs self-trained on whole volumes ----


def _vrep(ds: int, ts: int, kept: int, t_counts, b_counts, k_t=0.5, k_b=0.6) -> dict:
    def fig(counts, cpm):
        c = np.asarray(counts)
        return {"sensitivity_ge10": c[:, 0].sum() / (c[:, 0].sum() + c[:, 2].sum()), "fp_per_volume": 1.0, "cpm": cpm, "counts": c.tolist()}

    t = fig(t_counts, 0.5)
    b = t if kept == 0 else fig(b_counts, 0.6)
    ks = {"teacher": {"f1": k_t, "counts": [[1, 1, 1]] * 3}, "self_trained": {"f1": k_t if kept == 0 else k_b, "counts": [[1, 1, 1]] * 3}}
    return {
        "data_seed": ds,
        "train_seed": ts,
        "kept_round": kept,
        "kept_candidate": "teacher" if kept else "student",
        "identical_to_teacher": kept == 0,
        "volume": {"teacher": t, "self_trained": b},
        "key_slices": ks,
    }


def test_volume_replicate_rows_say_the_round_they_kept_and_mark_identical_ones():
    from bundle.demo.replicate_volume import VolumeReplicatePlan, pool
    from bundle.demo.replicate_volume_page import page, row_line

    same = _vrep(2027, 0, 0, [[1, 0, 1], [2, 1, 0]], None)
    better = _vrep(2027, 1, 2, [[1, 0, 1], [2, 1, 0]], [[2, 0, 0], [2, 1, 0]])
    assert "round 0 (student)" in row_line(same) and "identical to its teacher" in row_line(same)
    assert "round 2 (teacher)" in row_line(better) and "identical" not in row_line(better)
    plan = VolumeReplicatePlan(n_bootstrap=200)
    p = pool(plan, [same, better])
    assert p["identical_rows"] == 1 and p["replicates"] == 2
    # the identical row adds exactly 0: the mean difference is half of the other row's (1.0 - 0.75)
    assert p["volume_b_vs_a"]["difference"] == pytest.approx(0.125) and p["volume_b_vs_a"]["metric"] == "recall"
    assert p["volume_cpm_difference"]["mean"] == pytest.approx(0.05)
    assert "key_slices_b_vs_a" in p
    text = page({"plan": asdict(plan), "pooled": p, "replicates": [same, better]}, "x.json")
    assert "1 of 2 rows kept round 0" in text and "sensitivity >= 10 mm, whole volumes" in text


def test_patient_volume_counts_feed_the_two_level_bootstrap_as_sensitivity(tmp_path):
    from bundle.demo.replicate_volume import patient_volume_counts

    items = [
        {
            "image": "v1.nii.gz",
            "box": [[10, 10, 2, 30, 30, 6], [40, 40, 1, 44, 44, 2]],
            "label": [0, 0],
            "long_mm": [20.0, 4.0],
            "patient": "p1",
        },
        {"image": "v2.nii.gz", "box": [[50, 50, 1, 70, 70, 3]], "label": [0], "long_mm": [20.0], "patient": "p1"},
        {"image": "v3.nii.gz", "box": [], "label": [], "long_mm": [], "patient": "p2"},
    ]
    (tmp_path / "dl.json").write_text(json.dumps({"test": items}))
    recs = [
        {"image": str(tmp_path / "v1.nii.gz"), "box": [[11, 11, 2, 29, 29, 6]], "score": [0.9]},
        {"image": str(tmp_path / "v2.nii.gz"), "box": [[52, 51, 1, 69, 70, 3]], "score": [0.2]},
        {"image": str(tmp_path / "v3.nii.gz"), "box": [[1, 1, 1, 5, 5, 2]], "score": [0.5]},
    ]
    (tmp_path / "p.json").write_text(json.dumps({"predictions": recs}))
    ids, c = patient_volume_counts(str(tmp_path / "dl.json"), str(tmp_path / "p.json"), 0.4)
    # p1: one of two lesions >= 10 mm found (the 4 mm one is not counted), p2: one false box
    assert ids == ["p1", "p2"] and c.tolist() == [[1, 0, 1], [0, 1, 0]]


def test_volume_replicate_arms_start_from_the_mean_teacher_and_are_each_compared_with_the_teacher():
    from bundle.demo.replicate_volume import VolumeReplicatePlan, pool
    from bundle.demo.replicate_volume_page import page

    with pytest.raises(ValueError, match="self_trained"):
        VolumeReplicatePlan(arms=["score_weighted"])
    with pytest.raises(ValueError, match="unknown"):
        VolumeReplicatePlan(arms=["self_trained", "soft_targets"])
    reps = []
    for ts in (0, 1):
        r = _vrep(2027, ts, 1, [[1, 0, 1], [2, 1, 0]], [[2, 0, 0], [2, 1, 0]])
        r["volume"]["score_weighted"] = r["volume"]["teacher"]  # this arm kept round 0 in both rows
        r["key_slices"]["score_weighted"] = r["key_slices"]["teacher"]
        r["arms"] = {
            "self_trained": {"kept_round": 1, "identical_to_teacher": False},
            "score_weighted": {"kept_round": 0, "identical_to_teacher": True},
        }
        reps.append(r)
    plan = VolumeReplicatePlan(arms=["self_trained", "score_weighted"], n_bootstrap=100)
    p = pool(plan, reps)
    assert p["arms"]["score_weighted"]["volume_vs_teacher"]["difference"] == 0.0 and p["arms"]["score_weighted"]["identical_rows"] == 2
    assert p["volume_b_vs_a"]["difference"] == pytest.approx(0.25)
    where = {"work_dir": "runs/rv_small", "results": "docs/results_self_training.md"}
    summary = {"plan": asdict(plan), "pooled": p, "replicates": reps, "where": where, "defaults": asdict(VolumeReplicatePlan())}
    text = page(summary, "x.json")
    assert "| score_weighted | +0.000 |" in text and "2 of 2 |" in text
    # the page's command reruns it: the plan's non-default fields and the non-default work folder, not the page (default)
    cmd = text.split("Written by `")[1].split("`")[0]
    assert cmd.startswith("python scripts/replicate.py --experiment volume --plan#arms")
    assert "--plan#n_bootstrap '100'" in cmd and "--work_dir runs/rv_small" in cmd and "--results" not in cmd


def test_last_round_is_scored_on_test_even_when_validation_kept_round_0(tmp_path, monkeypatch):
    """A replicate that kept round 0 still shows what its round did: the rejected round's candidate is evaluated (and
    only that model); a replicate that kept its last round reuses the kept model's figures."""
    import bundle.demo.replicate_volume as rv
    from bundle.demo.replicate_volume_page import page

    rounds = [
        {"round": 0, "kept": "student", "model": "r0/model.pt"},
        {"round": 1, "kept": "teacher", "model": str(tmp_path / "r1t" / "model.pt")},
    ]
    for name in ("a", "b"):
        (tmp_path / name / "selftrain").mkdir(parents=True)
        (tmp_path / name / "selftrain" / "state.json").write_text(json.dumps({"rounds": rounds}))
    seen = []

    def fake_eval(plan, exp, rdir, out, name, ckpt):
        seen.append((name, str(ckpt)))
        out["volume"][name] = {"sensitivity_ge10": 1.0, "fp_per_volume": 2.0, "cpm": 0.7, "counts": [[2, 2, 0], [2, 2, 0]]}
        out["key_slices"][name] = {"f1": 0.4, "counts": [[1, 2, 1]] * 3}

    monkeypatch.setattr(rv, "_evaluate_model", fake_eval)
    plan = rv.VolumeReplicatePlan(n_bootstrap=100)
    rejected = _vrep(2027, 0, 0, [[1, 0, 1], [2, 1, 0]], None)
    kept = _vrep(2027, 1, 1, [[1, 0, 1], [2, 1, 0]], [[2, 0, 0], [2, 1, 0]])
    assert rv.add_last_round(plan, {}, tmp_path / "a", rejected) and seen == [("last_round", str(tmp_path / "r1t" / "model.pt"))]
    assert rv.add_last_round(plan, {}, tmp_path / "b", kept) and len(seen) == 1  # kept: nothing evaluated again
    assert kept["volume"]["last_round"] == kept["volume"]["self_trained"] and kept["last_round"]["kept"]
    assert rejected["last_round"] == {"round": 1, "candidate": "teacher", "kept": False}
    assert not rv.add_last_round(plan, {}, tmp_path / "a", rejected)  # once only
    p = rv.pool(plan, [rejected, kept])
    # the shipped comparison: one row identical (0) and one +0.25; the last round: +0.25 and +0.25
    assert p["volume_b_vs_a"]["difference"] == pytest.approx(0.125)
    assert p["last_round"]["volume_vs_teacher"]["difference"] == pytest.approx(0.25)
    assert p["last_round"]["fp_per_volume"]["mean"] == pytest.approx(1.5)
    text = page({"plan": asdict(plan), "pooled": p, "replicates": [rejected, kept]}, "x.json")
    assert "## The last round trained, kept or not" in text and "| 2027 | 0 | round 1 (teacher) | no | 0.750 → 1.000 |" in text


def test_a_finished_replicate_is_reused_only_when_written_by_the_same_code_and_plan(tmp_path, monkeypatch):
    """An arm added to the plan (or new code) runs the replicate again instead of reusing its old JSON: reusing it
    printed the old arms' page as if the new arm had run (the temporal-consistency grid said "wall time 12 s")."""
    import bundle.demo.replicate_volume as rv

    ran = []

    def fake_run(plan, exp, rdir, ds, ts):
        ran.append((ds, ts, tuple(plan.arms)))
        return _vrep(ds, ts, 0, [[1, 0, 1], [2, 1, 0]], None)

    monkeypatch.setattr(rv, "run_replicate", fake_run)
    monkeypatch.setattr(rv, "prepare", lambda plan, work, ds: {})
    monkeypatch.setattr(rv.provenance, "git_state", lambda: {"commit": "a" * 40, "dirty": False})
    plan = rv.VolumeReplicatePlan(data_seeds=[2027], train_seeds=[0], arms=["self_trained"], n_bootstrap=50)
    rv.run(plan, str(tmp_path))
    rv.run(plan, str(tmp_path))  # same code, same plan: reused
    assert ran == [(2027, 0, ("self_trained",))]
    rv.run(
        rv.VolumeReplicatePlan(data_seeds=[2027], train_seeds=[0], arms=["self_trained", "score_weighted"], n_bootstrap=50), str(tmp_path)
    )
    assert ran[-1] == (2027, 0, ("self_trained", "score_weighted"))
    monkeypatch.setattr(rv.provenance, "git_state", lambda: {"commit": "b" * 40, "dirty": False})
    rv.run(plan, str(tmp_path))  # new code
    assert len(ran) == 3
    old = tmp_path / "data2027" / "train0" / "replicate_volume.json"
    rep = json.loads(old.read_text())
    del rep["code"]
    old.write_text(json.dumps(rep))  # written before replicates were stamped: runs again
    rv.run(plan, str(tmp_path))
    assert len(ran) == 4
