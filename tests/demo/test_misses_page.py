"""The misses page (scripts/miss_analysis.py): an ablation work_dir's replicates and protocol variants, pooled per set."""

from __future__ import annotations

import json

import pytest

from scripts.miss_analysis import main

LESION = [0, 0, 0, 12, 12, 4]


def _replicate(work, seed: int, threshold: float, variant_score: float) -> None:
    """data<seed>/train0: a stored-grid evaluation that finds the lesion and a 6 mm variant whose box scores variant_score."""
    prep = work / f"data{seed}" / "prep"
    prep.mkdir(parents=True)
    dl = prep / "datalist_volume.json"
    dl.write_text(json.dumps({"test": [{"image": "a.nii.gz", "box": [LESION], "label": [0], "long_mm": [12.0]}]}))
    (prep / "experiment.json").write_text(json.dumps({"volume_datalist": str(dl)}))
    ev = work / f"data{seed}" / "train0" / "eval" / "context"
    (ev / "protocols" / "slices_6mm").mkdir(parents=True)
    (ev / "metrics_volume.json").write_text(json.dumps({"operating_point": {"score_threshold": threshold}}))
    preds = {"predictions": [{"image": str(prep / "a.nii.gz"), "box": [LESION], "score": [threshold + 1]}]}
    (ev / "predictions_volume_test.json").write_text(json.dumps(preds))
    vdl = ev / "protocols" / "slices_6mm" / "datalist_volume.json"
    vdl.write_text(json.dumps({"test": [{"image": "v.nii.gz", "box": [LESION], "label": [0], "long_mm": [12.0]}]}))
    vp = {"predictions": [{"image": str(vdl.parent / "v.nii.gz"), "box": [LESION], "score": [variant_score]}]}
    (ev / "protocols" / "slices_6mm" / "predictions_volume_test.json").write_text(json.dumps(vp))


def test_each_replicate_is_read_at_its_own_threshold_and_pooled_per_protocol(tmp_path, capsys) -> None:
    work = tmp_path / "ablation"
    _replicate(work, 2027, threshold=2.0, variant_score=1.0)  # the 6 mm box under this replicate's threshold
    _replicate(work, 2028, threshold=0.5, variant_score=1.0)  # and over this one's
    page = tmp_path / "misses.md"
    main(["--work_dir", str(work), "--arm", "context", "--results", str(page)])
    text = page.read_text()
    assert "data2027/train0 (threshold 2.0000), data2028/train0 (threshold 0.5000)" in text
    assert "| as stored | 10-20 mm | 2 | 2 | 0 | 0 | 0 | 0 |" in text
    assert "| slices_6mm | 10-20 mm | 2 | 1 | 1 | 0 | 0 | 0 |" in text
    assert "each replicate at its own operating point" in text and "| slices_6mm | 10-20 mm" in capsys.readouterr().out


def test_a_work_dir_without_the_arm_is_one_line(tmp_path) -> None:
    with pytest.raises(SystemExit, match="no evaluated replicate of arm 'context'"):
        main(["--work_dir", str(tmp_path), "--results", str(tmp_path / "x.md")])
