"""Volume inference: slice boxes linked into 3D boxes, world LPS conversion, the volume config end to end."""

from __future__ import annotations

import json
import tempfile

import nibabel as nib
import numpy as np
import pytest

from bundle.inference.linking import link_slices
from bundle.transforms.world import voxel_to_world, world_to_voxel


def _iou3d(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    lo, hi = np.maximum(a[:3], b[:3]), np.minimum(a[3:], b[3:])
    inter = np.clip(hi - lo, 0, None).prod()
    return float(inter / ((a[3:] - a[:3]).prod() + (b[3:] - b[:3]).prod() - inter))


def _mask_slice_boxes(mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Perfect 2D detections: the box of every lesion cross-section on every axial slice."""
    out = []
    for z in range(mask.shape[2]):
        boxes = []
        for idx in np.unique(mask[:, :, z]):
            if idx == 0:
                continue
            xs, ys = np.nonzero(mask[:, :, z] == idx)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        b = np.asarray(boxes, np.float32).reshape(-1, 4)
        out.append((b, np.zeros(len(b), int), np.ones(len(b), np.float32)))
    return out


def test_linking_perfect_slice_boxes_gives_truth_boxes(tiny_demo):
    """Fed exact cross-section boxes from the lesion masks, linking must rebuild every truth 3D box."""
    truth = json.loads((tiny_demo / "truth.json").read_text())
    n = 0
    for p in truth["patients"]:
        mask = np.asarray(nib.load(tiny_demo / p["mask"]).dataobj)
        boxes, labels, scores, counts = link_slices(_mask_slice_boxes(mask), nms_thresh=0.5)
        want = [les["box_vox"] for les in p["lesions"]]
        assert counts["after_nms"] == len(boxes)
        for w in want:
            best = max((_iou3d(w, b) for b in boxes), default=0.0)
            assert best == pytest.approx(1.0), (p["patient_id"], w, boxes.tolist())
            n += 1
        assert len(boxes) == len(want), (p["patient_id"], boxes.tolist(), want)
    assert n >= 4


def test_linking_keeps_separate_lesions_and_drops_short_tracks():
    two = (np.asarray([[0, 0, 10, 10], [40, 40, 50, 50]], np.float32), np.zeros(2, int), np.asarray([0.9, 0.4], np.float32))
    shifted = (np.asarray([[1, 1, 11, 11]], np.float32), np.zeros(1, int), np.asarray([0.8], np.float32))
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, int), np.zeros(0, np.float32))
    boxes, labels, scores, counts = link_slices([two, shifted, empty, shifted])
    assert counts["tracks"] == 3  # the gap at z=2 starts a new track at z=3
    assert boxes.tolist()[0] == [0, 0, 0, 11, 11, 2] and scores[0] == pytest.approx(0.9)
    boxes, _, _, counts = link_slices([two, shifted, empty, shifted], min_slices=2)
    assert counts["dropped_short"] == 2 and boxes.tolist() == [[0, 0, 0, 11, 11, 2]]
    boxes, _, _, counts = link_slices([two, shifted, empty, shifted], max_gap=1)
    assert counts["tracks"] == 2 and [0, 0, 0, 11, 11, 4] in boxes.tolist()


def test_world_conversion_against_a_known_transform(tiny_demo):
    """Demo affine = diag(spacing) + origin (RAS). Box edges sit on voxel edges (centre - 0.5 voxel)."""
    truth = json.loads((tiny_demo / "truth.json").read_text())
    p = truth["patients"][0]
    affine = nib.load(tiny_demo / p["image"]).affine
    sp, origin = np.diag(affine)[:3], affine[:3, 3]
    box = np.asarray(p["lesions"][0]["box_vox"], float)
    ras_lo = origin + sp * (box[:3] - 0.5)
    ras_hi = origin + sp * (box[3:] - 0.5)
    lps_lo = np.array([-ras_hi[0], -ras_hi[1], ras_lo[2]])
    lps_hi = np.array([-ras_lo[0], -ras_lo[1], ras_hi[2]])
    want = np.concatenate([(lps_lo + lps_hi) / 2, lps_hi - lps_lo])
    got = voxel_to_world(box, affine)
    np.testing.assert_allclose(got[0], want, atol=1e-6)
    np.testing.assert_allclose(got[0, 3:], sp * (box[3:] - box[:3]), atol=1e-6)  # size in mm
    np.testing.assert_allclose(world_to_voxel(got, affine)[0], box, atol=1e-6)


def test_world_roundtrip_on_an_oblique_affine():
    rot = np.array([[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.9, 0.9, 5.0])
    affine[:3, 3] = [10, -20, 30]
    box = np.array([[10, 12, 3, 20, 18, 6]], float)
    world = voxel_to_world(box, affine, mode="xyzxyz")
    back = world_to_voxel(world, affine, mode="xyzxyz")
    # the world box encloses the rotated voxel box, so going back can only grow it
    assert np.all(back[0, :3] <= box[0, :3] + 1e-6) and np.all(back[0, 3:] >= box[0, 3:] - 1e-6)


@pytest.mark.slow
def test_volume_config_end_to_end(repo_root, served_bundle, tiny_demo, tmp_path):
    from monai.bundle import ConfigWorkflow

    truth = json.loads((tiny_demo / "truth.json").read_text())
    patient = truth["patients"][0]
    image = tiny_demo / patient["image"]
    out = tmp_path / "vol.json"
    wf = ConfigWorkflow(
        config_file=str(repo_root / "configs" / "inference_volume.yaml"),
        meta_file=str(repo_root / "configs" / "metadata.json"),
        logging_file=str(repo_root / "configs" / "logging.conf"),
        workflow_type="infer",
        bundle_root=str(served_bundle),
        input_image=str(image),
        output_path=str(out),
        score_threshold=float("-inf"),  # every box: the scores are logits
        slice_sliding_window=False,
    )
    wf.initialize()
    assert wf.check_properties() in (None, [])
    wf.run()
    counts = wf.parser.get_parsed_content("detector").last_counts
    wf.finalize()
    doc = json.loads(out.read_text())
    assert doc["box_mode"] == "xyzxyz" and doc["world"] == {"box_mode": "cccwhd", "space": "LPS", "units": "mm", "key": "box_world"}
    (pred,) = doc["predictions"]
    shape = nib.load(image).shape
    assert pred["shape"] == list(shape)
    assert len(counts) == 1 and counts[0]["after_nms"] == len(pred["box"]) <= 50
    assert len(pred["box"]) == len(pred["box_world"]) == len(pred["score"]) == len(pred["label"])
    affine = nib.load(image).affine
    np.testing.assert_allclose(np.asarray(pred["affine"]), affine, atol=1e-5)  # demo volumes are RAS: no reorientation
    for b, w in zip(pred["box"], pred["box_world"]):
        assert 0 <= b[0] < b[3] <= shape[0] and 0 <= b[1] < b[4] <= shape[1] and 0 <= b[2] < b[5] <= shape[2]
        np.testing.assert_allclose(w, voxel_to_world(b, affine)[0], atol=1e-3)


def test_world_labels_come_back_as_truth_boxes_in_training(tiny_demo, tmp_path):
    """MONAI Label's training labels (world LPS cccwhd) -> array boxes through train_volume.yaml's head,
    on a copy of the volume stored with reversed x/y axes: after RAS reorientation they are the truth boxes."""
    import torch
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd

    from bundle.transforms.slices import SliceWithBoxesd
    from bundle.transforms.world import WorldBoxesToImaged

    patient = json.loads((tiny_demo / "truth.json").read_text())["patients"][0]
    img = nib.load(tiny_demo / patient["image"])
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = [img.shape[0] - 1, img.shape[1] - 1]
    path = tmp_path / "flipped.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[::-1, ::-1, :].copy(), img.affine @ flip), path)
    truth = np.asarray([les["box_vox"] for les in patient["lesions"]], float)
    world = voxel_to_world(truth, img.affine)
    head = Compose(
        [
            LoadImaged(keys="image", image_only=True),
            EnsureChannelFirstd(keys="image"),
            Orientationd(keys="image", axcodes="RAS"),
            WorldBoxesToImaged(box_keys="box", box_ref_image_keys="image"),
        ]
    )
    d = head({"image": str(path), "box": world.tolist(), "label": [0] * len(world)})
    np.testing.assert_allclose(np.asarray(d["box"]), truth, atol=1e-4)
    # validation slice: the middle slice of the largest box, with the 2D boxes of every lesion crossing it
    s = SliceWithBoxesd(random=False)(d)
    big = truth[np.argmax(np.prod(truth[:, 3:] - truth[:, :3], axis=1))]
    z = int(np.floor((big[2] + big[5]) / 2))
    assert s["image"].shape == (1, img.shape[0], img.shape[1])
    torch.testing.assert_close(s["image"], torch.as_tensor(np.asarray(img.dataobj)[None, :, :, z], dtype=s["image"].dtype))
    crossing = truth[(truth[:, 2] <= z) & (truth[:, 5] > z)][:, [0, 1, 3, 4]]
    np.testing.assert_allclose(np.asarray(s["box"]), crossing, atol=1e-4)


_NO_MODEL = tempfile.mkdtemp(prefix="no_model_")  # one empty ckpt_dir for every call of the helper below


def _volume_detector(repo_root, **overrides):
    """The detector and preprocessing of inference_volume.yaml with a seeded, untrained network."""
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(repo_root / "configs" / "inference_volume.yaml"))
    # no model in ckpt_dir: the input channels and the operating point are the config's defaults, not those of
    # whatever `make demo` left in the checkout's models/
    parser["ckpt_dir"] = _NO_MODEL
    parser["slice_sliding_window"] = False
    parser["score_thresh"] = 0.0  # an untrained network scores low: keep its boxes so there is something to compare
    for k, v in overrides.items():
        parser[k] = v
    torch.manual_seed(0)
    det = parser.get_parsed_content("detector")
    parser.get_parsed_content("detector_ops")
    det.eval()
    return det, parser.get_parsed_content("preprocessing")


def _same_boxes(a: dict, b: dict) -> None:
    import torch

    assert len(a["box"]) == len(b["box"]) > 0
    torch.testing.assert_close(a["box"], b["box"], atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(a["label_scores"], b["label_scores"], atol=1e-4, rtol=1e-4)
    assert torch.equal(a["label"], b["label"])


def test_per_slice_scaling_vectorised_equals_monai_slice_by_slice(repo_root, tiny_demo):
    _, pre = _volume_detector(repo_root)
    image = str(tiny_demo / "demo-000" / "t1c.nii.gz")
    pre.transforms[-1].vectorised = True
    new = pre({"image": image})["image"]
    pre.transforms[-1].vectorised = False
    old = pre({"image": image})["image"]
    assert type(new) is type(old) and new.shape == old.shape and float(new.max()) == pytest.approx(1.0)
    np.testing.assert_allclose(np.asarray(new), np.asarray(old), atol=1e-5)
    flat = np.zeros((1, 4, 5, 3), np.float32)  # a blank slice is only shifted, as MONAI does
    flat[0, :, :, 1] = 7.0
    out = type(pre.transforms[-1])(keys="image")({"image": flat})["image"]
    np.testing.assert_allclose(out, type(pre.transforms[-1])(keys="image", vectorised=False)({"image": flat})["image"])


def test_batched_channels_last_path_gives_the_previous_boxes(repo_root, tiny_demo):
    """Batched (B, C, H, W) slices in channels-last, batch-wise box selection, TorchScript too, give the boxes of the list path."""
    import torch

    det, pre = _volume_detector(repo_root)
    vol = pre({"image": str(tiny_demo / "demo-000" / "t1c.nii.gz")})["image"]
    det.stack, det.slice_batch = False, 8  # the path this replaces
    (old,) = det([vol])
    det.stack, det.slice_batch, det.channels_last = True, 13, True  # chunks that do not divide the slice count
    (new,) = det([vol])
    _same_boxes(old, new)
    det.batched_select = False  # MONAI's per-image box selection on the same batches: bit for bit the same
    (monai_select,) = det([vol])
    det.batched_select = True
    assert all(torch.equal(new[k], monai_select[k]) for k in new)
    det.network = torch.jit.script(det.network)  # what ckpt_export writes to models/model.ts
    (scripted,) = det([vol])
    _same_boxes(old, scripted)


def test_context_slices_stack_neighbours_as_channels(repo_root, tiny_demo):
    import torch

    det, pre = _volume_detector(repo_root, context_slices=3)
    assert det.network.feature_extractor.body.conv1.in_channels == 3
    vol = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    stack = det.slice_stack(vol)
    assert stack.shape == (4, 3, 2, 3)
    for z in range(4):  # channel order z-1, z, z+1; the edges repeat the edge slice
        for c, src in enumerate((max(z - 1, 0), z, min(z + 1, 3))):
            assert torch.equal(stack[z, c], vol[0, :, :, src])
    (pred,) = det([pre({"image": str(tiny_demo / "demo-000" / "t1c.nii.gz")})["image"]])
    assert len(pred["box"]) > 0 and pred["box"].shape[1] == 6
    with pytest.raises(ValueError, match="odd"):
        type(det)(det.detector, context_slices=2)
    det1, _ = _volume_detector(repo_root)
    assert det1.context_slices == 1 and det1.network.feature_extractor.body.conv1.in_channels == 1
