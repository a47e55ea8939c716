"""De-identification: no planted PHI survives, references still resolve, validators see no new errors."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from bundle.deid.deidentify import deidentify_folder
from bundle.deid.options import DeidOptions
from bundle.deid.phi_check import collect_phi_strings, find_phi
from tests.deid import deid_corpus as corpus

SAFE = ["SYNTH SAFE:0031:10"]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = tmp_path_factory.mktemp("deid")
    paths = corpus.write_corpus(root / "export")
    key = root / "secure" / "deid.key"
    key.parent.mkdir()
    key.write_text("0123456789abcdef-test-key\n")
    out = root / "out"
    report = deidentify_folder(root / "export", out, key, {"safe_private": SAFE}, linkage_file=root / "secure" / "linkage.csv")
    return {"root": root, "paths": paths, "key": key, "out": out, "report": report}


def _load(out: Path) -> dict[str, pydicom.Dataset]:
    return {p.relative_to(out).as_posix(): pydicom.dcmread(p) for p in sorted(out.rglob("*.dcm"))}


def _by_modality(out: Path, modality: str) -> list[pydicom.Dataset]:
    return [ds for ds in _load(out).values() if ds.Modality == modality]


def test_no_planted_string_survives_in_any_output_byte(export):
    hits = find_phi(export["out"], corpus.PLANTED)
    assert hits == []
    # the scan itself must be able to fail: the originals are full of the planted strings
    found = {h["string"] for h in find_phi(export["root"] / "export", corpus.PLANTED)}
    assert found == set(corpus.PLANTED)


def test_counts_exclusions_and_errors_are_reported(export):
    report = export["report"]
    assert report["files_seen"] == 9
    assert report["files_written"] == 5  # 3 MR + GSPS + SR
    assert report["excluded_by_reason"] == {"burned_in_annotation_yes": 1, "secondary_capture": 1}
    assert report["failed_by_reason"] == {"corrupt": 1, "not_dicom": 1}  # broken.dcm: its meta ends inside a garbage UID
    assert report["table"]["rules"] > 600  # the whole Annex E table, not a hand-picked list
    for key in ("removed", "emptied", "replaced", "uids_replaced", "dates_shifted", "cleaned", "private_removed", "private_kept"):
        assert report["attributes"][key] > 0, key
    on_disk = json.loads((export["out"] / "deid_report.json").read_text())
    assert on_disk["summary"] == report["summary"]


def test_every_gsps_and_sr_reference_resolves_to_a_deidentified_image(export):
    out = export["out"]
    images = {ds.SOPInstanceUID: ds for ds in _by_modality(out, "MR")}
    assert len(images) == 3
    series = {ds.SeriesInstanceUID for ds in images.values()}
    studies = {ds.StudyInstanceUID for ds in images.values()}
    assert not set(images) & set(corpus.SOP_UIDS)

    (pr,) = _by_modality(out, "PR")
    assert pr.StudyInstanceUID in studies
    for ref_series in pr.ReferencedSeriesSequence:
        assert ref_series.SeriesInstanceUID in series
        for ref in ref_series.ReferencedImageSequence:
            assert ref.ReferencedSOPInstanceUID in images
    (ann,) = pr.GraphicAnnotationSequence
    (ref,) = ann.ReferencedImageSequence
    assert images[ref.ReferencedSOPInstanceUID].InstanceNumber == 2  # the ruler still sits on the second slice
    (ruler,) = ann.GraphicObjectSequence
    assert ruler.GraphicType == "POLYLINE" and list(ruler.GraphicData) == [12.0, 15.0, 22.0, 15.0]

    (sr,) = _by_modality(out, "SR")
    assert sr.StudyInstanceUID in studies
    for study in sr.CurrentRequestedProcedureEvidenceSequence:
        assert study.StudyInstanceUID in studies
        for ser in study.ReferencedSeriesSequence:
            assert ser.SeriesInstanceUID in series
            for ref in ser.ReferencedSOPSequence:
                assert ref.ReferencedSOPInstanceUID in images
    scoords, nums = [], []

    def walk(items):
        for item in items:
            if item.ValueType == "SCOORD":
                scoords.append(item)
                for img in item.ContentSequence:
                    for ref in img.ReferencedSOPSequence:
                        assert ref.ReferencedSOPInstanceUID in images
                        assert images[ref.ReferencedSOPInstanceUID].InstanceNumber == 3
                        if "ReferencedFrameNumber" in ref:
                            assert int(ref.ReferencedFrameNumber) >= 1
            if item.ValueType == "NUM":
                nums.append(float(item.MeasuredValueSequence[0].NumericValue))
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(sr.ContentSequence)
    assert len(scoords) == 1 and list(scoords[0].GraphicData) == [12.0, 15.0, 22.0, 15.0]
    assert nums == [15.0]


def test_uids_and_pseudonyms_are_keyed_and_stable_across_runs(export, tmp_path):
    again = tmp_path / "again"
    deidentify_folder(export["root"] / "export", again, export["key"], {"safe_private": SAFE})
    first, second = _load(export["out"]), _load(again)
    assert set(first) == set(second)  # same paths: <pseudonym>/<study>/<series>/<sop>.dcm
    for name in first:
        assert (export["out"] / name).read_bytes() == (again / name).read_bytes()
    other = tmp_path / "other_key"
    deidentify_folder(export["root"] / "export", other, b"another-key-with-16+bytes", {"safe_private": SAFE})
    assert not set(first) & set(_load(other))
    pseudonyms = {ds.PatientID for ds in first.values()}
    assert len(pseudonyms) == 1 and {str(ds.PatientName) for ds in first.values()} == pseudonyms


def test_one_date_shift_per_patient_and_linkage_table_outside(export):
    rows = list(csv.DictReader(open(export["root"] / "secure" / "linkage.csv")))
    assert len(rows) == 1 and rows[0]["patient_id"] == corpus.PATIENT_ID
    shift = int(rows[0]["date_shift_days"])
    assert -3650 <= shift <= -365
    original = dt.date(2024, 1, 2)
    for ds in _load(export["out"]).values():
        assert rows[0]["pseudonym"] == ds.PatientID
        assert (dt.datetime.strptime(ds.StudyDate, "%Y%m%d").date() - original).days == shift
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
        assert ds.PatientBirthDate in ("", None)
        assert ds.PatientAge == "065Y" and ds.PatientSex == "F"  # Retain Patient Characteristics
    (mr,) = [ds for ds in _load(export["out"]).values() if ds.Modality == "MR" and ds.InstanceNumber == 1]
    assert (dt.datetime.strptime(mr.AcquisitionDateTime[:8], "%Y%m%d").date() - original).days == shift
    assert mr.SeriesDescription == "AX T1 POST GD"  # Clean Descriptors keeps what mining queries on
    assert mr.private_block(0x0031, "SYNTH SAFE")[0x10].value == 1000  # safe-listed private element kept
    assert not any(t.group == 0x0029 for t in mr.keys())
    with pytest.raises(ValueError, match="linkage_file"):
        deidentify_folder(export["root"] / "export", export["out"], export["key"], linkage_file=export["out"] / "sub" / "l.csv")


def test_options_off_remove_what_the_basic_profile_removes(export, tmp_path):
    out = tmp_path / "basic"
    opts = DeidOptions(retain_longitudinal_modified_dates=False, retain_patient_characteristics=False, clean_descriptors=False)
    deidentify_folder(export["root"] / "export", out, export["key"], opts)
    (mr,) = [ds for ds in _by_modality(out, "MR") if ds.InstanceNumber == 1]
    assert "PatientAge" not in mr and mr.PatientSex == ""
    assert "SeriesDescription" not in mr and "ImageComments" not in mr
    assert mr.StudyDate == "" and mr.AcquisitionDateTime == "19000101000000"  # Z, and X/Z/D -> dummy
    assert not any(t.is_private for t in mr.keys())


def test_blank_option_keeps_burned_in_images_with_regions_blanked(export, tmp_path):
    out = tmp_path / "blank"
    opts = {
        "burned_in": "blank",
        "blank_regions": [
            {"modality": "MR", "regions": [[0, 0, 32, 12]]},
            {"sop_class_uid": "1.2.840.10008.5.1.4.1.1.7", "regions": [[0, 0, 32, 32]]},
        ],
    }
    report = deidentify_folder(export["root"] / "export", out, export["key"], opts)
    assert report["files_excluded"] == 0 and report["files_blanked"] == 2 and report["files_written"] == 7
    burned = [ds for ds in _load(out).values() if ds.get("InstanceNumber") == 4]
    assert len(burned) == 1 and burned[0].BurnedInAnnotation == "NO"
    arr = burned[0].pixel_array
    assert (arr[:12] == arr.min()).all() and arr[12:20, 12:22].max() > 0  # only the configured band is blanked
    codes = {item.CodeValue for item in burned[0].DeidentificationMethodCodeSequence}
    assert "113101" in codes  # Clean Pixel Data Option
    assert find_phi(out, corpus.PLANTED) == []


def _dciodvfy_errors(path: Path) -> set[str]:
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return {re.sub(r"\s+", " ", line.strip()) for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")}


def test_dciodvfy_reports_no_new_errors_on_deidentified_annotations(export):
    assert shutil.which("dciodvfy"), "dciodvfy (Debian dicom3tools) must be installed"
    out = export["out"]
    outputs = {ds.Modality: path for path in out.rglob("*.dcm") if (ds := pydicom.dcmread(path, stop_before_pixels=True))}
    for name, modality in (("gsps", "PR"), ("sr", "SR"), ("mr0", "MR")):
        before = _dciodvfy_errors(export["paths"][name])
        after = _dciodvfy_errors(outputs[modality])
        assert after <= before, f"{name}: new errors {after - before}"


def test_phi_check_finds_leftovers_in_nifti_headers_and_json(export, tmp_path):
    import nibabel as nib

    strings = collect_phi_strings(export["root"] / "export")
    assert {"Hargreaves", corpus.PATIENT_ID, corpus.BIRTH_DATE, corpus.SOP_UIDS[0]} <= strings
    img = nib.Nifti1Image(np.zeros((4, 4, 2), dtype=np.int16), np.eye(4))
    img.header["descrip"] = b"ANONQ2 t1c"
    nib.save(img, tmp_path / "clean.nii.gz")
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [{"image": "clean.nii.gz", "patient": "ANONQ2"}]}))
    assert find_phi(tmp_path, strings) == []
    img.header["descrip"] = b"Hargreaves t1c"
    img.header["aux_file"] = corpus.PATIENT_ID.encode()
    nib.save(img, tmp_path / "leaky.nii.gz")
    (tmp_path / "report.json").write_text(json.dumps({"source": corpus.SOP_UIDS[0]}))
    wheres = {(Path(h["file"]).name, h["where"]) for h in find_phi(tmp_path, strings)}
    assert ("leaky.nii.gz", "nifti header descrip") in wheres and ("leaky.nii.gz", "nifti header aux_file") in wheres
    assert ("report.json", "raw") in wheres


def test_bundle_config_runs_with_overrides(export, tmp_path, repo_root):
    from monai.bundle import run

    out = tmp_path / "cfg"
    run(
        config_file=str(repo_root / "configs" / "deidentify.yaml"),
        input_dir=str(export["root"] / "export"),
        output_dir=str(out),
        key_file=str(export["key"]),
        **{"options#safe_private": SAFE},  # the documented override of one DeidOptions key (--options#safe_private on the CLI)
    )
    report = json.loads((out / "deid_report.json").read_text())
    assert report["files_written"] == 5
    fixture_options = json.loads((export["out"] / "deid_report.json").read_text())["options"]
    assert report["options"] == fixture_options  # the config adds nothing to DeidOptions' defaults
    assert sorted(p.relative_to(out) for p in out.rglob("*.dcm")) == sorted(
        p.relative_to(export["out"]) for p in export["out"].rglob("*.dcm")
    )


def test_options_are_the_dataclass_defaults_and_unknown_keys_fail():
    assert DeidOptions.of(None) == DeidOptions()
    opts = DeidOptions.of({"burned_in": "blank", "date_shift_days": [10, 20]})
    assert opts.burned_in == "blank" and opts.date_shift_days == (10, 20) and opts.clean_graphics is True
    with pytest.raises(TypeError, match="burnd_in"):
        DeidOptions.of({"burnd_in": "blank"})  # a typo never falls back to the default silently
    with pytest.raises(ValueError, match="burned_in"):
        DeidOptions(burned_in="ocr")


def test_docs_table_lists_exactly_the_options_of_the_dataclass(repo_root):
    import dataclasses

    text = (repo_root / "docs" / "deidentification.md").read_text()
    section = text.split("## Options", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", section, flags=re.MULTILINE))
    assert documented == {f.name for f in dataclasses.fields(DeidOptions)}
