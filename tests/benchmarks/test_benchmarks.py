"""The benchmark package's pieces: how far apart two paths' boxes are, the time-to-F1 log reader, a section's process."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from bundle.benchmarks.page import render
from bundle.benchmarks.run import child, merge_records
from bundle.benchmarks.time_to_f1 import _median_hit, f1_curve, reached
from bundle.benchmarks.volume import box_gap


def test_box_gap_tells_how_far_two_paths_are_apart():
    """A 'NO' on the page says why: another box count on a volume, or boxes or scores beyond tolerance."""
    import torch

    a = {"box": torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0, 2.0]]), "label_scores": torch.tensor([0.5])}
    near = {"box": a["box"] + 5e-4, "label_scores": a["label_scores"] + 5e-5}
    assert box_gap([a], [near])["identical_boxes"]
    far = {"box": a["box"] + 0.01, "label_scores": a["label_scores"] + 0.002}
    gap = box_gap([a, a], [far, {"box": torch.zeros(0, 6), "label_scores": torch.zeros(0)}])
    assert not gap["identical_boxes"] and gap["count_mismatches"] == 1
    assert abs(gap["max_box_diff"] - 0.01) < 1e-6 and abs(gap["max_score_diff"] - 0.002) < 1e-6


def test_time_to_f1_reads_the_validation_lines_of_a_training_log():
    """Seconds from launch to each validation's F1, and the first one at or above the target."""
    t0 = datetime(2026, 12, 4, 14, 45, 0).timestamp()
    log = (
        "2026-12-04 14:45:10,000 - ignite.engine.engine.DetectionTrainer - INFO - Epoch[1] Complete. Time taken: 00:00:09.000\n"
        "2026-12-04 14:45:15,468 - INFO - Epoch[1] Metrics -- val_mAP: 0.4761 val_mAP_AP_IoU_0.50: 0.2510 val_mAP_F1: 0.4016 val_mAP_mAP: 0.4761\n"
        "2026-12-04 14:45:36,925 - INFO - Epoch[2] Metrics -- val_mAP: 0.5601 val_mAP_F1: 0.5403 val_mAP_recall: 0.3711\n"
    )
    curve = f1_curve(log, t0)
    assert [c[:2] for c in curve] == [(1, 0.4016), (2, 0.5403)]
    assert abs(curve[0][2] - 15.468) < 0.01 and abs(curve[1][2] - 36.925) < 0.01
    assert reached(curve, 0.5) == (2, curve[1][2]) and reached(curve, 0.4) == (1, curve[0][2]) and reached(curve, 0.6) is None
    assert _median_hit([(10, 84.0), (10, 74.0)]) == [10, 79.0]  # an arm's trainings: median epoch and seconds
    assert _median_hit([(10, 84.0), None]) is None  # one training that missed the target: the arm did not reach it


def test_a_section_runs_in_its_own_process_and_a_failure_is_its_row(tmp_path: Path):
    """The child process gets the options as JSON; a section that fails comes back as its last error line, and the page
    still has a row for every section, saying what was not measured."""
    res = child({"device": "cpu"}, "no_such_section", tmp_path, tmp_path)
    assert "no benchmark section 'no_such_section'" in res["error"]
    records = merge_records(
        tmp_path / "b.json", {"volume": res}, {"device": "cpu", "size": "tiny"}, "python scripts/benchmark.py", "a machine"
    )
    page = render(records)
    assert "| volume inference [run 1] | not measured | ValueError: no benchmark section" in page
    for row in ("| training | not measured", "| training, time to a validation F1", "| mining |", "| de-identification |"):
        assert row in page, row


def test_a_run_of_some_sections_keeps_the_other_sections_rows(tmp_path: Path):
    """A GPU session that measures the volume section alone replaces that section's record and leaves the CPU run's
    de-identification row as it was, and the page names both runs; an unreadable records file is not half-used."""
    path = tmp_path / "benchmarks.json"
    cpu = {"device": "cpu", "size": "small"}
    merge_records(path, {"deid": {"files": 10, "ratio": 0.5, "deid_files_per_s": 5.0, "peak_rss_mib": 100}}, cpu, "cmd-cpu", "2 cores")
    merge_records(path, {"volume": {"error": "boom"}}, cpu, "cmd-cpu", "2 cores")
    records = merge_records(path, {"volume": {"error": "on the GPU"}}, {"device": "cuda", "size": "default"}, "cmd-gpu", "an H100")
    assert set(json.loads(path.read_text())) == {"deid", "volume"}
    page = render(records)
    assert "| de-identification, files/s (vs a plain pydicom read + write of the same files) [run 2] | 0.50x | 10 files |" in page
    assert "| volume inference [run 1] | not measured | on the GPU |" in page and "boom" not in page
    assert "- Run 1 (volume; " in page and "Machine: an H100" in page and "- Run 2 (deid; " in page and "`cmd-cpu`" in page
    path.write_text("{not json")
    assert "| de-identification | not measured | not run |" in render(merge_records(path, {}, cpu, "c", "m"))


def test_the_no_model_folder_a_benchmark_child_makes_is_gone_when_it_exits():
    """Each benchmark child built the detector without a model in a fresh /tmp folder and left it there."""
    import subprocess
    import sys

    from bundle.paths import ROOT

    code = "from bundle.benchmarks.volume import _empty_dir; import os; d = _empty_dir(); print(d, os.path.isdir(d))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    assert out[1] == "True"
    assert not Path(out[0]).exists()
