"""MONAI Deploy app: DICOM series in -> T1 post-contrast axial series -> tumor boxes -> DICOM SR (TID 1500) + GSPS out.

    python deploy/app/app.py -i <dicom folder> -o <output folder> -m <models folder or model.ts/.pt> [--stow-url URL]

Runs in its own venv (.venv-deploy, scripts/make_venv.py with deploy/app/requirements.txt): the SDK
installs into MONAI's package folder and pulls Holoscan, which the bundle's environment must not see.

Why own operators: the SDK has no detection operator (its bundle operator runs a network, not
MONAI's RetinaNetDetector with anchors, box decoding and NMS) and no TID 1500 writer. Loading,
series selection and DICOM -> volume are the SDK's; detection runs the bundle's own volume config
(configs/inference_volume.yaml); DICOM writing is bundle/serving/dicom_sr.py (highdicom).

Settings from the environment: BUNDLE_ROOT (default: this repository), BUNDLE_OVERRIDES (JSON of
config keys, e.g. '{"score_threshold": 0.5}', a classification logit), SERIES_RULES (selector JSON, default below).
Without a score_threshold override the operating point shipped beside the model is used
(<model folder>/operating_point.json, bundle/inference/operating_point.py).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

BUNDLE_ROOT = Path(os.environ.get("BUNDLE_ROOT", Path(__file__).resolve().parents[2]))
if str(BUNDLE_ROOT) not in sys.path:
    sys.path.insert(0, str(BUNDLE_ROOT))

from monai.deploy.conditions import CountCondition  # noqa: E402
from monai.deploy.core import Application, Operator, OperatorSpec  # noqa: E402
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator  # noqa: E402
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator  # noqa: E402
from monai.deploy.operators.dicom_series_to_volume_operator import DICOMSeriesToVolumeOperator  # noqa: E402

logger = logging.getLogger("brain_mri_tumor_detection.deploy")

# T1 post-contrast, axial, MR. Descriptions vary by site: edit the regex or pass SERIES_RULES.
SERIES_RULES = {
    "selections": [
        {
            "name": "T1 post-contrast axial",
            "conditions": {
                "Modality": "(?i)MR",
                "SeriesDescription": r"(?i)(t1.*(post|\+ ?c|gad|contrast|gd))|((post|gad|contrast).*t1)",
                "ImageOrientationPatient": "Axial",
            },
        }
    ]
}


def series_affine_lps(sources) -> np.ndarray:
    """Voxel (column, row, slice) centre -> LPS mm, from the sorted instances' geometry.

    Computed here rather than taken from the SDK's volume metadata, which scales the row direction
    by the row spacing (PixelSpacing[0]); that is only right for square pixels.
    """
    first, last = sources[0], sources[-1]
    iop = np.asarray(first.ImageOrientationPatient, dtype=float)
    row_sp, col_sp = (float(v) for v in first.PixelSpacing)
    ipp0 = np.asarray(first.ImagePositionPatient, dtype=float)
    n = len(sources)
    if n > 1:
        step = (np.asarray(last.ImagePositionPatient, dtype=float) - ipp0) / (n - 1)
    else:
        step = np.cross(iop[:3], iop[3:]) * float(getattr(first, "SliceThickness", 1.0) or 1.0)
    aff = np.eye(4)
    aff[:3, 0] = iop[:3] * col_sp  # along a row: column index
    aff[:3, 1] = iop[3:] * row_sp  # along a column: row index
    aff[:3, 2] = step
    aff[:3, 3] = ipp0
    return aff


class ScreenedSeriesToVolumeOperator(DICOMSeriesToVolumeOperator):
    """The SDK's DICOM -> volume, after leaving out slices that cannot be decoded or do not share the grid.

    Why: the SDK stops at the first undecodable slice. Skipped slices are logged and land in detections.json
    (`skipped_slices`); a series that cannot form a volume is refused with one line (SeriesError).
    """

    def prepare_series(self, series):
        from dataclasses import asdict

        from bundle.serving.series_screening import screen_slices

        instances = list(series.get_sop_instances())
        keep, skipped = screen_slices([s.get_native_sop_instance() for s in instances], str(series.SeriesInstanceUID))
        series._sop_instances = [instances[i] for i in keep]  # the SDK keeps them in this list; it has no setter
        series.skipped_slices = [asdict(s) for s in skipped]
        for s in skipped:
            logger.warning("series %s: slice %s skipped: %s (%s)", series.SeriesInstanceUID, s.sop_instance_uid, s.reason, s.detail)
        super().prepare_series(series)


class BoxDetectionOperator(Operator):
    """Volume -> 3D boxes with the bundle's volume config (2D model slice by slice, linked)."""

    def __init__(self, fragment, *args, model_path: Path, bundle_root: Path = BUNDLE_ROOT, overrides: dict | None = None, **kwargs):
        self.model_path = Path(model_path)
        self.bundle_root = Path(bundle_root)
        self.overrides = overrides or {}
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("image")
        spec.input("study_selected_series_list")
        spec.output("detections")

    def _detector(self):
        import torch
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(str(self.bundle_root / "configs" / "inference_volume.yaml"))
        parser.read_meta(str(self.bundle_root / "configs" / "metadata.json"))
        from bundle.engines.checkpoints import input_channels
        from bundle.serving.app_inputs import model_file

        path = model_file(self.model_path)
        # ckpt_dir = the model's folder: score_threshold defaults to the operating point shipped beside it;
        # the model's own input (1: 2D, k: 2.5D) sets the slices each network input stacks
        parser.update(
            {
                "bundle_root": str(self.bundle_root),
                "ckpt_dir": str(path.parent),
                "device": "$torch.device('cpu')",
                "context_slices": input_channels(path),
                **self.overrides,
            }
        )
        detector = parser.get_parsed_content("detector")
        if path.suffix == ".ts":
            detector.network = torch.jit.load(str(path), map_location="cpu")
        else:
            ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
            detector.network.load_state_dict(ckpt.get("model", ckpt))
        parser.get_parsed_content("detector_ops")
        pre = parser.get_parsed_content("preprocessing")
        return parser, detector, pre, str(path)

    def compute(self, op_input, op_output, context):
        import torch
        from monai.data import MetaTensor
        from monai.transforms import EnsureChannelFirstd, LoadImaged, Orientationd

        from bundle.transforms.checks import CheckImaged, check_array
        from bundle.transforms.grid import to_input_grid
        from bundle.transforms.world import voxel_to_world

        image = op_input.receive("image")
        selected = op_input.receive("study_selected_series_list")
        if not selected or not selected[0].selected_series:
            raise RuntimeError("no series matched the T1 post-contrast axial rules; nothing to detect")
        series = selected[0].selected_series[0].series
        sources = [s.get_native_sop_instance() for s in series.get_sop_instances()]
        vol = np.asarray(image.asnumpy())  # (slice, row, column), the SDK's order
        if vol.shape[0] != len(sources):
            raise RuntimeError(f"volume has {vol.shape[0]} slices but the series {series.SeriesInstanceUID} has {len(sources)} instances")
        arr = np.ascontiguousarray(np.transpose(vol, (2, 1, 0)), dtype=np.float32)  # (column, row, slice)
        aff_lps = series_affine_lps(sources)
        aff_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff_lps
        parser, detector, pre, model_file = self._detector()
        # the config's file check, loading and reorientation are for files; here the array is the DICOM grid
        # itself, so boxes stay in (column, row, slice) = DICOM pixel coordinates. The array gets the same
        # check as a file, before its channel axis, named by its series (docs/bad_inputs.md)
        check_array(MetaTensor(torch.from_numpy(arr), affine=torch.from_numpy(aff_ras)), f"series {series.SeriesInstanceUID}", 3)
        skip = (CheckImaged, LoadImaged, EnsureChannelFirstd, Orientationd)
        steps = [t for t in pre.transforms if not isinstance(t, skip)]
        data = {"image": MetaTensor(torch.from_numpy(arr)[None], affine=torch.from_numpy(aff_ras))}
        for t in steps:
            data = t(data)
        detector.eval()
        (pred,) = detector([data["image"]], use_inferer=True)
        # the detector ran on the canonical grid (the config's ToGridd, <model dir>/grid.json): boxes back to the series' own grid
        boxes, _, _ = to_input_grid(pred[detector.target_box_key].cpu().numpy(), data["image"])
        scores = pred[detector.pred_score_key].cpu().numpy()
        labels = pred[detector.target_label_key].cpu().numpy()
        threshold = float(parser.get_parsed_content("score_threshold"))
        keep = scores >= threshold
        logger.info("detections: %d boxes, %d at logit >= %.4f (%s)", len(scores), int(keep.sum()), threshold, detector.last_counts)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        # scores are logits (float32, compared as evaluation compared them); the SR's certainty is their sigmoid (float64)
        probabilities = 1.0 / (1.0 + np.exp(-scores.astype(np.float64)))
        op_output.emit(
            {
                "boxes": boxes,
                "scores": scores,
                "probabilities": probabilities,
                "labels": labels,
                "world_lps_cccwhd": voxel_to_world(boxes, aff_ras, lps=True, mode="cccwhd"),
                "sources": sources,
                "series_instance_uid": str(series.SeriesInstanceUID),
                "model": model_file,
                "version": json.loads((self.bundle_root / "configs" / "metadata.json").read_text())["version"],
                "counts": {**detector.last_counts[0], "score_threshold": threshold, "kept": int(keep.sum())},
                "skipped_slices": getattr(series, "skipped_slices", []),
            },
            "detections",
        )


class DICOMDetectionWriterOperator(Operator):
    """Writes the SR (TID 1500), the GSPS and a JSON summary; optionally STOW-RS to a DICOMweb server."""

    def __init__(self, fragment, *args, output_folder: Path, stow_url: str | None = None, write_gsps: bool = True, **kwargs):
        self.output_folder = Path(output_folder)
        self.stow_url = stow_url
        self.write_gsps = write_gsps
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("detections")

    def compute(self, op_input, op_output, context):
        from bundle.serving.dicom_sr import build_gsps, build_sr

        det = op_input.receive("detections")
        self.output_folder.mkdir(parents=True, exist_ok=True)
        sr = build_sr(det["sources"], det["boxes"], det["probabilities"], det["version"])
        written = [self.output_folder / "detections_sr.dcm"]
        sr.save_as(written[0])
        objects = [sr]
        if self.write_gsps:
            gsps = build_gsps(det["sources"], det["boxes"], det["probabilities"], det["version"])
            written.append(self.output_folder / "detections_gsps.dcm")
            gsps.save_as(written[-1])
            objects.append(gsps)
        summary = {
            "series_instance_uid": det["series_instance_uid"],
            "model": det["model"],
            "counts": det["counts"],
            "box_mode": "xyzxyz",
            "coordinates": "series array (column, row, slice index), max exclusive",
            "world": {"box_mode": "cccwhd", "space": "LPS", "units": "mm"},
            "score_kind": "logit (the SR's certainty of finding is its sigmoid, 'probability' here)",
            "detections": [
                {"box": b.tolist(), "box_world": w.tolist(), "score": float(s), "probability": float(pr), "label": int(lab)}
                for b, w, s, pr, lab in zip(det["boxes"], det["world_lps_cccwhd"], det["scores"], det["probabilities"], det["labels"])
            ],
            "files": [p.name for p in written],
            "skipped_slices": det.get("skipped_slices", []),
        }
        if self.stow_url:
            from dicomweb_client.api import DICOMwebClient

            DICOMwebClient(url=self.stow_url).store_instances(datasets=objects)
            summary["stored_to"] = self.stow_url
        (self.output_folder / "detections.json").write_text(json.dumps(summary, indent=1))
        logger.info("wrote %s", ", ".join(str(p) for p in written))


class TumorDetectionApp(Application):
    """DICOM folder -> selected series -> volume -> detection -> SR + GSPS (+ STOW-RS)."""

    def __init__(self, *args, stow_url: str | None = None, **kwargs):
        self.stow_url = stow_url
        super().__init__(*args, **kwargs)

    def compose(self):
        ctx = Application.init_app_context(self.argv)
        rules = os.environ.get("SERIES_RULES") or json.dumps(SERIES_RULES)
        overrides = json.loads(os.environ.get("BUNDLE_OVERRIDES", "{}"))
        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=Path(ctx.input_path), name="dicom_loader")
        selector = DICOMSeriesSelectorOperator(self, rules=rules, name="series_selector")
        to_volume = ScreenedSeriesToVolumeOperator(self, name="series_to_volume")
        detect = BoxDetectionOperator(self, model_path=Path(ctx.model_path), overrides=overrides, name="box_detection")
        writer = DICOMDetectionWriterOperator(self, output_folder=Path(ctx.output_path), stow_url=self.stow_url, name="dicom_writer")
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, to_volume, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(to_volume, detect, {("image", "image")})
        self.add_flow(selector, detect, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(detect, writer, {("detections", "detections")})


def preflight(argv: list[str]) -> None:
    """The inputs checked before the graph starts: one ``error:`` line each, not an operator's traceback.

    The series choice is the SDK's own (its loader and selector, outside the graph), so this refuses
    exactly the studies the graph would fail on (docs/bad_inputs.md).
    """
    from monai.deploy.core import Fragment

    from bundle.serving.app_inputs import dicom_files, model_file, no_series_matched, screen_series

    ctx = Application.init_app_context(argv)
    folder = Path(ctx.input_path)
    dicom_files(folder)
    model_file(ctx.model_path)
    rules = json.loads(os.environ.get("SERIES_RULES") or json.dumps(SERIES_RULES))
    fragment = Fragment()
    studies = DICOMDataLoaderOperator(fragment, name="preflight_loader").load_data_to_studies(folder)
    selected = DICOMSeriesSelectorOperator(fragment, name="preflight_selector").filter(rules, studies)
    if not selected or not selected[0].selected_series:
        raise no_series_matched(folder, [r.get("name", "") for r in rules.get("selections", [])], studies)
    series = selected[0].selected_series[0].series
    screen_series(folder, [s.get_native_sop_instance() for s in series.get_sop_instances()], str(series.SeriesInstanceUID))


def main() -> None:
    from bundle.io.errors import install_excepthook

    install_excepthook()  # a bad input: one line and exit 1 (BUNDLE_DEBUG=1 shows the traceback)
    argv = list(sys.argv)
    stow = None
    if "--stow-url" in argv:
        i = argv.index("--stow-url")
        stow = argv[i + 1]
        del argv[i : i + 2]
    sys.argv = argv
    logging.basicConfig(level=logging.INFO)
    preflight(argv)
    TumorDetectionApp(stow_url=stow).run()


if __name__ == "__main__":
    main()
