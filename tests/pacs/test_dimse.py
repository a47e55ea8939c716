"""A real Orthanc's DICOM port: C-FIND by date range and modality, C-GET and C-MOVE into the cache, mined to the
folder source's boxes; an archive that refuses us, is not there, or matches nothing is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from bundle.mining.inspect import inspector
from bundle.mining.pipeline import Miner
from bundle.pacs.dicomweb import push_folder
from bundle.pacs.dimse import DIMSESource
from bundle.pacs.source import ArchiveError
from tests.pacs.orthanc_server import HAVE_ORTHANC, boxes, free_port, mine_folder, run_orthanc, stored_exclusions

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not HAVE_ORTHANC, reason="Debian orthanc/orthanc-dicomweb not installed (.ci/run installs them)"),
]
IN_RANGE = ("20210110", "20210120")


@pytest.fixture(scope="module")
def folder_run(pacs_export, tiny_demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("folder_mined")
    return out, mine_folder(pacs_export, tiny_demo, out)


@pytest.fixture(scope="module")
def archive(pacs_export, tmp_path_factory):
    """Orthanc with its DICOM port on, called AE title checked, our AE title registered for C-MOVE; export stored."""
    work = tmp_path_factory.mktemp("orthanc_dimse")
    dicom_port, move_port = free_port(), free_port()
    opts = dict(DicomServerEnabled=True, DicomPort=dicom_port, DicomAet="ORTHANC", DicomCheckCalledAet=True,
                DicomModalities={"MINING": ["MINING", "127.0.0.1", move_port]})  # fmt: skip
    with run_orthanc(work, **opts) as url:
        push_folder(f"{url}/dicom-web", pacs_export / "dicom")
        yield {"port": dicom_port, "move_port": move_port}


def test_c_get_mines_the_folder_sources_boxes_and_pixels(archive, folder_run, tiny_demo, tmp_path):
    source = DIMSESource("127.0.0.1", archive["port"], cache_dir=tmp_path / "cache", modalities=["MR"], retrieve="get")
    out = tmp_path / "mined"
    res = Miner(str(out), source=source, split_file=str(tiny_demo / "truth.json"), progress=False).run()
    folder_out, folder = folder_run
    assert boxes(res["datalist"]) == boxes(folder["datalist"]) and len(boxes(res["datalist"])) >= 5
    assert res["report"]["exclusions"] == stored_exclusions(folder["report"]["exclusions"])
    assert res["report"]["source"] == {"kind": "dimse"}
    for it in (it for items in res["datalist"].values() for it in items):
        assert np.array_equal(np.asarray(nib.load(out / it["image"]).dataobj), np.asarray(nib.load(folder_out / it["image"]).dataobj))


def test_c_move_by_date_range_and_a_rerun_reuses_the_cache(archive, folder_run, pacs_export, tmp_path):
    record = json.loads((pacs_export / "record.json").read_text())
    studies = {p["study_instance_uid"] for p in record["patients"] if IN_RANGE[0] <= p["study_date"] <= IN_RANGE[1]}
    cache = tmp_path / "cache"
    source = DIMSESource("127.0.0.1", archive["port"], cache_dir=cache, date_from=IN_RANGE[0], date_to=IN_RANGE[1],
                         modalities=["MR"], retrieve="move", move_port=archive["move_port"])  # fmt: skip
    assert {s.study for s in source.find_series()} == studies and len(studies) == 2
    res = Miner(str(tmp_path / "mined"), source=source, date_from=IN_RANGE[0], date_to=IN_RANGE[1], convert=False, progress=False).run()
    expected = [b for b in boxes(folder_run[1]["datalist"]) if b[0] in {it["sop_instance_uid"] for items in folder_run[1]["datalist"].values() for it in items if it["study_instance_uid"] in studies}]  # fmt: skip
    assert boxes(res["datalist"]) == expected and expected
    assert {p.name for p in cache.iterdir()} == studies  # only the matching studies came

    # complete series are not asked for again: with nobody listening where the archive sends, nothing fails
    rerun = DIMSESource("127.0.0.1", archive["port"], cache_dir=cache, date_from=IN_RANGE[0], date_to=IN_RANGE[1],
                        modalities=["MR"], retrieve="move", move_port=free_port())  # fmt: skip
    results = rerun.collect(inspector(), 1, False)
    assert not [r for r in results if r.issue and r.issue.reason == "retrieve_failed"]
    assert len(results) == sum(1 for _ in cache.rglob("*.dcm"))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"called_aet": "NOT_ORTHANC"}, r"^DIMSE NOT_ORTHANC@127\.0\.0\.1:\d+: association rejected"),
        ({"port": "free"}, r"^DIMSE ORTHANC@127\.0\.0\.1:\d+: server unreachable \(Connection refused\)$"),
        ({"date_from": "20300101"}, r": no study matches study date 20300101-\.\.\., modality MR$"),
        ({"retrieve": "push"}, r"^dimse_retrieve: 'push' is not one of get, move$"),
    ],
)
def test_archive_problems_are_one_line(archive, tmp_path, change, message):
    kwargs = {"host": "127.0.0.1", "port": archive["port"], "cache_dir": tmp_path, "modalities": ["MR"], **change}
    if kwargs["port"] == "free":
        kwargs["port"] = free_port()
    with pytest.raises(ArchiveError, match=message):
        DIMSESource(**kwargs).collect(inspector())


def test_rejected_association_on_the_command_line(archive, repo_root, tmp_path):
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/mine.yaml", "--source", "@dimse_source",
           "--dimse_port", str(archive["port"]), "--dimse_called_aet", "NOT_ORTHANC", "--dimse_cache", str(tmp_path / "cache"),
           "--output_dir", str(tmp_path / "out"), "--progress", "false"]  # fmt: skip
    p = subprocess.run(cmd, cwd=repo_root, env={**os.environ, "PYTHONPATH": str(repo_root)}, capture_output=True, text=True, timeout=180)
    assert p.returncode == 1 and "Traceback" not in p.stderr + p.stdout
    assert p.stderr.strip().splitlines()[-1].startswith(f"DIMSE NOT_ORTHANC@127.0.0.1:{archive['port']}: association rejected")
