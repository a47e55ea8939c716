"""The simulated review (issue 28): which studies each arm reviews, what a review gives them, and the page's rows (fast)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from bundle.activelearning import simulated_review as sr
from bundle.activelearning.uncertainty import UncertaintyRule, rank
from bundle.datalist.schema import read_datalist
from bundle.demo.ablation import AblationPlan
from bundle.demo.review_page import review_section, review_verdict


@pytest.fixture
def mined(tmp_path):
    """Four mined series (one measured box each, with its reach), their complete truth, one test volume."""
    affine = np.diag([-1.5, 1.5, 4.0, 1.0])
    affine[:3, 3] = [30.0, -12.0, -20.0]
    training, truth = [], {}
    for i in range(4):
        image = tmp_path / f"series{i}.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((24, 20, 8), np.float32), affine), image)
        full = [[2, 3, 2, 8, 9, 3], [2, 3, 3, 8, 10, 4], [12 + i, 4, 5, 18 + i, 11, 6]]
        truth[str(image)] = full
        training.append(
            {
                "image": str(image),
                "box": [full[1]],
                "label": [0],
                "patient": f"P{i}",
                "z_half_extent_slices": [1.5],
                "spacing": [1.5, 1.5, 4.0],
            }
        )
    test = [{"image": str(tmp_path / "series0.nii.gz"), "box": [[1, 1, 1, 4, 4, 3]], "label": [0], "patient": "T0"}]
    path = tmp_path / "series_mined.json"
    path.write_text(json.dumps({"training": training, "validation": test, "test": test}))
    return path, truth


def test_uncertain_arm_takes_the_studies_the_endpoint_ranks_first():
    t = 10.0  # the operating point's logit
    scores = {"calm": [20.0, -5.0], "near": [t + 0.2, t - 0.3], "halfway": [t + 1.0], "edge": [t - 1.9], "none": []}
    picked = sr.uncertain_studies(scores, t, 2)
    assert picked == ["near", "halfway"]
    assert picked == [k for k, _ in rank(scores, t, UncertaintyRule())[:2]]  # the MONAI Label strategy's own order
    assert sr.uncertain_studies(scores, t, 2, UncertaintyRule(band_logits=0.5)) == ["near", "calm"]  # narrower band: only "near" counts


def test_random_arm_is_seeded_and_of_size_k():
    images = [f"s{i}" for i in range(12)]
    a = sr.random_studies(images, 3, seed=0)
    assert a == sr.random_studies(images, 3, seed=0) and len(a) == 3 == len(set(a)) and set(a) <= set(images)
    assert a == [im for im in images if im in a]  # in the datalist's order
    assert any(sr.random_studies(images, 3, seed=s) != a for s in range(1, 6))
    with pytest.raises(ValueError, match="cannot review"):
        sr.random_studies(images, 13, seed=0)


def test_reviewed_studies_get_complete_truth_and_the_rest_keep_mined_labels(mined, tmp_path):
    path, truth = mined
    images = list(truth)
    chosen = [images[1], images[3]]
    out = sr.arm_datalist("uncertain", path, chosen, truth, tmp_path / "work")
    doc = read_datalist(out, box_mode="xyzxyz")
    before = read_datalist(path, box_mode="xyzxyz")
    by_image = {it["image"]: it for it in doc["training"]}
    assert sorted(by_image) == sorted(images)  # each reviewed item replaces its mined item
    for im in chosen:
        it = by_image[im]
        np.testing.assert_allclose(it["box"], truth[im], atol=1e-3)  # every lesion, back in the array's xyzxyz
        assert it["label"] == [0, 0, 0] and it["review"] == "complete"
        assert "z_half_extent_slices" not in it and "ignore_box" not in it  # the rest of the series is background
        assert (tmp_path / "work" / "uncertain" / "labels").is_dir()  # the reader's markups, as Slicer saves them
    for it in before["training"]:
        if it["image"] not in chosen:
            assert by_image[it["image"]] == it  # mined labels untouched
    assert doc["validation"] == before["validation"] and doc["test"] == before["test"]
    with pytest.raises(ValueError, match="not training studies"):
        sr.arm_datalist("random", path, ["elsewhere.nii.gz"], truth, tmp_path / "work")


def test_none_arm_trains_on_the_mined_labels_unchanged(mined, tmp_path):
    path, truth = mined
    text = path.read_text()
    assert sr.arm_datalist("none", path, [], truth, tmp_path / "work") == path
    assert path.read_text() == text and not (tmp_path / "work").exists()


def test_plan_checks_and_review_is_off_by_default():
    assert AblationPlan().review_k == 0
    with pytest.raises(ValueError):
        sr.ReviewPlan(k=0)
    with pytest.raises(ValueError):
        sr.ReviewPlan(arms=["none", "oracle"])


def _ci(v, lo, hi):
    return {"value": v, "ci_low": lo, "ci_high": hi}


def _arm(sens, found):
    return {
        "sensitivity_ge10": _ci(sens, sens - 0.1, sens + 0.1),
        "found_ge10": found,
        "lesions_ge10": 16,
        "fp_per_volume": _ci(0.4, 0.2, 0.6),
        "fp_per_normal_volume": _ci(None, None, None),
        "cpm": _ci(0.31, 0.2, 0.4),
        "threshold": 12.0,
        "validation_sensitivity_ge10": 0.25,
        "volumes": 5,
        "patients": 5,
    }


def test_the_page_rows_render_from_a_results_dict():
    diff = {
        "sensitivity_ge10": _ci(0.0625, -0.05, 0.2) | {"p_value": 0.41},
        "fp_per_volume": _ci(0.0, -0.2, 0.2),
        "cpm": _ci(0.02, -0.1, 0.1),
    }
    review = {
        "k": 3,
        "epochs": 5,
        "random_seed": 0,
        "threshold": 13.94,
        "training_studies": 12,
        "reviewed": {"none": [], "uncertain": ["a", "b", "c"], "random": ["a", "d", "e"]},
        "truth_boxes": {"none": 0, "uncertain": 91, "random": 60},
        "overlap": 1,
        "start": _arm(0.125, 2),
        "arms": {"none": _arm(0.1875, 3), "uncertain": _arm(0.3125, 5), "random": _arm(0.25, 4)},
        "paired": {"uncertain - random": diff},
    }
    text = "\n".join(review_section([{"data_seed": 2027, "train_seed": 0, "arms": {}, "review": review}]))
    assert (
        "| 2027 | 0 | uncertain-3 | 3 of 12 (91) | 0.312 [0.212, 0.412] (5/16) | 0.40 [0.20, 0.60] | 0.310 [0.200, 0.400] | 0.250 |" in text
    )
    assert "| 2027 | 0 | random-3 | 3 of 12 (60) |" in text and "| 2027 | 0 | none (+5 epochs) | 0 of 12 (0) |" in text
    assert "| 2027 | 0 | uncertain - random | 0.062 [-0.050, 0.200], P 0.410 | 0.00 [-0.20, 0.20] | 0.020 [-0.100, 0.100] |" in text
    assert "no difference shown: the 95% CI includes 0" in text
    assert review_section([{"data_seed": 1, "train_seed": 0, "arms": {}}]) == []  # no review, no section
    assert review_verdict(_ci(0.1, 0.01, 0.2)).startswith("uncertainty sampling beats random")
    assert review_verdict(_ci(-0.1, -0.2, -0.01)).startswith("random review beats")
    lines = sr.summary_lines(review | {"paired": {"uncertain - random": diff}})
    assert lines[0].startswith("simulated review: K 3 of 12") and any("uncertain - random" in x for x in lines)


def test_scoring_passes_the_studies_as_a_file_not_as_config_code(tmp_path, monkeypatch):
    """score_studies hands inference_volume.yaml the studies' paths as a JSON file (input_list), no $-expression."""
    calls = []
    monkeypatch.setattr(sr, "bundle_run", lambda config, cwd, log, **over: calls.append((config, over)))
    images = [str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz")]
    out = sr.score_studies(tmp_path / "models", images, -2.5, tmp_path / "scores" / "pred.json", tmp_path / "log", {})
    ((config, over),) = calls
    assert config == "configs/inference_volume.yaml" and over["output_path"] == out
    assert json.loads(over["input_list"].read_text()) == images
    assert not any(str(v).startswith("$") for v in over.values()), over
