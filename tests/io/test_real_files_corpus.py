"""Every real scanner/archive file the installed packages ship goes through de-identification and mining cleanly.

The corpus, its provenance and licences, and the run are in tests/io/real_files.py; docs/real_files.md is that
run's table. Checks: every file has an outcome with a reason, no traceback, no internal failure, no original
patient name or ID in any output byte, no readable file called corrupt, and the page is current.
"""

from __future__ import annotations

import pytest

from tests.io import real_files


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    return real_files.run_corpus(tmp_path_factory.mktemp("real_files"))


def test_the_corpus_holds_real_scanner_files(corpus_run):
    names = set(corpus_run.files)
    # Siemens DWI mosaic, Philips Enhanced MR, Siemens MR with a lesion overlay, a real MR series of a DICOMDIR export
    assert {
        "nibabel/nicom/siemens_dwi_1000.dcm",
        "nibabel/nicom/philips_mprage.dcm",
        "pydicom-data/MR-SIEMENS-DICOM-WithOverlays.dcm",
    } <= names
    assert sum(f.startswith("pydicom/dicomdirtests/98892003/MR700/") for f in names) >= 5
    assert len(names) >= 250, len(names)


@pytest.mark.parametrize("index", range(6))
def test_check(corpus_run, index):
    name, got, want = real_files.checks(corpus_run)[index]
    assert got == want, (name, got, want)


def test_scanner_mr_files_are_read_and_written(corpus_run):
    for rel in ("nibabel/nicom/siemens_dwi_1000.dcm", "nibabel/nicom/philips_mprage.dcm", "pydicom-data/emri_small.dcm"):
        assert corpus_run.deid[rel] == "written", rel
        assert corpus_run.mined[rel].startswith("read"), rel
        assert corpus_run.mined_deid[rel].startswith("read"), rel


def test_damaged_and_odd_files_get_their_reason(corpus_run):
    expected = {
        "pydicom/badVR.dcm": ("failed: invalid_attribute", "invalid_attribute"),  # NumberOfFrames '1A'
        "pydicom-data/emri_small_jpeg_2k_lossless_too_short.dcm": ("failed: corrupt", "corrupt"),
        "pydicom/MR_truncated.dcm": ("failed: corrupt", "corrupt"),
        # headerless RT plans, one UID in two byte orders: de-identification writes one; mining reads no RT plan
        "pydicom/ExplVR_LitEndNoMeta.dcm": (
            "excluded: duplicate_differing_copy (kept pydicom/ExplVR_BigEndNoMeta.dcm)",
            "unsupported_object",
        ),
        "pydicom/rtstruct.dcm": ("written", "unsupported_object"),  # no preamble, no meta: read, written with a meta header
        "pydicom/UN_sequence.dcm": ("failed: missing_sop_uids", "missing_sop_uids"),
        "pydicom/dicomdirtests/DICOMDIR": ("failed: dicomdir", "dicomdir"),
    }
    for rel, (deid, mined) in expected.items():
        assert (corpus_run.deid[rel], corpus_run.mined[rel]) == (deid, mined), rel


def test_copies_of_one_instance_are_reported_never_overwritten(corpus_run):
    rep = corpus_run.deid_report
    written = [o for o in corpus_run.deid_output.values()]
    assert len(written) == len(set(written)) == rep["files_written"]  # one input per output file
    dups = [e for e in rep["excluded"] if e["reason"].startswith("duplicate_")]
    assert dups and all(e["kept_input_sha256"] and "kept" in e["detail"] for e in dups)
    # MR_small in eight transfer syntaxes: the first copy is written, the seven re-encodings have the same pixels
    for rel in ("pydicom/MR_small_RLE.dcm", "pydicom/MR_small_bigendian.dcm", "pydicom/MR_small_jpeg_ls_lossless.dcm"):
        assert corpus_run.deid[rel] == "excluded: duplicate_same_pixels (kept pydicom/MR_small.dcm)"
        assert corpus_run.mined[rel] == "duplicate_same_pixels"
    mined_dups = [i for i in corpus_run.mining_report["file_issues"] if i["reason"].startswith("duplicate_")]
    assert corpus_run.mining_report["counts"]["duplicate_copies"] == len(mined_dups) > 0
    assert all("kept" in i["detail"] for i in mined_dups)


def test_mr_series_go_through_volume_inference(corpus_run):
    series = corpus_run.extra["series_inferred"]
    assert len(series) >= 10
    assert any(o.startswith("boxes: ") for o in series.values())  # a real MR series ran through the detector
    assert corpus_run.inferred["pydicom-data/emri_small.dcm"].startswith("refused: 10 frames without per-frame")
    assert corpus_run.inferred["nibabel/nicom/philips_mprage.dcm"] == "refused: is blank"  # nibabel ships it with zeroed pixels


def test_the_page_is_current(corpus_run):
    assert real_files.PAGE.read_text() == real_files.page(corpus_run), "run: python tests/io/real_files.py"
