"""Active learning: the uncertainty rule at the operating point, and reviewed studies as complete labels (fast)."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from bundle.activelearning.reviewed import add_reviewed, markup_boxes, reviewed_item
from bundle.activelearning.uncertainty import UncertaintyRule, rank
from bundle.datalist.schema import read_datalist
from bundle.transforms.world import voxel_to_world


def test_boxes_near_the_operating_point_weigh_most():
    """Scores as the volume path writes them (logits), and as probabilities: the same rule."""
    rule = UncertaintyRule(band_logits=2.0)
    t = -0.5
    assert rule.weights([t], t) == [1.0] and rule.weights([t + 1, t - 1], t) == [0.5, 0.5]
    assert rule.weights([t - 2, t + 3, 8.0], t) == [0.0, 0.0, 0.0]  # decided either way: no weight
    assert rule.lowest_score(t) == t - 2
    s = rule.study([t, t + 0.5, 4.0, -6.0], t)
    assert s["n_uncertain"] == 2 and s["n_shown"] == 3 and s["uncertainty"] == 1.75
    p = 0.3  # a probability threshold
    lo = rule.lowest_score(p, "probability")
    assert rule.weights([lo], p, "probability")[0] == pytest.approx(0.0, abs=1e-9) and 0.05 < lo < 0.06
    w = rule.weights([0.31, 0.29], p, "probability")  # closeness in logits: nearly symmetric around 0.3
    assert w[0] < 1 and w[1] < 1 and abs(w[0] - w[1]) < 0.01
    with pytest.raises(ValueError, match="score kind"):
        rule.weights([0.1], p, "percent")


def test_rank_orders_by_mass_then_count_then_id():
    studies = {"calm": [0.99, 0.01], "one_near": [0.3], "two_halfway": [0.5, 0.5], "b_tie": [0.3], "empty": []}
    order = [k for k, _ in rank(studies, 0.3, kind="probability")]
    assert order[0] == "two_halfway"  # two boxes halfway into the band outweigh one at the threshold
    figures = dict(rank(studies, 0.3, kind="probability"))
    assert figures["calm"]["uncertainty"] == 0 and figures["empty"]["n_shown"] == 0
    assert order.index("b_tie") < order.index("one_near")  # equal mass and count: by id
    assert order[-2:] == ["calm", "empty"]
    assert [k for k, _ in rank(studies, 0.3, kind="probability")] == order  # stable


def _volume(tmp_path, affine):
    img = nib.Nifti1Image(np.zeros((20, 24, 10), np.float32), affine)
    nib.save(img, tmp_path / "study-1.nii.gz")
    return tmp_path / "study-1.nii.gz"


def test_a_review_becomes_a_complete_item_in_array_coordinates(tmp_path):
    """Slicer's LPS ROIs go back to the stored array's xyzxyz exactly (an oblique-free but flipped, scaled affine)."""
    affine = np.diag([-2.0, 1.5, 3.0, 1.0])
    affine[:3, 3] = [10, -20, 5]
    image = _volume(tmp_path, affine)
    vox = np.array([[2, 3, 1, 8, 9, 4], [10, 12, 5, 14, 20, 9]], float)
    world = voxel_to_world(vox, affine)
    markups = {"markups": [{"type": "ROI", "coordinateSystem": "LPS", "center": b[:3].tolist(), "size": b[3:].tolist()} for b in world]}
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "study-1.json").write_text(json.dumps(markups))
    np.testing.assert_allclose(markup_boxes(markups), world)
    item = reviewed_item(image, tmp_path / "labels" / "study-1.json")
    np.testing.assert_allclose(item["box"], vox, atol=1e-3)
    assert item["label"] == [0, 0] and item["review"] == "complete" and item["n_slices"] == 10
    # complete: nothing that would make training ignore the rest of the series
    assert "z_half_extent_slices" not in item and "ignore_box" not in item


def test_reviewed_items_replace_their_mined_items_in_training_only(tmp_path):
    mined = {
        "training": [
            {"image": "a.nii.gz", "box": [[1, 1, 1, 3, 3, 2]], "label": [0], "patient": "p1", "z_half_extent_slices": [1.0]},
            {"image": "b.nii.gz", "box": [[1, 1, 1, 3, 3, 2]], "label": [0], "patient": "p2", "z_half_extent_slices": [1.0]},
        ],
        "validation": [{"image": "c.nii.gz", "box": [], "label": [], "patient": "p3"}],
        "test": [],
    }
    (tmp_path / "dl.json").write_text(json.dumps(mined))
    reviewed = [
        {"image": "a.nii.gz", "box": [[1, 1, 1, 3, 3, 2], [5, 5, 2, 8, 8, 6]], "label": [0, 0], "patient": "p1", "review": "complete"},
        {"image": "c.nii.gz", "box": [], "label": [], "patient": "p3", "review": "complete"},  # a validation patient
    ]
    counts = add_reviewed(tmp_path / "dl.json", reviewed, tmp_path / "out.json")
    assert counts == {"mined": 2, "replaced": 1, "reviewed": 1, "held_out": 1}
    out = read_datalist(tmp_path / "out.json", box_mode="xyzxyz")
    a = [d for d in out["training"] if d["image"] == "a.nii.gz"]
    assert len(a) == 1 and len(a[0]["box"]) == 2 and "z_half_extent_slices" not in a[0]
    assert [d["image"] for d in out["validation"]] == ["c.nii.gz"] and len(out["training"]) == 2


def test_config_adds_a_datastores_reviews(tmp_path, repo_root):
    """configs/active_learning.yaml run as a bundle stage on a MONAI Label studies folder."""
    studies = tmp_path / "studies"
    studies.mkdir()
    image = _volume(studies, np.eye(4))
    (studies / "labels" / "final").mkdir(parents=True)
    roi = voxel_to_world([[2, 3, 1, 8, 9, 4]], np.eye(4))[0]
    (studies / "labels" / "final" / "study-1.json").write_text(
        json.dumps({"markups": [{"type": "ROI", "coordinateSystem": "LPS", "center": roi[:3].tolist(), "size": roi[3:].tolist()}]})
    )
    (tmp_path / "dl.json").write_text(json.dumps({"training": [], "validation": [], "test": []}))
    run = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(repo_root / "configs" / "active_learning.yaml"),
         "--studies_dir", str(studies), "--datalist", str(tmp_path / "dl.json"), "--output_datalist", str(tmp_path / "out.json")],
        cwd=repo_root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert [d["image"] for d in out["training"]] == [str(image.resolve())]
    np.testing.assert_allclose(out["training"][0]["box"], [[2, 3, 1, 8, 9, 4]], atol=1e-3)
