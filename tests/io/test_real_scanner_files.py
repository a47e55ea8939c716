"""Real Siemens and Philips MR files (nibabel's shipped test data) are read, never called corrupt.

Provenance: nibabel (MIT licence) ships these scanner files under nibabel/nicom/tests/data and
nibabel/tests/data: Siemens DWI mosaics, Siemens MR with CSA headers, a Philips Enhanced MR (MPRAGE).
They hold undefined-length sequences, which pydicom 3 yields as parsed `DataElement`s during the raw walk.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel
import pytest

from bundle.io.dicom import UnreadableError, read_dataset

NIBABEL = Path(nibabel.__file__).parent
REAL_MR = sorted(
    p
    for p in [*(NIBABEL / "nicom/tests/data").glob("*.dcm*"), *(NIBABEL / "tests/data").glob("*.dcm")]
    if p.name != "decimal_rescale.dcm"  # a header fragment without SOP UIDs, not a scanner object
)


def _bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if path.suffix == ".gz" else raw


def test_the_corpus_is_there():
    names = {p.name for p in REAL_MR}
    assert {"siemens_dwi_1000.dcm.gz", "philips_mprage.dcm.gz", "0.dcm"} <= names, names


@pytest.mark.parametrize("path", REAL_MR, ids=lambda p: p.name)
def test_real_scanner_file_is_read_whole(path):
    ds = read_dataset(_bytes(path))
    assert ds.Modality == "MR"
    if path.name != "csa_slice_norm.dcm":  # nibabel ships that one without its pixels (CSA header test)
        assert ds.pixel_array.size > 0  # pixels decode too: the file was readable all along


@pytest.mark.parametrize("path", [p for p in REAL_MR if p.name != "csa_slice_norm.dcm"][:3], ids=lambda p: p.name)
def test_truncated_real_file_is_still_corrupt(path):
    raw = _bytes(path)
    with pytest.raises(UnreadableError) as err:
        read_dataset(raw[: len(raw) - 101])
    assert err.value.reason == "corrupt"


def test_cut_delimiter_of_encapsulated_pixels_is_corrupt():
    """Encapsulated pixel data (undefined length) must end with its whole sequence delimiter item."""
    raw = _bytes(NIBABEL / "nicom/tests/data/slicethickness_empty_string.dcm")
    read_dataset(raw)
    with pytest.raises(UnreadableError, match="delimiter"):
        read_dataset(raw[:-3])
