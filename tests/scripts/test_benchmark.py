"""scripts/benchmark.py in its quickest mode writes a table with every row (CPU only, tiny demo)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow  # about 5 minutes on the shared 2-core machine at load 10; well under a minute unloaded
def test_benchmark_quickest_mode_writes_every_row(repo_root, tmp_path):
    out = tmp_path / "benchmarks.md"
    cmd = [sys.executable, "-W", "ignore", "scripts/benchmark.py", "--size", "tiny", "--repeats", "1", "--iters", "2", "--out", str(out)]
    cmd += ["--ttf_epochs", "1"]
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert "Machine:" in text and "torch " in text
    for row in (
        "| volume inference, slices/s",
        "| process start-up",
        "| network on 512x512",
        "| training data loader alone",
        "| training step",
        "| training, time to a validation F1",
        "| mining, whole command wall",
        "| de-identification, files/s",
    ):
        assert row in text, (row, text)
    table = text.split("Notes")[0]
    assert "identical boxes: yes" in text and "not measured" not in table
    assert "same files: yes" in text  # the lean mining command wrote what monai.bundle run wrote


def test_box_gap_tells_how_far_two_paths_are_apart(repo_root):
    """A 'NO' on the page says why: another box count on a volume, or boxes or scores beyond tolerance."""
    import torch

    sys.path.insert(0, str(repo_root))
    from scripts.benchmark import box_gap

    a = {"box": torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0, 2.0]]), "label_scores": torch.tensor([0.5])}
    near = {"box": a["box"] + 5e-4, "label_scores": a["label_scores"] + 5e-5}
    assert box_gap([a], [near])["identical_boxes"]
    far = {"box": a["box"] + 0.01, "label_scores": a["label_scores"] + 0.002}
    gap = box_gap([a, a], [far, {"box": torch.zeros(0, 6), "label_scores": torch.zeros(0)}])
    assert not gap["identical_boxes"] and gap["count_mismatches"] == 1
    assert abs(gap["max_box_diff"] - 0.01) < 1e-6 and abs(gap["max_score_diff"] - 0.002) < 1e-6


def test_time_to_f1_reads_the_validation_lines_of_a_training_log(repo_root):
    """Seconds from launch to each validation's F1, and the first one at or above the target."""
    from datetime import datetime

    sys.path.insert(0, str(repo_root))
    from scripts.bench_time_to_f1 import _median_hit, f1_curve, reached

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
