"""The demo generator: lesion boxes enclose their masks, distractors get none, seeds reproduce."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

from bundle.datalist.split import split_patients
from bundle.demo.synth import generate, slice_boxes


def test_every_lesion_box_encloses_its_mask(tiny_demo):
    truth = json.loads((tiny_demo / "truth.json").read_text())
    n_lesions = 0
    for p in truth["patients"]:
        mask = np.asarray(nib.load(tiny_demo / p["mask"]).dataobj)
        assert set(np.unique(mask)) - {0} == {les["index"] for les in p["lesions"]}
        for les in p["lesions"]:
            x0, y0, z0, x1, y1, z1 = les["box_vox"]
            inside = np.zeros_like(mask, dtype=bool)
            inside[x0:x1, y0:y1, z0:z1] = True
            vox = mask == les["index"]
            assert vox.sum() > 0
            assert not np.any(vox & ~inside), "mask voxels outside the lesion's box"
            # tight: every face of the box touches the mask
            assert vox[x0].any() and vox[x1 - 1].any() and vox[:, :, z0].any() and vox[:, :, z1 - 1].any()
            n_lesions += 1
    assert n_lesions > 0


def test_slice_boxes_cover_lesion_cross_sections_and_not_distractors(tiny_demo):
    truth = json.loads((tiny_demo / "truth.json").read_text())
    dl = json.loads((tiny_demo / "datalist.json").read_text())
    by_id = {p["patient_id"]: p for p in truth["patients"]}
    n_boxes = 0
    for section in dl.values():
        for item in section:
            p = by_id[item["patient"]]
            mask = np.asarray(nib.load(tiny_demo / p["mask"]).dataobj)[:, :, item["slice"]]
            vessels = np.asarray(nib.load(tiny_demo / p["distractor_mask"]).dataobj)[:, :, item["slice"]]
            assert not np.any((mask > 0) & (vessels > 0)), "a distractor overlaps a lesion"
            img = np.asarray(nib.load(tiny_demo / item["image"]).dataobj)
            assert img.shape == mask.shape
            assert len(item["box"]) == len(item["label"]) == len(item["lesion"])
            for box, idx in zip(item["box"], item["lesion"]):
                x0, y0, x1, y1 = box
                vox = mask == idx
                assert vox[x0:x1, y0:y1].sum() == vox.sum()
                n_boxes += 1
            # boxes come from lesions only: one per visible lesion, none for a vessel
            visible = slice_boxes(mask, tuple(p["spacing"][:2]), 5.0)
            assert sorted(item["lesion"]) == sorted(i for i, _ in visible)
    assert n_boxes > 0
    assert sum(p["distractors"] for p in truth["patients"]) > 0


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    a = generate(tmp_path / "a", size="tiny", seed=7, n_patients=2)
    b = generate(tmp_path / "b", size="tiny", seed=7, n_patients=2)
    generate(tmp_path / "c", size="tiny", seed=8, n_patients=2)
    assert a["counts"] == b["counts"]
    for name in ("demo-000/t1c.nii.gz", "demo-001/lesions.nii.gz"):
        va = np.asarray(nib.load(tmp_path / "a" / name).dataobj)
        vb = np.asarray(nib.load(tmp_path / "b" / name).dataobj)
        vc = np.asarray(nib.load(tmp_path / "c" / name).dataobj)
        assert np.array_equal(va, vb)
        assert not np.array_equal(va, vc)
    assert (tmp_path / "a" / "datalist.json").read_text() == (tmp_path / "b" / "datalist.json").read_text()


def test_patient_split_is_deterministic_and_disjoint():
    ids = [f"p{i}" for i in range(20)]
    s1, s2 = split_patients(ids, 3), split_patients(list(reversed(ids)), 3)
    assert s1 == s2
    assert set(s1.values()) == {"training", "validation", "test"}
    assert sum(v == "test" for v in s1.values()) == 4
