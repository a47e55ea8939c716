"""The two ways the tests run a bundle's volume inference on one image, written once.

``infer_volume``: ``configs/inference_volume.yaml`` as ``monai.bundle run`` runs it (its prediction file read back).
``package_infer``: a packaged bundle's ``inference.yaml`` as MONAI Label's bundle infer task runs it on a request
(preprocessing, the detector, then ``postprocessing``), in process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def infer_volume(bundle_root: Path, image: Path, out: Path, **overrides: Any) -> dict:
    """The one prediction record ``inference_volume.yaml`` writes for ``image`` with the weights under ``bundle_root``."""
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file=str(ROOT / "configs" / "inference_volume.yaml"),
        workflow_type="infer",
        bundle_root=str(bundle_root),
        input_image=str(image),
        output_path=str(out),
        **overrides,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    (pred,) = json.loads(Path(out).read_text())["predictions"]
    return pred


def package_infer(package_dir: Path, image: Path | str, **overrides: Any) -> tuple[dict, float]:
    """The package's postprocessed output for ``image`` (boxes in world LPS after ``BoxesToWorldd``) and its score threshold."""
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(Path(package_dir) / "configs" / "inference.yaml"))
    parser.update({"bundle_root": str(package_dir), "device": "$torch.device('cpu')", **overrides})
    detector = parser.get_parsed_content("detector")
    detector.network.load_state_dict(torch.load(Path(package_dir) / "models" / "model.pt", map_location="cpu", weights_only=True))
    parser.get_parsed_content("detector_ops")
    data = parser.get_parsed_content("preprocessing")({"image": str(image)})
    detector.eval()
    with torch.no_grad():
        (pred,) = detector([data["image"]], use_inferer=True)
    out = parser.get_parsed_content("postprocessing")({"image": data["image"], **pred})
    return out, float(parser.get_parsed_content("score_threshold"))
