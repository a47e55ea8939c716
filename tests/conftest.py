"""Shared fixtures: tiny generated demo data, the repository root on sys.path."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """Four tiny patients (3 mm voxels): enough for every workflow to run end to end in seconds."""
    from bundle.demo.synth import generate

    out = tmp_path_factory.mktemp("demo")
    generate(out, size="tiny", seed=1, n_patients=4)
    return out


@pytest.fixture(scope="session")
def pacs_export(tiny_demo, tmp_path_factory) -> Path:
    """The simulated PACS export of the tiny demo (DICOM under ./dicom, the truth record in ./record.json)."""
    from bundle.demo.pacs_export import export

    out = tmp_path_factory.mktemp("pacs")
    export(tiny_demo, out, seed=0)
    return out


@pytest.fixture(scope="session")
def served_bundle(tmp_path_factory, tiny_demo) -> Path:
    """A bundle root with a seconds-trained tiny model, shipped as the demo ships its own: models/model.pt and model.ts.

    2.5D on whole series, like the demo's (b): each slice with its two neighbours as 3 input channels, so
    every serving path (zoo export, TorchScript, volume inference, MONAI Deploy, MONAI Label) has to read
    the model's input from the model. For the serving tests: they check plumbing and geometry, not
    accuracy, which a model trained this briefly does not have.
    """
    import subprocess

    from monai.bundle import ConfigWorkflow

    from bundle.demo.volumes import write_volume_datalist

    root = tmp_path_factory.mktemp("served")
    volumes = write_volume_datalist(tiny_demo, tiny_demo / "datalist_volume_served.json", ("training", "validation"))
    wf = ConfigWorkflow(
        config_file=[str(ROOT / "configs" / "train.yaml"), str(ROOT / "configs" / "train_series.yaml")],
        meta_file=str(ROOT / "configs" / "metadata.json"),
        logging_file=str(ROOT / "configs" / "logging.conf"),
        workflow_type="train",
        bundle_root=str(root),
        dataset_dir=str(tiny_demo),
        data_list_file_path=str(volumes),
        context_slices=3,
        epochs=4,
        val_interval=4,
        batch_size=2,
        num_samples=1,
        num_workers=0,
        patch_size=[64, 64],
        val_patch_size=[64, 64],
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    from bundle.engines.checkpoints import input_channels

    assert input_channels(root / "models") == 3
    # the model zoo's export command, exactly as docs/deployment.md gives it: model.pt is the weights
    # alone, so no --key_in_ckpt (the zoo's ci/verify_bundle.py gives none either)
    subprocess.run(
        [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def",
         "--filepath", str(root / "models" / "model.ts"), "--ckpt_file", str(root / "models" / "model.pt"),
         "--meta_file", str(ROOT / "configs" / "metadata.json"), "--config_file", str(ROOT / "configs" / "inference.yaml"),
         "--bundle_root", str(root)],
        check=True, cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    return root
