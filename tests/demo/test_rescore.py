"""Rescoring an ablation under another operating-point rule: the same saved predictions, a threshold chosen again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bundle.demo.ablation_page import write_page
from bundle.demo.rescore import rescore_ablation, rescore_arm, tag
from bundle.demo.volumes import write_volume_datalist
from bundle.metrics import volume_report

LOOSE = {"max_fp_per_volume": 3.0, "max_fp_per_normal_volume": 3.0}
STRICT = {"max_fp_per_volume": 0.5, "max_fp_per_normal_volume": 0.0}


def _study(demo: Path) -> Path:
    """Ten 1 mm volumes (4 validation, 6 test, every third normal): each lesion has a hit box; false boxes score 2-8."""
    patients, split, preds = [], {}, {"validation": [], "test": []}
    for k in range(10):
        pid, section = f"demo-{k:03d}", ("validation" if k < 4 else "test")
        split[pid] = section
        lesions = (
            []
            if k % 3 == 2
            else [{"box_vox": [10.0 + k, 10, 10, 26 + k, 26, 26], "center_vox": [18.0 + k, 18, 18], "diameter_mm": 16.0, "kind": "solid"}]
        )
        boxes = [les["box_vox"] for les in lesions] + [[60.0, 60, 60, 72, 72, 72], [80.0, 5, 5, 92, 17, 17]]
        scores = [9.0 - 0.1 * k] * len(lesions) + [2.0 + 0.5 * k, 8.0 - 0.4 * k]
        patients.append({"patient_id": pid, "image": f"{pid}/t1c.nii.gz", "spacing": [1.0, 1.0, 1.0], "lesions": lesions})
        preds[section].append({"image": str(demo / pid / "t1c.nii.gz"), "box": boxes, "score": scores, "label": [0] * len(boxes)})
    demo.mkdir(parents=True)
    (demo / "truth.json").write_text(json.dumps({"patients": patients, "split": split}))
    for section, p in preds.items():
        (demo / f"predictions_volume_{section}.json").write_text(json.dumps({"predictions": p}))
    return write_volume_datalist(demo)


def _evaluation(tmp_path: Path, ev: Path | None = None) -> Path:
    """An arm's evaluation folder as configs/evaluate_volume.yaml leaves it, with one protocol variant (the same volumes)."""
    dl, ev = _study(tmp_path / "demo"), ev or tmp_path / "eval" / "context"
    ev.mkdir(parents=True)
    for s in ("validation", "test"):
        shutil.copy(tmp_path / "demo" / f"predictions_volume_{s}.json", ev / f"predictions_volume_{s}.json")
    cfg = {"volume_datalist_file": str(dl), "scoring": {"n_bootstrap": 20, "seed": 3} | LOOSE}
    args = (str(dl), str(ev / "predictions_volume_validation.json"), str(ev / "predictions_volume_test.json"), str(ev))
    volume_report.evaluate(*args, n_bootstrap=20, seed=3, name="context", config=cfg, **LOOSE)
    variant = ev / "protocols" / "same_grid"
    variant.mkdir(parents=True)
    shutil.copy(dl, variant / "datalist_volume.json")
    preds = json.loads((ev / "predictions_volume_test.json").read_text())
    for p in preds["predictions"]:  # the variant's images sit beside its own datalist
        p["image"] = str(variant / Path(p["image"]).relative_to(tmp_path / "demo"))
    (variant / "predictions_volume_test.json").write_text(json.dumps(preds))
    (ev / "metrics_protocols.json").write_text(json.dumps({"variants": {"same_grid": {"variant": {"spacing": [1.0, 1.0, 1.0]}}}}))
    return ev


def test_the_same_rule_gives_the_same_figures_and_a_stricter_one_a_higher_threshold(tmp_path):
    ev = _evaluation(tmp_path)
    first = json.loads((ev / "metrics_volume.json").read_text())
    same = rescore_arm(ev, tmp_path / "same", LOOSE)
    assert same["operating_point"]["score_threshold"] == first["operating_point"]["score_threshold"]
    assert same["test"]["at_operating_point"] == first["test"]["at_operating_point"]
    assert same["test"]["ci95"] == first["test"]["ci95"]  # its own bootstrap count and seed, read back
    strict = rescore_arm(ev, tmp_path / "strict", STRICT)
    assert strict["operating_point"]["score_threshold"] > first["operating_point"]["score_threshold"]
    assert strict["operating_point"]["validation"]["fp_per_volume"] <= 0.5
    assert strict["operating_point"]["validation"]["fp_per_normal_volume"] == 0.0
    assert strict["test"]["at_operating_point"]["false_positives"] < first["test"]["at_operating_point"]["false_positives"]
    assert strict["provenance"]["config"]["scoring"]["max_fp_per_volume"] == 0.5 and strict["provenance"]["config"]["rescored_from"] == str(
        ev
    )
    # the protocol variant (the same volumes here) is scored again at the new threshold, and agrees with the test set
    row = strict["protocols"]["variants"]["same_grid"]
    assert strict["protocols"]["score_threshold"] == strict["operating_point"]["score_threshold"]
    assert row["at_operating_point"] == strict["test"]["at_operating_point"]
    assert (tmp_path / "strict" / "summary_protocols.md").is_file()


def test_an_ablation_rescored_and_its_page(tmp_path):
    work = tmp_path / "work"
    rdir = work / "data1" / "train0" / "eval"
    _evaluation(tmp_path, rdir / "context")
    plan = {"data_seeds": [1], "train_seeds": [0], "size": "tiny", "epochs": 3, "arms": ["context"]}
    rep = {"data_seed": 1, "train_seed": 0, "arms": {"context": {}}, "seconds": 5, "review": {"k": 1}}
    (work / "ablation.json").write_text(json.dumps({"plan": plan, "defaults": plan, "replicates": [rep]}))
    s = rescore_ablation(work, STRICT, "python scripts/rescore_ablation.py --work_dir w")
    assert (rdir / f"context_{tag(STRICT)}" / "metrics_volume.json").is_file() and tag(STRICT) == "fp0.5_normal0"
    assert "review" not in s["replicates"][0] and s["rescored"]["limits"] == STRICT
    counts = s["pooled"]["context"]["counts"]
    at = s["replicates"][0]["arms"]["context"]["test"]["at_operating_point"]
    assert counts["false_positives"] == at["false_positives"] and counts["lesions_ge10"] == at["lesions_ge10"] == 4
    text = write_page(s, tmp_path / "page.md", work / "ablation.json").read_text()
    assert "Rescored by `python scripts/rescore_ablation.py --work_dir w`" in text and "nothing was retrained" in text
    assert "<= 0.5 false boxes per volume and <= 0 per normal volume" in text


def test_the_script_rescores_and_writes_the_page(tmp_path, repo_root, capsys):
    import importlib.util

    rdir = tmp_path / "work" / "data1" / "train0" / "eval"
    _evaluation(tmp_path, rdir / "context")
    plan = {"data_seeds": [1], "train_seeds": [0], "size": "tiny", "epochs": 3, "arms": ["context"]}
    rep = {"data_seed": 1, "train_seed": 0, "arms": {"context": {}}, "seconds": 5}
    (tmp_path / "work" / "ablation.json").write_text(json.dumps({"plan": plan, "defaults": plan, "replicates": [rep]}))
    spec = importlib.util.spec_from_file_location("rescore_script", repo_root / "scripts" / "rescore_ablation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    page = tmp_path / "page.md"
    mod.main(
        ["--work_dir", str(tmp_path / "work"), "--max_fp_per_volume", "0.5", "--max_fp_per_normal_volume", "0", "--results", str(page)]
    )
    out = capsys.readouterr().out
    assert "context" in out and "sensitivity >= 10 mm 1.000" in out and f"page: {page}" in out
    assert f"--max_fp_per_volume 0.5 --max_fp_per_normal_volume 0 --results {page}" in page.read_text()
    import pytest

    with pytest.raises(SystemExit, match=r"rescore_ablation: .*ablation.json: no ablation summary here"):
        mod.main(["--work_dir", str(tmp_path / "nowhere"), "--max_fp_per_volume", "0.5", "--max_fp_per_normal_volume", "0"])
    (rdir / "context" / "metrics_volume.json").unlink()
    with pytest.raises(SystemExit, match="arm 'context' has no saved evaluation to rescore"):
        mod.main(["--work_dir", str(tmp_path / "work"), "--max_fp_per_volume", "0.5", "--max_fp_per_normal_volume", "0"])


def test_a_rule_estimating_normal_false_boxes_from_every_volume_gets_its_own_folder():
    from bundle.demo.rescore import tag

    limits = {"max_fp_per_volume": 0.5, "max_fp_per_normal_volume": 0.25}
    assert tag(limits) == "fp0.5_normal0.25"
    assert tag(limits | {"normal_fp_from": "all_volumes"}) == "fp0.5_normal0.25_from_all"
    assert tag(limits | {"normal_fp_from": "normal_volumes"}) == "fp0.5_normal0.25"
