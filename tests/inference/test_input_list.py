"""inference_volume.yaml's ``input_list``: library code hands the volumes over as a file path, never as a `$` string."""

from __future__ import annotations

import json

import pytest


def _datalist(repo_root, **over) -> list:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(repo_root / "configs" / "inference_volume.yaml"))
    parser.update(over)
    return parser.get_parsed_content("datalist")


def test_input_list_names_the_volumes_in_its_order(repo_root, tmp_path):
    paths = [str(tmp_path / "b" / "t1c.nii.gz"), str(tmp_path / "a" / "t1c.nii.gz")]
    listing = tmp_path / "volumes.json"
    listing.write_text(json.dumps(paths))
    assert _datalist(repo_root, input_list=str(listing)) == [{"image": p} for p in paths]  # as listed, not sorted
    # --input_image still wins; no list: input_glob as before
    assert _datalist(repo_root, input_list=str(listing), input_image="x.nii.gz") == [{"image": "x.nii.gz"}]
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "t1c.nii.gz").write_bytes(b"")
    assert _datalist(repo_root, dataset_dir=str(tmp_path)) == [{"image": str(tmp_path / "c" / "t1c.nii.gz")}]


@pytest.mark.parametrize("k", [0, 2, 4, -1])
def test_context_slices_have_one_check(k):
    from bundle.demo.options import DemoOptions, option_problem
    from bundle.inference.linking import SliceToVolumeDetector
    from bundle.transforms.slices import KeySliceContextd, check_context_slices

    for make in (check_context_slices, KeySliceContextd, lambda k: SliceToVolumeDetector(None, context_slices=k)):
        with pytest.raises(ValueError, match="odd number >= 1"):
            make(k)
    assert option_problem(DemoOptions(context_slices=k)).startswith(f"--context_slices {k}: an odd number")
