"""De-identification keeps mining intact: the de-identified export mines to the same boxes."""

from __future__ import annotations

import json

from bundle.deid.deidentify import deidentify_folder
from bundle.deid.phi_check import find_phi
from bundle.mining.pipeline import Miner
from bundle.pacs.folder import FolderSource


def _boxes(datalist: dict) -> list:
    """(slice number, boxes) per mined image: UIDs and patient ids differ by design after de-identification."""
    return sorted(
        (it["instance_number"], it["box"], it["split"] if "split" in it else sec) for sec, items in datalist.items() for it in items
    )


def test_mining_the_deidentified_export_gives_the_same_boxes(pacs_export, tmp_path):
    key = tmp_path / "secure" / "site.key"
    key.parent.mkdir()
    key.write_text("0123456789abcdef0123456789abcdef")
    deid = tmp_path / "deid"
    rep = deidentify_folder(pacs_export / "dicom", deid, key, linkage_file=tmp_path / "secure" / "linkage.csv")
    assert rep["files_written"] > 0

    original = Miner(str(tmp_path / "mined_orig"), source=FolderSource(pacs_export / "dicom"), workers=1, progress=False)
    original.run()
    # the split depends on patient ids; give both runs the same patient -> split mapping through the linkage
    import csv

    with open(tmp_path / "secure" / "linkage.csv", newline="") as f:
        to_pseudo = {r["patient_id"]: r["pseudonym"] for r in csv.DictReader(f)}
    orig_dl = json.loads((tmp_path / "mined_orig" / "datalist.json").read_text())
    split = {to_pseudo[it["patient"]]: sec for sec, items in orig_dl.items() for it in items}
    (tmp_path / "split.json").write_text(json.dumps(split))
    Miner(str(tmp_path / "mined_deid"), source=FolderSource(deid), split_file=str(tmp_path / "split.json"), workers=1, progress=False).run()
    deid_dl = json.loads((tmp_path / "mined_deid" / "datalist.json").read_text())

    assert _boxes(deid_dl) == _boxes(orig_dl)
    assert sum(len(it["box"]) for items in deid_dl.values() for it in items) > 0
    # patients are pseudonyms, and the mined outputs (datalist, report, NIfTI headers) carry no original id
    assert {it["patient"] for items in deid_dl.values() for it in items} <= set(to_pseudo.values())
    record = json.loads((pacs_export / "record.json").read_text())
    originals = [p["patient"] for p in record["patients"]] + [p["study_instance_uid"] for p in record["patients"]]
    assert find_phi(tmp_path / "mined_deid", originals) == []
