"""`python -m bundle.mining` (the lean reader, no monai) runs configs/mine.yaml exactly as `python -m monai.bundle run` does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bundle.mining.__main__ import main
from bundle.mining.config import Config, Unsupported, literal, load_file

ROOT = Path(__file__).resolve().parents[2]
NOT_COMPARED = ("mining_timing.json",)  # seconds and objects/s: the only fields two runs may differ in


def tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and p.name not in NOT_COMPARED}


def test_lean_command_writes_the_bytes_monai_bundle_run_writes(pacs_export, tmp_path):
    """datalist.json, datalist_volumes.json, the report, every converted slice and volume: byte for byte."""
    args = ["--config_file", "configs/mine.yaml", "--source_dir", str(pacs_export / "dicom"), "--split_file", str(pacs_export / "record.json"),
            "--progress", "false", "--box_rules#min_long_mm", "5", "--workers", "2"]  # fmt: skip
    outs = {}
    for name, cmd in (("monai", ["-m", "monai.bundle", "run"]), ("lean", ["-m", "bundle.mining"])):
        outs[name] = tmp_path / name
        r = subprocess.run([sys.executable, *cmd, *args, "--output_dir", str(outs[name])], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    a, b = tree(outs["monai"]), tree(outs["lean"])
    assert {"datalist.json", "datalist_volumes.json", "mining_report.json", "mining_report.md"} <= set(a)
    assert any(k.startswith("images/") for k in a) and any(k.startswith("volumes/") for k in a)
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []
    assert b'"min_long_mm": 5' in b["mining_report.json"]  # the nested override reached the rules


def _plain(obj) -> dict:
    """An object's plain attributes (a client or session object: its type only)."""
    simple = (str, int, float, bool, list, tuple, dict, Path, type(None))
    return {"type": type(obj).__name__, **{k: v if isinstance(v, simple) else type(v).__name__ for k, v in vars(obj).items()}}


@pytest.mark.parametrize("source", ["@folder_source", "@dicomweb_source", "@dimse_source"])
def test_lean_reader_builds_the_miner_monai_builds(pacs_export, tmp_path, source):
    """Every source the config defines, with nested and typed overrides: the same Miner settings and source attributes."""
    from monai.bundle import ConfigParser

    overrides = {"source": source, "source_dir": str(pacs_export / "dicom"), "output_dir": str(tmp_path / "out"),
                 "dimse_cache": str(tmp_path / "cache"), "box_rules#min_long_mm": 5, "series_rules#require_axial": "false",
                 "date_from": 20200101, "dicomweb_auth#kind": "none"}  # fmt: skip
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "mine.yaml"))
    parser.update(overrides)
    theirs = parser.get_parsed_content("miner")
    cfg = Config(load_file(ROOT / "configs" / "mine.yaml"))
    for k, v in overrides.items():
        cfg.set(k, v)
    ours = cfg.get("miner")
    assert type(ours) is type(theirs) and ours.settings() == theirs.settings()
    assert _plain(ours.source) == _plain(theirs.source)
    assert (ours.workers, ours.shard_count, ours.reuse_dirs) == (theirs.workers, theirs.shard_count, theirs.reuse_dirs)


def test_lean_command_imports_neither_monai_nor_torch(pacs_export, tmp_path):
    script = (
        "import sys; from bundle.mining.__main__ import main; "
        f"rc = main(['--config_file', 'configs/mine.yaml', '--source_dir', {str(pacs_export / 'dicom')!r}, '--output_dir', "
        f"{str(tmp_path / 'out')!r}, '--progress', 'false', '--convert', 'false', '--volumes', 'false']); "
        "print(rc, sorted(m for m in ('monai', 'torch') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert r.stdout.strip().splitlines()[-1] == "0 []", r.stdout + r.stderr
    assert (tmp_path / "out" / "datalist.json").is_file()


@pytest.mark.parametrize(
    "text", ["false", "True", "5", "2.5", "20240101", "/data/export", "split.json", "@dicomweb_source", "[a, 1]", "a,b", "None"]
)
def test_command_line_values_read_as_monai_bundle_reads_them(text):
    fire_parser = pytest.importorskip("fire.parser")  # what `python -m monai.bundle` parses its arguments with
    expected = fire_parser.DefaultParseValue(text)
    assert literal(text) == expected and type(literal(text)) is type(expected)


def test_references_resolve_lazily_once_and_nested_overrides_apply():
    cfg = Config(
        {
            "imports": ["$import os.path as osp"],
            "root": "/data",
            "out": "$osp.join(@root, 'mined') + '/x'",
            "shared": {"_target_": "builtins.dict", "a": 1},
            "user": {"_target_": "builtins.list", "_mode_": "callable"},
            "pair": ["@shared", "@shared#a", "$@shared['a'] * -2"],
            "off": {"_target_": "no.such.module.Thing", "_disabled_": True},
            "never": {"_target_": "no.such.module.Thing"},  # not referenced: never located
        }
    )
    cfg.set("shared#a", 7)
    cfg.set("root", "/other")
    assert cfg.get("out") == "/other/mined/x"
    pair = cfg.get("pair")
    assert pair[0] is cfg.get("shared") and pair[0] == {"a": 7} and pair[1:] == [7, -14]
    assert cfg.get("user") is list and cfg.get("off") is None
    with pytest.raises(Unsupported, match="importable dotted path"):
        cfg.get("never")


@pytest.mark.parametrize(
    "value, what",
    [
        ("$[x for x in 'ab']", "ListComp expressions"),
        ("$@root.__class__", "private attribute '__class__'"),
        ("$torch.device('cpu')", "name 'torch'"),
        ("$@root if True else 1", "IfExp expressions"),
    ],
)
def test_what_the_reader_cannot_evaluate_is_one_line_naming_monai_bundle_run(tmp_path, capsys, value, what):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f'root: /data\nrun:\n  - "{value}"\n')
    assert main(["--config_file", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and what in err[0] and "python -m monai.bundle run" in err[0], err
