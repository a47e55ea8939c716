"""Sharded mining: 3 shards merged equal one run over the whole export, byte for byte; the fast header path agrees with pydicom."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bundle.mining.header import fast_image_info, read_head
from bundle.mining.inspect import inspect_object
from bundle.mining.merge import main as merge_main
from bundle.mining.pipeline import Miner
from bundle.mining.shard import STATE_NAME, read_state, shard_of
from bundle.pacs.folder import FolderSource

ROOT = Path(__file__).resolve().parents[2]


def tree(d: Path, skip: tuple[str, ...] = ("mining_timing.json", STATE_NAME)) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and p.name not in skip}


@pytest.fixture(scope="module")
def single(pacs_export, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single")
    Miner(str(out), FolderSource(pacs_export / "dicom"), workers=2, progress=False).run()
    return out


def test_fast_header_path_reads_every_image_as_pydicom_does(pacs_export):
    root = pacs_export / "dicom"
    fast = 0
    for p in sorted(x for x in root.rglob("*") if x.is_file()):
        loc = p.relative_to(root).as_posix()
        head, size = read_head(p)
        info = fast_image_info(head, size, loc)
        if info is not None:
            fast += 1
            assert inspect_object(p.read_bytes(), loc).image == info, loc
    assert fast > 20  # the plain images took the fast path


def test_shard_is_a_stable_hash():
    assert [shard_of("1.2.3", 3), shard_of("1.2.3", 3)] == [shard_of("1.2.3", 3)] * 2
    assert {shard_of(f"1.2.{i}", 3) for i in range(50)} == {0, 1, 2}
    assert (
        shard_of("1.2.840.113619.2.55.3", 7)
        == int.from_bytes(__import__("hashlib").sha256(b"1.2.840.113619.2.55.3").digest()[:8], "big") % 7
    )


def test_three_shards_merged_equal_one_run(pacs_export, single, tmp_path):
    shards = []
    for i in range(3):
        d = tmp_path / f"shard{i}"
        out = Miner(str(d), FolderSource(pacs_export / "dicom"), workers=1, progress=False, shard_index=i, shard_count=3).run()
        assert out["shard"] == [i, 3]
        assert not (d / "datalist.json").exists()  # a shard's own split would be over its patients only: the merge writes it
        shards.append(d)
    per_shard = [len(read_state(d)["results"]) for d in shards]
    assert all(n > 0 for n in per_shard) and sum(per_shard) == len(FolderSource(pacs_export / "dicom").locations())
    merged = tmp_path / "merged"
    assert merge_main([str(merged)] + [str(d) for d in reversed(shards)]) == 0  # order of the shard folders does not matter
    a, b = tree(single), tree(merged)
    assert sorted(a) == sorted(b)
    assert any(k.startswith("images/") for k in a) and "datalist.json" in a and "mining_report.md" in a
    assert [k for k in a if a[k] != b[k]] == []


def test_shards_merged_with_unlabelled_equal_one_run(tmp_path):
    """`unlabelled: true` travels in the shards' settings: the merge writes the unmeasured series as one run does."""
    from bundle.demo.clinic.config import ExportConfig
    from bundle.demo.pacs_export import export
    from bundle.demo.synth import generate

    generate(tmp_path / "demo", size="tiny", seed=1, n_patients=16)  # more patients than incidents: some go unread
    export(tmp_path / "demo", tmp_path / "pacs", seed=0, config=ExportConfig(p_unread=1.0))
    src = tmp_path / "pacs" / "dicom"
    single = tmp_path / "single"
    Miner(str(single), FolderSource(src), workers=1, progress=False, unlabelled=True).run()
    shards = []
    for i in range(2):
        d = tmp_path / f"shard{i}"
        Miner(str(d), FolderSource(src), workers=1, progress=False, shard_index=i, shard_count=2, unlabelled=True).run()
        assert read_state(d)["settings"]["unlabelled"] is True
        shards.append(d)
    merged = tmp_path / "merged"
    assert merge_main([str(merged), *map(str, shards), "--source_dir", str(src)]) == 0
    a, b = tree(single), tree(merged)
    assert json.loads(a["datalist_unlabelled.json"])["unlabelled"], "the export holds unmeasured contrast series"
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []


def test_merge_refuses_an_incomplete_set(pacs_export, tmp_path, capsys):
    d = tmp_path / "shard0"
    Miner(str(d), FolderSource(pacs_export / "dicom"), workers=1, progress=False, convert=False, shard_index=0, shard_count=2).run()
    assert merge_main([str(tmp_path / "m"), str(d)]) == 2
    assert "need shards 0..1 exactly once each, got [0]" in capsys.readouterr().err


def test_config_shard_keys(pacs_export, tmp_path):
    """The documented commands: mine.yaml with --shard_index/--shard_count (shard 0; shard 1 in-process), then the merge."""
    d0, d1 = tmp_path / "s0", tmp_path / "s1"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/mine.yaml", "--source_dir", str(pacs_export / "dicom"),
           "--output_dir", str(d0), "--progress", "false", "--convert", "false", "--shard_index", "0", "--shard_count", "2"]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    assert read_state(d0)["settings"]["convert"] is False
    Miner(str(d1), FolderSource(pacs_export / "dicom"), progress=False, convert=False, shard_index=1, shard_count=2).run()
    r = subprocess.run(
        [sys.executable, "-m", "bundle.mining.merge", str(tmp_path / "m"), str(d0), str(d1)], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert "merged 2 shards" in r.stdout and (tmp_path / "m" / "datalist.json").is_file()
    assert not (tmp_path / "m" / "images").exists()  # convert false carried over from the shards
