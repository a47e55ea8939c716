"""The canonical grid: chosen from the series' spacings, boxes carried through MONAI's resampling, predictions back in the input's grid."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd, Spacingd

from bundle.transforms import grid


def test_spacing_is_chosen_from_the_series_medians():
    s = np.array([[1.5, 1.5, 4.0]] * 5 + [[0.5, 0.5, 1.0]] + [[1.0, 1.0, 6.0]] * 2)
    g = grid.choose_spacing(s)
    # in-plane: median 1.5 mm, finer so that a 10 mm lesion spans 8 pixels (1.25 mm); slices: the median
    assert g["spacing"] == [1.25, 1.25, 4.0]
    assert g["series"] == 8 and g["median_spacing"] == [1.5, 1.5, 4.0]
    # never more than max_upsampling finer than the data: 3 mm voxels -> 2 mm, not 1.25
    assert grid.choose_spacing(np.array([[3.0, 3.0, 3.0]]))["spacing"][:2] == [2.0, 2.0]
    # slices capped
    assert grid.choose_spacing(np.array([[1.0, 1.0, 8.0]]))["spacing"][2] == 6.0


def test_plan_writes_one_file_that_inference_reads(tmp_path):
    vol = tmp_path / "v.nii.gz"
    # stored LPI-ish: axis 0 flipped, 0.9 x 1.2 x 5 mm
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), np.diag([-0.9, 1.2, 5.0, 1.0])), vol)
    dl = tmp_path / "dl.json"
    dl.write_text(json.dumps({"training": [{"image": "v.nii.gz", "box": [], "label": []}]}))
    ckpt = tmp_path / "models"
    pix = grid.plan(ckpt, dl, context_slices=3)
    doc = json.loads((ckpt / grid.FILENAME).read_text())
    assert pix == doc["spacing"] == grid.spacing(ckpt)
    assert doc["median_spacing"] == [0.9, 1.2, 5.0] and doc["context_mm"] == 5.0
    # kept only when asked (resume, fine-tuning); otherwise replanned
    assert grid.plan(ckpt, None, spacing_mm=[2, 2, 2], keep=True) == pix
    assert grid.plan(ckpt, None, spacing_mm=[2, 2, 2]) == [2.0, 2.0, 2.0]
    assert grid.plan(ckpt, None, enabled=False) == grid.NATIVE and grid.context_mm(ckpt) is None
    assert grid.spacing(tmp_path / "none") == grid.NATIVE
    # multi-process training: the other ranks plan the same grid and write nothing
    assert grid.plan(tmp_path / "rank1", dl, write_file=False) == pix and not (tmp_path / "rank1").exists()


def _box_of(mask: np.ndarray) -> np.ndarray:
    idx = np.nonzero(mask > 0.5)
    return np.array([idx[0].min(), idx[1].min(), idx[2].min(), idx[0].max() + 1, idx[1].max() + 1, idx[2].max() + 1], float)


def test_training_boxes_follow_orientation_and_resampling(tmp_path):
    """A lesion's box through BoxesToWorldMmd, Orientationd, Spacingd, BoxesFromWorldMmd = the box of the resampled lesion."""
    mask = np.zeros((40, 30, 12), np.float32)
    mask[10:20, 5:17, 4:7] = 1
    affine = np.diag([-1.5, 1.5, 4.0, 1.0])  # x stored right-to-left: Orientationd flips it
    affine[:3, 3] = [30.0, -20.0, 7.0]
    path = tmp_path / "m.nii.gz"
    nib.save(nib.Nifti1Image(mask, affine), path)
    t = Compose(
        [
            LoadImaged("image", image_only=True),
            EnsureChannelFirstd("image"),
            grid.BoxesToWorldMmd(["box", "ignore_box"]),
            Orientationd("image", axcodes="RAS"),
            Spacingd("image", pixdim=[1.0, 1.0, 2.0], mode="nearest"),
            grid.BoxesFromWorldMmd(["box", "ignore_box"]),
        ]
    )
    out = t({"image": str(path), "box": [_box_of(mask).tolist()], "ignore_box": None, "z_half_extent_slices": [1.5]})
    np.testing.assert_allclose(out["box"][0], _box_of(out["image"][0].numpy()), atol=1.0)
    assert out["ignore_box"] == [] and out["z_half_extent_slices"] == [3.0]  # 1.5 slices of 4 mm = 3 slices of 2 mm
    np.testing.assert_allclose(grid.spacing_of_affine(out["image"].affine), [1.0, 1.0, 2.0])


def test_predictions_go_back_to_the_input_grid():
    """A box found on the canonical grid comes back as the same world box in the stored grid (any orientation, spacing)."""
    stored = np.array(
        [[0.0, 0.0, -0.75, 100.0], [-4.0, 0.0, 0.0, 50.0], [0.0, 1.2, 0.0, -60.0], [0, 0, 0, 1]]
    )  # axes (z, x, y), oblique-free
    img = MetaTensor(torch.zeros(1, 10, 80, 60), affine=torch.as_tensor(stored))
    t = Compose([grid.RememberInputGridd("image"), Orientationd("image", axcodes="RAS"), Spacingd("image", pixdim=[1.0, 1.0, 2.0])])
    canon = t({"image": img})["image"]
    box = np.array([[10.0, 20.0, 3.0, 22.0, 31.0, 9.0]])
    back, aff, shape = grid.to_input_grid(box, canon)
    assert shape == [10, 80, 60]
    np.testing.assert_allclose(aff, stored)
    from bundle.transforms.world import voxel_to_world

    np.testing.assert_allclose(
        voxel_to_world(back, stored, mode="xyzxyz"), voxel_to_world(box, canon.affine.numpy(), mode="xyzxyz"), atol=1e-4
    )
    assert grid.BoxesToInputGridd("box", "image")({"box": torch.as_tensor(box), "image": canon})["box"].shape == (1, 6)


def test_context_step_is_millimetres():
    assert grid.context_step(4.0, 4.0, 3) == 1
    assert grid.context_step(4.0, 1.0, 3) == 4  # a 1 mm series: neighbours 4 slices apart
    assert grid.context_step(8.0, 2.0, 5) == 2
    assert grid.context_step(None, 1.0, 3) == 1


@pytest.mark.parametrize("four_by_four", [False, True])
def test_slice_boxes_go_back_to_the_slice_grid(four_by_four):
    """The zoo's 2D inference.yaml: a slice resampled in-plane, its boxes back on the slice's own pixels (a NIfTI slice keeps a 4x4 affine)."""
    aff = torch.as_tensor([[1.5, 0.0, -10.0], [0.0, 1.5, 5.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    if four_by_four:
        aff = torch.as_tensor(grid._as_3d(aff.numpy()))
    t = Compose([grid.RememberInputGridd("image"), Spacingd("image", pixdim=[1.0, 1.0])])
    canon = t({"image": MetaTensor(torch.zeros(1, 40, 30), affine=aff)})["image"]
    assert tuple(canon.shape[1:]) == (60, 44)
    box = torch.as_tensor([[15.0, 3.0, 30.0, 18.0]])  # canonical pixels (1 mm)
    out = grid.BoxesToInputGridd("box", "image")({"box": box, "image": canon})["box"].numpy()
    # a box edge c is the continuous index c - 0.5 (voxel centres on integers), same origin: (c - 0.5) / 1.5 + 0.5
    np.testing.assert_allclose(out, (box.numpy() - 0.5) / 1.5 + 0.5, atol=1e-5)


def test_protocol_variants_move_the_truth_with_the_image(tmp_path):
    """evaluate_volume.yaml's protocol variants: each resampled / reoriented volume's truth box is its lesion's box."""
    from bundle.inference.protocols import DEFAULT_VARIANTS, write_variant

    vol = np.zeros((40, 36, 16), np.float32)
    vol[10:22, 8:20, 5:9] = 100.0  # an 18 x 18 x 16 mm lesion at 1.5 x 1.5 x 4 mm
    aff = np.diag([1.5, 1.5, 4.0, 1.0])
    aff[:3, 3] = [-30.0, -27.0, -32.0]
    nib.save(nib.Nifti1Image(vol, aff), tmp_path / "v.nii.gz")
    dl = tmp_path / "dl.json"
    dl.write_text(json.dumps({"test": [{"image": "v.nii.gz", "box": [[10, 8, 5, 22, 20, 9]], "label": [0], "patient": "p"}]}))
    for name, spec in DEFAULT_VARIANTS.items():
        out = write_variant(dl, tmp_path / name, spec)
        (item,) = json.loads(out.read_text())["test"]
        img = nib.load(out.parent / item["image"])
        data = np.asarray(img.dataobj)
        lesion = _box_of(data > 50.0)  # half the lesion's contrast: where partial volume puts its edge
        spacing = np.asarray(img.header.get_zooms()[:3])
        np.testing.assert_allclose(item["box"][0], lesion, atol=max(1.0, 2.0 / spacing.min()), err_msg=name)
        assert item["long_mm"] == [18.0] and item["patient"] == "p"
    # the orientation variant stores the axes as (z, y, x)
    assert nib.aff2axcodes(nib.load(tmp_path / "stored_SPL" / "0000_v.nii.gz").affine) == ("S", "P", "L")
    assert write_variant(dl, tmp_path / "slices_1mm", DEFAULT_VARIANTS["slices_1mm"]) == tmp_path / "slices_1mm" / "datalist_volume.json"


def test_evaluate_volume_scores_every_protocol_variant(repo_root, served_bundle, tiny_demo, tmp_path):
    """evaluate_volume.yaml: the test volumes as four other protocols, each scored at the operating point just chosen."""
    import shutil

    from monai.bundle import ConfigWorkflow

    from bundle.demo.volumes import write_volume_datalist

    dl = write_volume_datalist(tiny_demo, tiny_demo / "datalist_volume_protocols.json", ("validation", "test"))
    models = tmp_path / "bundle" / "models"
    models.mkdir(parents=True)
    for name in ("model.pt", grid.FILENAME):
        shutil.copy(served_bundle / "models" / name, models / name)
    cfg = [str(repo_root / "configs" / n) for n in ("inference_volume.yaml", "evaluate_volume.yaml")]
    wf = ConfigWorkflow(config_file=cfg, workflow_type="infer", bundle_root=str(tmp_path / "bundle"), volume_datalist_file=str(dl),
                        output_dir=str(tmp_path / "eval"), slice_sliding_window=False, n_bootstrap=20, write_operating_point=False)  # fmt: skip
    wf.initialize()
    wf.run()
    wf.finalize()
    r = json.loads((tmp_path / "eval" / "metrics_protocols.json").read_text())
    metrics = json.loads((tmp_path / "eval" / "metrics_volume.json").read_text())
    assert r["score_threshold"] == metrics["operating_point"]["score_threshold"]
    assert set(r["variants"]) == {"in_plane_0.75mm", "slices_1mm", "slices_6mm", "stored_SPL"}
    lesions = metrics["test"]["at_operating_point"]["lesions"]
    for name, row in r["variants"].items():
        assert row["at_operating_point"]["lesions"] == lesions, name  # every lesion's truth came along
        preds = json.loads((tmp_path / "eval" / "protocols" / name / "predictions_volume_test.json").read_text())["predictions"]
        for p in preds:  # boxes in each variant file's own grid
            shape = nib.load(p["image"]).shape
            assert p["shape"] == list(shape)
            for b in p["box"]:
                assert all(-1e-3 <= b[d] <= b[d + 3] <= shape[d] + 1e-3 for d in range(3)), (name, b)
    assert "| stored_SPL |" in (tmp_path / "eval" / "summary_protocols.md").read_text()


def test_key_slices_train_on_the_canonical_grid(tmp_path):
    """Key-slice training plans the grid from its slices (a NIfTI slice has two zooms) and resamples each slice with its boxes."""
    mask = np.zeros((40, 30), np.float32)
    mask[12:24, 6:15] = 1.0  # an 18 x 13.5 mm lesion at 1.5 mm
    affine = np.diag([1.5, 1.5, 4.0, 1.0])
    affine[:3, 3] = [-20.0, 10.0, 7.0]
    nib.save(nib.Nifti1Image(mask, affine), tmp_path / "s.nii.gz")
    np.testing.assert_allclose(grid.ras_spacing(tmp_path / "s.nii.gz"), [1.5, 1.5, 4.0])
    dl = tmp_path / "dl.json"
    dl.write_text(json.dumps({"training": [{"image": "s.nii.gz", "box": [[12, 6, 24, 15]], "label": [0]}]}))
    pix = grid.plan(tmp_path / "models", dl)
    assert pix == [1.25, 1.25, 4.0]  # as for the series: a 10 mm lesion spans 8 pixels

    t = Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image", channel_dim="no_channel")])
    item = t({"image": str(tmp_path / "s.nii.gz"), "box": [[12.0, 6.0, 24.0, 15.0]], "label": [0]})
    out = grid.SliceToGridd("image", pix, box_keys=["box"])(item)
    np.testing.assert_allclose(grid.spacing_of_affine(out["image"].affine)[:2], [1.25, 1.25])
    lesion = out["image"][0].numpy() > 0.5
    idx = np.nonzero(lesion)
    resampled = [idx[0].min(), idx[1].min(), idx[0].max() + 1, idx[1].max() + 1]
    np.testing.assert_allclose(out["box"][0], resampled, atol=1.0)
    assert out["box"][0][2] - out["box"][0][0] == pytest.approx(12 * 1.2)  # the same 18 mm in 1.25 mm pixels
    # evaluation gives no box keys: the truth stays on the slice's own pixels
    same = grid.SliceToGridd("image", pix)(t({"image": str(tmp_path / "s.nii.gz"), "box": [[12.0, 6.0, 24.0, 15.0]]}))
    assert same["box"] == [[12.0, 6.0, 24.0, 15.0]] and same["image"].shape[1:] == out["image"].shape[1:]


def test_a_slice_without_a_readable_header_is_named_in_one_line(tmp_path):
    (tmp_path / "s.png").write_bytes(b"\x89PNG not really")
    dl = tmp_path / "dl.json"
    dl.write_text(json.dumps({"training": [{"image": "s.png", "box": [], "label": []}]}))
    with pytest.raises(ValueError, match=r"s\.png: no voxel spacing .* grid_spacing_mm"):
        grid.plan(tmp_path / "models", dl)
