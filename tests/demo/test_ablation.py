"""The whole-volume ablation's pooling and page: counts summed over replicates, the targets checked on the pooled figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundle.demo.ablation_page import pool, write_page


def _metrics(found: int, lesions: int, fp: int, volumes: int, fp_normal: float, normal: int, cpm: float, small: tuple = (9, 10)) -> dict:
    return {
        "operating_point": {"score_threshold": 0.9, "validation": {"found_ge10": found - 5, "lesions_ge10": lesions}},
        "test": {
            "at_operating_point": {
                "found_ge10": found,
                "lesions_ge10": lesions,
                "false_positives": fp,
                "volumes": volumes,
                "normal_volumes": normal,
                "fp_per_volume": fp / volumes,
                "fp_per_normal_volume": fp_normal,
                "by_size": {"10-20 mm": {"found": small[0], "lesions": small[1]}},
            },
            "froc": {"sensitivity_at_fp": {"1": 0.8}, "cpm": cpm},
            "froc_ge_10mm": {"sensitivity_at_fp": {"1": 0.85}},
        },
    }


def test_pooled_figures_sum_counts_over_replicates_and_check_the_goal(tmp_path: Path):
    reps = [
        {
            "data_seed": 1,
            "train_seed": 0,
            "seconds": 60,
            "arms": {"a": _metrics(48, 50, 20, 80, 0.25, 20, 0.7), "b": _metrics(30, 50, 400, 80, 5.0, 20, 0.4)},
        },
        {
            "data_seed": 2,
            "train_seed": 0,
            "seconds": 60,
            "arms": {"a": _metrics(49, 50, 20, 80, 0.2, 20, 0.8, (10, 10)), "b": _metrics(35, 50, 300, 80, 4.0, 20, 0.5)},
        },
    ]
    p = pool(reps)
    assert p["a"]["pooled"]["sensitivity_ge10"] == pytest.approx(97 / 100)
    assert p["a"]["pooled"]["sensitivity_10_20"] == pytest.approx(19 / 20)
    assert p["a"]["pooled"]["fp_per_volume"] == pytest.approx(40 / 160)
    assert p["a"]["pooled"]["fp_per_normal_volume"] == pytest.approx((5 + 4) / 40)
    assert p["a"]["pooled"]["meets_goal"] and not p["b"]["pooled"]["meets_goal"]
    assert p["a"]["replicates"]["cpm"]["mean"] == pytest.approx(0.75) and p["a"]["replicates"]["cpm"]["n"] == 2
    summary = {"plan": {"data_seeds": [1, 2], "train_seeds": [0], "size": "tiny", "epochs": 1}, "replicates": reps, "pooled": p}
    text = write_page(summary, tmp_path / "results.md", tmp_path / "ablation.json").read_text()
    assert text.index("## Whole volumes (primary)") < text.index("## Key slices")
    assert "| a | 0.970 (97/100) | 0.950 (19/20) | 0.25 | 0.23 | yes |" in text
    assert "| b | 0.650 (65/100) | 0.900 (18/20) | 4.38 | 4.50 | no |" in text
    assert p["a"]["pooled"]["validation_sensitivity_ge10"] == pytest.approx(87 / 100)
    # the rule the points were chosen by comes from the evaluations themselves; the shipped one only when none recorded it
    from bundle.selftrain.scoring import shipped_limits

    lim = shipped_limits()
    assert f"<= {lim['max_fp_per_volume']:g} false boxes per volume and <= {lim['max_fp_per_normal_volume']:g} per normal volume" in text
    for r in reps:
        for m in r["arms"].values():
            m["operating_point"]["targets"] = {"max_fp_per_volume": 0.7, "max_fp_per_normal_volume": 0.35}
    text = write_page(summary, tmp_path / "results.md", tmp_path / "ablation.json").read_text()
    assert "<= 0.7 false boxes per volume and <= 0.35 per normal volume" in text
    reps[1]["arms"]["b"]["operating_point"]["targets"] = {"max_fp_per_volume": 1.0, "max_fp_per_normal_volume": 0.5}
    with pytest.raises(ValueError, match="different rules"):
        write_page(summary, tmp_path / "results.md", tmp_path / "ablation.json")


def test_teacher_arms_come_from_self_training_unless_trained_on_their_own(tmp_path: Path, monkeypatch):
    """A teacher arm is round 0 of its self-training (one training saved) unless its own training exists;
    a self-trained arm is the round the loop kept, not the last one."""
    from bundle.demo import ablation

    trained, selftrained = [], []

    def fake_train(arm, exp, rdir, over):
        trained.append(arm)
        return rdir / arm / "models"

    def fake_self_train(plan, exp, rdir, over, teacher):
        selftrained.append(teacher)
        d = rdir / f"selftrain_{teacher}"
        return {"teacher": d / "round0", "kept": d / "round1", "kept_round": 1}

    monkeypatch.setattr(ablation, "train_arm", fake_train)
    monkeypatch.setattr(ablation, "self_train_arm", fake_self_train)
    (tmp_path / "ignore").mkdir()
    (tmp_path / "ignore" / "trained").write_text("")  # the 2D teacher was trained as its own arm before
    plan = ablation.AblationPlan(arms=["mined_only", "ignore", "context", "self_trained", "self_trained_2d"])
    models, kept = ablation.train_all(plan, {}, tmp_path, {})
    assert trained == ["mined_only", "ignore"] and selftrained == ["context", "ignore"]
    assert models["context"] == tmp_path / "selftrain_context" / "round0"
    assert models["ignore"] == tmp_path / "ignore" / "models"
    assert models["self_trained_2d"] == tmp_path / "selftrain_ignore" / "round1" and kept == {"self_trained": 1, "self_trained_2d": 1}
    assert ablation.arm_overrides("self_trained_2d") == ablation.ARMS["ignore"][2]


def test_the_choice_reads_validation_only_and_prefers_fewer_parts_within_one_standard_error():
    from bundle.demo.ablation_page import choose

    def arm(val_found: int, val_lesions: int, test_sens: float) -> dict:
        return {
            "pooled": {"validation_sensitivity_ge10": val_found / val_lesions, "sensitivity_ge10": test_sens},
            "counts": {"val_lesions_ge10": val_lesions},
        }

    # context is best on validation by 2 of 100 lesions (within one SE ~0.05): ignore has fewer parts and wins;
    # whole_series is far below; the test figure (1.0 for whole_series) plays no part
    pooled = {"whole_series": arm(30, 100, 1.0), "ignore": arm(56, 100, 0.1), "context": arm(58, 100, 0.2)}
    pick = choose(pooled)
    assert pick["best"] == "context" and pick["chosen"] == "ignore" and sorted(pick["ties"]) == ["context", "ignore"]
    # a clear margin: the better arm is chosen even with more parts
    pooled["context"] = arm(80, 100, 0.2)
    assert choose(pooled)["chosen"] == "context"
    # linking variants and unknown arms are not training combinations
    assert choose({"self_trained_min_slices2": arm(90, 100, 0.9)}) == {}
    # the oracle trains on the truth: shown as the ceiling, never a combination to ship
    assert choose(pooled | {"oracle": arm(99, 100, 1.0)})["chosen"] == "context"
    # a budget compares only the arms trained with it, by their parts
    pooled |= {"ignore_36ep": arm(80, 100, 0.5), "context_36ep": arm(95, 100, 0.6)}
    assert choose(pooled)["chosen"] == "context" and choose(pooled, "_36ep")["chosen"] == "context_36ep"


@pytest.mark.parametrize(("given", "arrives"), [(["--results", "None"], "None"), ([], "'docs/results.md'")])
def test_results_none_on_the_command_line_reaches_the_config_as_none(repo_root: Path, tmp_path: Path, given, arrives):
    """scripts/ablation.py's documented quick look (``--results None``) must not rewrite docs/results.md:
    ``monai.bundle run`` keeps the config's value for an override that parses to None."""
    from bundle.steps.runner import bundle_run, config_overrides

    probe = tmp_path / "probe.yaml"  # merged over the real config: its run prints what `results` became
    probe.write_text("run:\n  - \"$open(@probe_out, 'w').write(repr(@results))\"\n")
    out = tmp_path / "results_value.txt"
    overrides = config_overrides(given, "usage") | {"probe_out": str(out)}
    bundle_run(
        [str(repo_root / "configs" / "experiments" / "ablation.yaml"), str(probe)], repo_root, tmp_path / "log", quiet=True, **overrides
    )
    assert out.read_text() == arrives


def test_a_failed_step_ends_the_script_with_one_line(repo_root: Path, tmp_path: Path):
    """The step's traceback goes to its log; the script says which command failed and where to look."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "scripts/ablation.py", "--work_dir", str(tmp_path / "abl"), "--plan#no_such_field", "1"],
        cwd=repo_root, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 1
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    assert out.stderr.startswith("error: step failed (exit 1)") and out.stderr.count("\n") == 1
    assert out.stderr.rstrip().endswith(str(tmp_path / "abl" / "ablation_command.log"))
    assert "no_such_field" in (tmp_path / "abl" / "ablation_command.log").read_text()


def test_page_command_names_its_work_folder_and_page_when_not_the_configs():
    """A page written elsewhere must print a command that writes it there again, not over docs/results.md."""
    from bundle.demo.ablation_page import command

    plan, default = {"review_k": 3, "epochs": 15}, {"review_k": 0, "epochs": 15}
    assert command(plan, default, {"work_dir": "runs/ablation", "results": "docs/results.md"}) == (
        "python scripts/ablation.py --plan#review_k '3'"
    )
    assert command(plan, default, {"work_dir": "runs/review", "results": "docs/results_review.md"}) == (
        "python scripts/ablation.py --plan#review_k '3' --work_dir runs/review --results docs/results_review.md"
    )


def test_the_self_trained_arm_is_the_demos_recipe(tmp_path: Path, monkeypatch):
    """Mean teacher, kept by validation sensitivity on whole volumes (as bundle/demo/volume_steps.py ships (b)); the arm's
    models are the candidates the loop kept: round 0's for the teacher arm, the best round's for the self-trained one."""
    from bundle.demo import ablation

    seen = {}

    def fake(work, datalist, rules, schedule, truth=None, train_overrides=None):
        seen["schedule"] = schedule
        r0 = {"round": 0, "dir": f"{work}/round0", "model": f"{work}/round0/teacher/models/model.pt"}
        r1 = {"round": 1, "dir": f"{work}/round1", "model": f"{work}/round1/models/model.pt"}
        return {"rounds": [r0, r1], "best_round": 1, "best_model": r1["model"]}

    monkeypatch.setattr(ablation, "run_self_training", fake)
    exp = {"series_mined": "s.json", "volume_datalist": "v.json"}
    out = ablation.self_train_arm(ablation.AblationPlan(), exp, tmp_path, {}, "context")
    s = seen["schedule"]
    assert s.mean_teacher and s.select == "volume" and s.volume_datalist == "v.json" and s.series
    assert out["teacher"] == tmp_path / "selftrain" / "round0" / "teacher" / "models"
    assert out["kept"] == tmp_path / "selftrain" / "round1" / "models" and out["kept_round"] == 1


def test_linking_variants_are_scored_on_the_last_arm_only_with_their_setting(monkeypatch, tmp_path):
    """min_slices 1 is the configs' own and is not scored twice; each extent listed is, as an inference override."""
    from bundle.demo import ablation

    calls: list[tuple[str, dict]] = []

    def fake_evaluate(ckpt, vdl, out, log, seed, over, n_bootstrap):
        calls.append((out.name, {k: v for k, v in over.items() if k.startswith("link_")}))
        return {"name": out.name}

    monkeypatch.setattr(ablation, "train_all", lambda plan, exp, rdir, over: ({a: tmp_path / a for a in plan.arms}, {}))
    monkeypatch.setattr(ablation, "evaluate_volumes", fake_evaluate)
    plan = ablation.AblationPlan(arms=["ignore", "context"], link_min_slices=[1, 2], link_extents=["union", "median"])
    assert ablation.link_variants(plan) == [
        ("min_slices2", {"link_min_slices": 2}),
        ("extent_union", {"link_extent": "union"}),
        ("extent_median", {"link_extent": "median"}),
    ]
    out = ablation.run_replicate(plan, {"volume_datalist": str(tmp_path / "v.json")}, tmp_path, 2027, 0)
    assert list(out["arms"]) == ["ignore", "context", "context_min_slices2", "context_extent_union", "context_extent_median"]
    assert calls[3] == ("context_extent_union", {"link_extent": "union"}) and calls[0] == ("ignore", {})
    assert ablation.link_variants(ablation.AblationPlan(link_min_slices=[1], link_extents=[])) == []
