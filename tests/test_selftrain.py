"""Self-training: pseudo-box rules, provenance, no leak into validation/test, resume."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from bundle.datalist.sections import absolute_datalist
from bundle.selftrain.loop import Schedule, SelfTraining, pseudo_quality
from bundle.selftrain.pseudo import PseudoRules, expand_datalist, select_pseudo

SP = (1.0, 1.0)
ROOT = Path(__file__).resolve().parents[1]
# train.yaml overrides that make a round take seconds on the tiny demo
TINY_TRAINING = {
    "epochs": 1,
    "val_interval": 1,
    "batch_size": 2,
    "num_samples": 1,
    "num_workers": 0,
    "patch_size": "[64,64]",
    "val_patch_size": "[64,64]",
}


def test_select_pseudo_applies_every_rule_and_counts_rejections():
    existing = [[10, 10, 30, 30]]
    preds = [
        [11, 11, 30, 30],  # overlaps the mined box
        [50, 50, 70, 70],  # good, 20 mm
        [80, 80, 84, 84],  # 4 mm: too small
        [0, 0, 90, 90],  # 90 mm: too large
        [100, 100, 115, 112],  # good but low score
        [120, 120, 140, 140],  # good
        [150, 150, 170, 170],  # good, but K = 2 reached
    ]
    scores = [0.99, 0.9, 0.95, 0.95, 0.2, 0.8, 0.7]
    out, why = select_pseudo(preds, scores, existing, SP, PseudoRules(score_threshold=0.5, iou_max=0.1, max_per_image=2))
    assert [b for b, _ in out] == [[50, 50, 70, 70], [120, 120, 140, 140]]
    assert [s for _, s in out] == [0.9, 0.8]
    assert why == {"overlaps an existing box": 1, "outside the size rule": 2, "below score threshold": 1, "over the per-image limit": 1}


def test_pseudo_boxes_do_not_stack_on_each_other():
    out, why = select_pseudo(
        [[0, 0, 20, 20], [1, 1, 21, 21]], [0.9, 0.8], [], SP, PseudoRules(score_threshold=0.5, iou_max=0.1, max_per_image=5)
    )
    assert len(out) == 1 and why["overlaps an existing box"] == 1


def _datalist(tmp_path):
    dl = {
        "training": [{"image": str(tmp_path / "a.nii.gz"), "box": [[10, 10, 30, 30]], "label": [0], "patient": "p1"}],
        "validation": [{"image": str(tmp_path / "b.nii.gz"), "box": [[5, 5, 25, 25]], "label": [0], "patient": "p2"}],
        "test": [{"image": str(tmp_path / "c.nii.gz"), "box": [], "label": [], "patient": "p3"}],
    }
    preds = {str(tmp_path / n): {"box": [[50, 50, 70, 70]], "score": [0.9]} for n in ("a.nii.gz", "b.nii.gz", "c.nii.gz")}
    return dl, preds


def test_pseudo_boxes_never_reach_validation_or_test(tmp_path):
    dl, preds = _datalist(tmp_path)
    before = copy.deepcopy(dl)
    spacings = {it["image"]: SP for sec in dl.values() for it in sec}
    new, stats = expand_datalist(dl, preds, spacings, 1, PseudoRules(score_threshold=0.5))
    assert new["validation"] == before["validation"] and new["test"] == before["test"]
    assert dl == before  # the input is not modified
    item = new["training"][0]
    assert item["box"] == [[10, 10, 30, 30], [50.0, 50.0, 70.0, 70.0]]
    assert item["box_source"] == ["mined", "pseudo"] and item["box_round"] == [0, 1] and item["box_score"] == [None, 0.9]
    assert stats["boxes_added"] == 1 and stats["images_with_added"] == 1


def test_pseudo_quality_counts_recovered_unmeasured_lesions(tmp_path):
    dl, preds = _datalist(tmp_path)
    new, _ = expand_datalist(dl, preds, {it["image"]: SP for it in dl["training"]}, 1, PseudoRules(score_threshold=0.5))
    truth = {str(tmp_path / "a.nii.gz"): [[10, 10, 30, 30], [52, 50, 70, 71], [90, 90, 110, 110]]}
    q = pseudo_quality(new, truth, 1)
    assert q["unmeasured_lesions"] == 2 and q["recovered"] == 1 and q["recall"] == 0.5
    assert q["pseudo_boxes"] == 1 and q["precision"] == 1.0


@pytest.mark.slow
def test_loop_runs_rounds_resumes_and_keeps_eval_sections_clean(tiny_demo, tmp_path):
    # "mined" = the largest box of each training image only; validation/test keep full truth
    dl = absolute_datalist(tiny_demo / "datalist.json")
    for it in dl["training"]:
        if it["box"]:
            k = max(range(len(it["box"])), key=lambda i: (it["box"][i][2] - it["box"][i][0]) * (it["box"][i][3] - it["box"][i][1]))
            it["box"], it["label"] = [it["box"][k]], [0]
    mined = tmp_path / "mined.json"
    mined.write_text(json.dumps(dl))
    tiny = TINY_TRAINING
    rules = PseudoRules(score_threshold=0.0, iou_max=0.1, min_long_mm=0.0, max_long_mm=1000.0, max_per_image=2)
    work = tmp_path / "work"
    st = SelfTraining(str(work), str(mined), rules, Schedule(rounds=0), train_overrides=tiny)
    s0 = st.run()
    assert [r["round"] for r in s0["rounds"]] == [0]
    m0 = (work / "round0" / "models" / "model.pt").stat().st_mtime_ns
    # "interrupted" after round 0: asking for one round more resumes at round 1, round 0 is not retrained
    s1 = SelfTraining(str(work), str(mined), rules, Schedule(rounds=1), train_overrides=tiny).run()
    assert (work / "round0" / "models" / "model.pt").stat().st_mtime_ns == m0
    assert [r["round"] for r in s1["rounds"]] == [0, 1]
    r1 = json.loads((work / "round1" / "datalist.json").read_text())
    assert r1["validation"] == dl["validation"] and r1["test"] == dl["test"]
    assert s1["rounds"][1]["pseudo"]["boxes_added"] > 0
    assert all(src in ("mined", "pseudo") for it in r1["training"] for src in it["box_source"])
    assert (work / "report.md").read_text().count("|") > 10
    assert json.loads((work / "state.json").read_text())["stopped"]


def test_auto_threshold_follows_each_teachers_validation_precision(tmp_path):
    """'auto' reads the teacher's validation predictions: a teacher with another score scale gets another threshold."""
    truth = [[0, 0, 10, 10], [20, 20, 30, 30]]
    dl = {"training": [], "validation": [{"image": str(tmp_path / "v.nii.gz"), "box": truth, "label": [0, 0]}]}
    (tmp_path / "dl.json").write_text(json.dumps(dl))
    preds = [[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30], [70, 70, 80, 80]]  # TP, FP, TP, FP
    rules = PseudoRules(score_threshold="auto")
    st = SelfTraining(str(tmp_path / "w"), str(tmp_path / "dl.json"), rules, Schedule(target_precision=0.6))
    found = []
    for name, scores in (("calm", [0.9, 0.8, 0.7, 0.6]), ("confident", [0.9999, 0.9998, 0.9997, 0.99])):
        d = tmp_path / name
        d.mkdir()
        doc = {"predictions": [{"image": dl["validation"][0]["image"], "box": preds, "score": scores}]}
        (d / "predictions_validation.json").write_text(json.dumps(doc))
        r, info = st.rules_for({"dir": str(d), "datalist": str(tmp_path / "dl.json")})
        found.append(r.score_threshold)
        assert info["teacher_validation_at_threshold"]["precision"] >= 0.6
    assert found == [0.7, 0.9997]  # precision 2/3 at the third score, for either scale
    with pytest.raises(ValueError, match="auto"):
        select_pseudo([[0, 0, 20, 20]], [0.9], [], SP, rules)


def test_auto_threshold_decides_which_pseudo_boxes_are_added(tmp_path):
    """The 'auto' threshold from the teacher's validation predictions is the one applied to its training
    predictions: the boxes at or above it are added, the one below it is not (explicit predictions, no training)."""
    truth = [[0, 0, 10, 10], [20, 20, 30, 30]]
    dl = {
        "training": [{"image": str(tmp_path / "t.nii.gz"), "box": [[100, 100, 120, 120]], "label": [0], "patient": "p1"}],
        "validation": [{"image": str(tmp_path / "v.nii.gz"), "box": truth, "label": [0, 0], "patient": "p2"}],
    }
    (tmp_path / "dl.json").write_text(json.dumps(dl))
    val = {"image": dl["validation"][0]["image"], "box": [[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], "score": [0.9, 0.8, 0.7]}
    (tmp_path / "predictions_validation.json").write_text(json.dumps({"predictions": [val]}))
    rules = PseudoRules(score_threshold="auto", iou_max=0.1, max_per_image=5)
    st = SelfTraining(str(tmp_path / "w"), str(tmp_path / "dl.json"), rules, Schedule(target_precision=0.6))
    r, info = st.rules_for({"dir": str(tmp_path), "datalist": str(tmp_path / "dl.json")})
    assert info["score_threshold"] == r.score_threshold == 0.7  # precision 2/3 there
    preds = {dl["training"][0]["image"]: {"box": [[0, 0, 20, 20], [30, 30, 50, 50], [60, 60, 80, 80]], "score": [0.95, 0.7, 0.69]}}
    new, stats = expand_datalist(dl, preds, {dl["training"][0]["image"]: SP}, 1, r)
    item = new["training"][0]
    assert item["box_source"] == ["mined", "pseudo", "pseudo"] and item["box_score"] == [None, 0.95, 0.7]
    assert stats["boxes_added"] == 2


@pytest.mark.slow
def test_self_train_config_runs_with_monai_bundle(tiny_demo, tmp_path):
    """configs/self_train.yaml through `python -m monai.bundle run`, rules overridden on the command line so that a
    round surely adds pseudo-boxes (threshold 0, any size): they are there, with their provenance and scores."""
    from bundle.steps.runner import bundle_run

    tiny = TINY_TRAINING
    work = tmp_path / "work"
    permissive = {"score_threshold": 0.0, "iou_max": 0.1, "min_long_mm": 0.0, "max_long_mm": 1000.0, "max_per_image": 2}
    bundle_run(
        "configs/self_train.yaml",
        ROOT,
        tmp_path / "log.txt",
        datalist=tiny_demo / "datalist.json",
        work_dir=work,
        **{"schedule#rounds": 1},
        **{f"pseudo_rules#{k}": v for k, v in permissive.items()},
        train_overrides=json.dumps(tiny),
    )
    state = json.loads((work / "state.json").read_text())
    assert [r["round"] for r in state["rounds"]] == [0, 1]
    info = state["rounds"][1]["pseudo"]["threshold"]
    assert info == {"score_threshold": 0.0, "rule": "fixed"}
    training = json.loads((work / "round1" / "datalist.json").read_text())["training"]
    added = [(s, r) for it in training for s, src, r in zip(it["box_score"], it["box_source"], it["box_round"]) if src == "pseudo"]
    assert len(added) == state["rounds"][1]["pseudo"]["boxes_added"] > 0
    assert all(s is not None and s >= 0.0 and r == 1 for s, r in added)
    assert (work / "report.md").is_file() and state["best_model"].endswith("model.pt")


def test_pseudo_boxes_keep_a_mined_items_per_box_fields_aligned(tmp_path):
    """A mined item carries long_mm, provenance, ... per box: pseudo-boxes extend them, so the datalist stays valid."""
    from bundle.datalist.schema import read_datalist
    from bundle.selftrain.pseudo import write_datalist

    img = str(tmp_path / "a.nii.gz")
    mined = {"image": img, "box": [[0, 0, 15, 15]], "label": [0], "long_mm": [15.0], "provenance": [{"source": "gsps"}]}
    mined["z_half_extent_slices"] = [2.5]
    dl = {"training": [mined], "validation": [], "test": []}
    preds = {str(Path(img).resolve()): {"box": [[40, 40, 60, 52]], "score": [0.9]}}
    new, stats = expand_datalist(dl, preds, {img: SP}, 1, PseudoRules(score_threshold=0.5))
    it = new["training"][0]
    assert stats["boxes_added"] == 1 and len(it["box"]) == 2
    assert it["long_mm"] == [15.0, 20.0] and it["z_half_extent_slices"] == [2.5, None]
    assert it["provenance"][1] == {"source": "pseudo", "round": 1, "score": 0.9, "rule": "self-training pseudo-box"}
    assert mined["long_mm"] == [15.0] and len(mined["provenance"]) == 1  # the teacher's item is untouched
    read_datalist(write_datalist(new, tmp_path / "round1.json"))  # valid under the schema
