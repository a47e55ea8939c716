"""A real Orthanc (Debian orthanc + orthanc-dicomweb) on loopback: STOW the export, mine over DICOMweb."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from bundle.mining.pipeline import Miner
from bundle.pacs.dicomweb import DICOMwebClient, DICOMwebSource, push_folder

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("Orthanc") is None or not PLUGIN.exists(),
        reason="Debian orthanc/orthanc-dicomweb not installed (.ci/run installs them)",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    work = tmp_path_factory.mktemp("orthanc")
    port = _free_port()
    cfg = {
        "Name": "mining-test",
        "StorageDirectory": str(work / "db"),
        "IndexDirectory": str(work / "db"),
        "HttpPort": port,
        "HttpBindAddress": "127.0.0.1",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "SeriesMetadata": "Full", "StudiesMetadata": "Full"},
    }
    (work / "orthanc.json").write_text(json.dumps(cfg))
    log = open(work / "orthanc.log", "w")
    proc = subprocess.Popen(["Orthanc", str(work / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if requests.get(f"{url}/system", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"Orthanc did not start: {(work / 'orthanc.log').read_text()[-2000:]}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def test_stow_then_mine_matches_record(orthanc, pacs_export, tiny_demo, tmp_path):
    from tests.test_mining_folder import match_record

    web = f"{orthanc}/dicom-web"
    pushed = push_folder(web, pacs_export / "dicom")
    record = json.loads((pacs_export / "record.json").read_text())
    n_files = sum(1 for p in (pacs_export / "dicom").rglob("*") if p.is_file())
    # the PACS refuses the truncated file and the text file; everything else is stored
    assert pushed["stored"] == n_files - record["expected_counts"]["corrupt"] - record["expected_counts"]["not_dicom"]
    assert len(DICOMwebClient(web).search_studies(modality="MR")) == len(record["patients"])

    res = Miner(str(tmp_path), source=DICOMwebSource(web), split_file=str(tiny_demo / "truth.json"), workers=2, progress=False).run()
    ious = match_record(record, json.loads((tmp_path / "datalist.json").read_text()))
    assert ious
    expected = {k: v for k, v in record["expected_counts"].items() if k not in ("kept", "corrupt", "not_dicom")}
    assert res["report"]["exclusions"] == expected
    assert res["timing"]["objects_per_s"] > 0

    # QIDO date range: only the studies inside it are mined
    res2 = Miner(
        str(tmp_path / "range"),
        source=DICOMwebSource(web, "20210110", "20210120", ["MR"]),
        date_from="20210110",
        date_to="20210120",
        convert=False,
        progress=False,
    ).run()
    in_range = [p for p in record["patients"] if "20210110" <= p["study_date"] <= "20210120"]
    assert len(in_range) == 2
    # a normal study in the range has nothing measured, so only studies with a kept mark reach the datalist
    with_boxes = [p for p in in_range if any(m["status"] == "kept" for m in p["marks"])]
    assert res2["report"]["counts"]["patients_in_datalist"] == len(with_boxes) >= 1
