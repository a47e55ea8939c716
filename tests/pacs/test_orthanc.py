"""A real Orthanc (Debian orthanc + orthanc-dicomweb) on loopback, signed in as hospitals do: HTTP basic
authentication (Orthanc's RegisteredUsers), a bearer token and a client certificate (mutual TLS). The last two
through a loopback gateway in front of Orthanc (tests/pacs/orthanc_server.py): Debian's Orthanc 1.10 has no token
authentication, and its HTTPS server (SslEnabled) crashes on the first TLS connection here. Each mines the
simulated export to the folder source's boxes; wrong credentials give one line and no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from bundle.mining.pipeline import Miner
from bundle.pacs.dicomweb import DICOMwebSource, push_folder
from bundle.pacs.source import ArchiveError
from tests.pacs.orthanc_server import (
    ARCHIVE_NEVER_SEES,
    HAVE_ORTHANC,
    boxes,
    gateway,
    make_certs,
    mine_folder,
    run_orthanc,
    stored_exclusions,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not HAVE_ORTHANC, reason="Debian orthanc/orthanc-dicomweb not installed (.ci/run installs them)"),
]
USER, PASSWORD, TOKEN = "miner", "pw-0f9e8d", "token-7c6b5a"


@pytest.fixture(scope="module")
def folder_run(pacs_export, tiny_demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("folder_mined")
    return out, mine_folder(pacs_export, tiny_demo, out)


@pytest.fixture(scope="module")
def secured(pacs_export, tmp_path_factory):
    """Orthanc with basic authentication on and the export stored; a bearer-token gateway in front of it."""
    work = tmp_path_factory.mktemp("orthanc_basic")
    with run_orthanc(work, AuthenticationEnabled=True, RegisteredUsers={USER: PASSWORD}) as url:
        pushed = push_folder(f"{url}/dicom-web", pacs_export / "dicom", {"kind": "basic", "username": USER, "password": PASSWORD})
        with gateway(url, token=TOKEN, upstream_auth=(USER, PASSWORD)) as proxy:
            yield {"web": f"{url}/dicom-web", "proxy": f"{proxy}/dicom-web", "pushed": pushed}


@pytest.fixture(scope="module")
def mtls(pacs_export, tmp_path_factory):
    """HTTPS that demands a client certificate signed by a throwaway CA, in front of a plain loopback Orthanc."""
    work = tmp_path_factory.mktemp("orthanc_tls")
    certs = make_certs(work / "certs")
    with run_orthanc(work) as url, gateway(url, certs=certs) as https:
        auth = {"client_cert": str(certs["client"]), "client_key": str(certs["client_key"]), "ca_bundle": str(certs["ca"])}
        pushed = push_folder(f"{https}/dicom-web", pacs_export / "dicom", auth)
        yield {"web": f"{https}/dicom-web", "auth": auth, "pushed": pushed}


def test_basic_auth_mines_the_folder_sources_boxes_and_pixels(secured, folder_run, pacs_export, tiny_demo, tmp_path):
    from tests.mining.test_mining_folder import match_record

    record = json.loads((pacs_export / "record.json").read_text())
    n_files = sum(1 for p in (pacs_export / "dicom").rglob("*") if p.is_file())
    skipped = sum(record["expected_counts"][k] for k in ARCHIVE_NEVER_SEES)
    assert secured["pushed"] == {"stored": n_files - skipped, "failed": 0, "skipped": skipped}

    (tmp_path / "pw").write_text(PASSWORD + "\n")  # a password file, as a secrets manager mounts it
    auth = {"kind": "basic", "username": USER, "password_file": str(tmp_path / "pw")}
    out = tmp_path / "mined"
    res = Miner(str(out), source=DICOMwebSource(secured["web"], auth=auth), split_file=str(tiny_demo / "truth.json"), progress=False).run()
    folder_out, folder = folder_run
    assert boxes(res["datalist"]) == boxes(folder["datalist"]) and len(match_record(record, res["datalist"])) >= 5
    assert res["report"]["exclusions"] == stored_exclusions(folder["report"]["exclusions"])
    for it in (it for items in res["datalist"].values() for it in items):  # pixels came over WADO-RS unchanged
        assert np.array_equal(np.asarray(nib.load(out / it["image"]).dataobj), np.asarray(nib.load(folder_out / it["image"]).dataobj))


def test_qido_date_range_and_modality(secured, pacs_export, monkeypatch, tmp_path):
    monkeypatch.setenv("PACS_PASSWORD", PASSWORD)
    auth = {"kind": "basic", "username": USER, "password_env": "PACS_PASSWORD"}
    source = DICOMwebSource(secured["web"], "20210110", "20210120", ["MR"], auth=auth)
    res = Miner(str(tmp_path), source=source, date_from="20210110", date_to="20210120", convert=False, progress=False).run()
    record = json.loads((pacs_export / "record.json").read_text())
    in_range = [p for p in record["patients"] if "20210110" <= p["study_date"] <= "20210120"]
    assert len(source.study_uids()) == len(in_range) == 2
    assert {it["study_instance_uid"] for items in res["datalist"].values() for it in items} <= {p["study_instance_uid"] for p in in_range}
    with_boxes = [p for p in in_range if any(m["status"] == "kept" for m in p["marks"])]
    assert res["report"]["counts"]["patients_in_datalist"] == len(with_boxes) >= 1
    with pytest.raises(ArchiveError, match="no study matches study date 20300101"):
        DICOMwebSource(secured["web"], "20300101", None, ["MR"], auth=auth).collect(lambda raw, loc: None)
    with pytest.raises(ArchiveError, match=r"HTTP 401 Unauthorized \(credentials refused"):
        DICOMwebSource(secured["web"], modalities=["MR"]).study_uids()  # no credentials at all


def test_bearer_token(secured, folder_run, monkeypatch, tmp_path):
    monkeypatch.setenv("PACS_TOKEN", TOKEN)
    source = DICOMwebSource(secured["proxy"], modalities=["MR"], auth={"kind": "bearer", "token_env": "PACS_TOKEN"})
    res = Miner(str(tmp_path), source=source, convert=False, progress=False).run()
    assert boxes(res["datalist"]) == boxes(folder_run[1]["datalist"])
    monkeypatch.setenv("PACS_TOKEN", "expired-token")
    with pytest.raises(ArchiveError, match="HTTP 401") as err:
        DICOMwebSource(secured["proxy"], auth={"kind": "bearer", "token_env": "PACS_TOKEN"}).study_uids()
    assert "expired-token" not in str(err.value)
    monkeypatch.delenv("PACS_TOKEN")
    with pytest.raises(ArchiveError, match="environment variable PACS_TOKEN is not set"):
        DICOMwebSource(secured["proxy"], auth={"kind": "bearer", "token_env": "PACS_TOKEN"})


def test_client_certificate(mtls, secured, folder_run, tmp_path):
    assert mtls["pushed"] == secured["pushed"]  # STOW-RS over mutual TLS too
    res = Miner(str(tmp_path), source=DICOMwebSource(mtls["web"], auth=mtls["auth"]), convert=False, progress=False).run()
    assert boxes(res["datalist"]) == boxes(folder_run[1]["datalist"])
    no_cert = {"ca_bundle": mtls["auth"]["ca_bundle"]}
    with pytest.raises(ArchiveError, match="client certificate missing or refused"):
        DICOMwebSource(mtls["web"], auth=no_cert).study_uids()
    untrusted_server = {k: v for k, v in mtls["auth"].items() if k != "ca_bundle"}  # system CAs do not know the test CA
    with pytest.raises(ArchiveError, match="TLS handshake failed"):
        DICOMwebSource(mtls["web"], auth=untrusted_server).study_uids()


def test_wrong_password_is_one_line_on_the_command_line(secured, repo_root, tmp_path):
    """`python -m monai.bundle run` as a user types it: exit 1, one line naming the URL and HTTP 401, no traceback."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/mine.yaml", "--source", "@dicomweb_source",
           "--dicomweb_url", secured["web"], "--dicomweb_auth#kind", "basic", "--dicomweb_auth#username", USER,
           "--dicomweb_auth#password_env", "PACS_PASSWORD", "--output_dir", str(tmp_path), "--progress", "false"]  # fmt: skip
    env = {**os.environ, "PACS_PASSWORD": "not-the-password", "PYTHONPATH": str(repo_root)}
    p = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines()[-1].startswith(f"DICOMweb {secured['web']}: QIDO-RS studies -> HTTP 401 Unauthorized")
    assert "Traceback" not in p.stderr + p.stdout and "not-the-password" not in p.stderr + p.stdout
