"""MONAI Deploy app: DICOM series in -> T1 post-contrast axial series -> tumor boxes -> DICOM SR (TID 1500) + GSPS out.

The series may be classic (one instance per slice) or an Enhanced MR (one multi-frame instance): its orientation,
positions and pixel spacing come from the functional groups, its frames are the slices in position order, and
the SR and GSPS name each slice's frame (bundle/serving/slices.py).

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


class SeriesSelectorOperator(DICOMSeriesSelectorOperator):
    """The SDK's selector, which also sees an Enhanced MR's orientation (in its functional groups, not at the top level).

    Why: the selector reads ImageOrientationPatient from the series' first instance; an Enhanced MR has none there,
    so the axial rule never matched it. The missing attributes are offered as series attributes
    (bundle/serving/slices.py ``selector_attributes``); the instance itself is left as read.
    """

    @staticmethod
    def _get_instance_properties(obj):
        from monai.deploy.core.domain.dicom_series import DICOMSeries

        from bundle.serving.slices import selector_attributes

        props = DICOMSeriesSelectorOperator._get_instance_properties(obj)
        if isinstance(obj, DICOMSeries) and obj.get_sop_instances():
            props.update(selector_attributes(obj.get_sop_instances()[0].get_native_sop_instance(), props.get("PatientPosition")))
        return props


def series_slices(series) -> list:
    """The prepared series' slices in volume order (bundle/serving/slices.py ``SliceSource``): an Enhanced MR's frames, else its instances."""
    from bundle.serving.slices import SliceSource

    slices = getattr(series, "slices", None)
    return slices if slices is not None else [SliceSource(s.get_native_sop_instance()) for s in series.get_sop_instances()]


class ScreenedSeriesToVolumeOperator(DICOMSeriesToVolumeOperator):
    """The SDK's DICOM -> volume, after leaving out slices that cannot be decoded or do not share the grid.

    Why: the SDK stops at the first undecodable slice. Skipped slices are logged and land in detections.json
    (`skipped_slices`); a series that cannot form a volume is refused with one line (SeriesError).
    An Enhanced MR (one multi-frame instance) is stacked here frame by frame in position order, its geometry from
    the functional groups (the SDK's step reads one top-level position per instance).
    """

    def prepare_series(self, series):
        from dataclasses import asdict

        from bundle.serving.series_screening import screen_slices
        from bundle.serving.slices import enhanced_slices, is_enhanced, refuse_split_multiframe

        instances = list(series.get_sop_instances())
        if len(instances) == 1 and is_enhanced(instances[0].get_native_sop_instance()):
            series.slices = enhanced_slices(instances[0].get_native_sop_instance(), str(series.SeriesInstanceUID))
            series.skipped_slices = []
            series.depth_pixel_spacing = float(np.linalg.norm(series.slices[1].position - series.slices[0].position))
            return
        refuse_split_multiframe([s.get_native_sop_instance() for s in instances], str(series.SeriesInstanceUID))
        keep, skipped = screen_slices([s.get_native_sop_instance() for s in instances], str(series.SeriesInstanceUID))
        series._sop_instances = [instances[i] for i in keep]  # the SDK keeps them in this list; it has no setter
        series.skipped_slices = [asdict(s) for s in skipped]
        for s in skipped:
            logger.warning("series %s: slice %s skipped: %s (%s)", series.SeriesInstanceUID, s.sop_instance_uid, s.reason, s.detail)
        super().prepare_series(series)

    def generate_voxel_data(self, series):
        from bundle.serving.slices import frame_volume

        if getattr(series, "slices", None) is not None:
            return frame_volume(series.slices)
        return super().generate_voxel_data(series)


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

        from bundle.paths import read_config

        # network.yaml's keys read from this bundle, whatever the working directory
        parser = read_config(ConfigParser(), self.bundle_root / "configs" / "inference_volume.yaml", self.bundle_root)
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
        from monai.transforms import EnsureChannelFirstd, LoadImaged

        from bundle.serving.slices import series_affine_lps
        from bundle.transforms.checks import CheckImaged, check_array
        from bundle.transforms.grid import to_input_grid
        from bundle.transforms.world import voxel_to_world

        image = op_input.receive("image")
        selected = op_input.receive("study_selected_series_list")
        if not selected or not selected[0].selected_series:
            raise RuntimeError("no series matched the T1 post-contrast axial rules; nothing to detect")
        series = selected[0].selected_series[0].series
        slices = series_slices(series)
        vol = np.asarray(image.asnumpy())  # (slice, row, column), the SDK's order
        if vol.shape[0] != len(slices):
            raise RuntimeError(f"volume has {vol.shape[0]} slices but the series {series.SeriesInstanceUID} has {len(slices)} slices")
        arr = np.ascontiguousarray(np.transpose(vol, (2, 1, 0)), dtype=np.float32)  # (column, row, slice)
        aff_lps = series_affine_lps(slices)
        aff_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff_lps
        parser, detector, pre, model_file = self._detector()
        # the config's file check and loading are for files; here the array is the DICOM grid itself. The rest of the
        # config's preprocessing runs as for a file (its input grid remembered, reoriented to RAS, resampled to the
        # canonical grid), so the network sees what it sees for the NIfTI of these voxels, and boxes go back to
        # (column, row, slice) = DICOM pixel coordinates. The array gets the same check as a file, before its
        # channel axis, named by its series (docs/bad_inputs.md)
        check_array(MetaTensor(torch.from_numpy(arr), affine=torch.from_numpy(aff_ras)), f"series {series.SeriesInstanceUID}", 3)
        skip = (CheckImaged, LoadImaged, EnsureChannelFirstd)
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
                "sources": [s.dataset for s in slices],
                "frames": [s.frame for s in slices],
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
        frames = det.get("frames")
        sr = build_sr(det["sources"], det["boxes"], det["probabilities"], det["version"], frames=frames)
        written = [self.output_folder / "detections_sr.dcm"]
        sr.save_as(written[0])
        objects = [sr]
        if self.write_gsps:
            gsps = build_gsps(det["sources"], det["boxes"], det["probabilities"], det["version"], frames=frames)
            written.append(self.output_folder / "detections_gsps.dcm")
            gsps.save_as(written[-1])
            objects.append(gsps)
        summary = {
            "series_instance_uid": det["series_instance_uid"],
            "model": det["model"],
            "counts": det["counts"],
            "box_mode": "xyzxyz",
            "coordinates": "series array (column, row, slice index), max exclusive",
            **({"slice_frames": frames} if frames and frames[0] is not None else {}),  # an Enhanced MR: slice k is frame slice_frames[k]
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
        selector = SeriesSelectorOperator(self, rules=rules, name="series_selector")
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
    selected = SeriesSelectorOperator(fragment, name="preflight_selector").filter(rules, studies)
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
