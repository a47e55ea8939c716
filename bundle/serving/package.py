"""Package the bundle for distribution: a folder and a zip with what the configs import, nothing else.

Why: the model zoo and MONAI Label take a bundle folder and put it on ``sys.path``; they never
pip-install us. So the package must carry every ``bundle.*`` module a config reaches (directly or
through imports between our modules) and must not carry tests, caches, data or scripts.

Run it with ``scripts/package_bundle.py`` (``--target monailabel`` for a MONAI Label app's model folder).

``--target monailabel`` makes the volume config (configs/inference_volume.yaml) the bundle's
``inference.yaml`` and describes 3D input / box output in metadata.json, because MONAI Label
serves detection on 3D volumes only and reads those two files.

When there is a ``models/model.pt`` the package gets the zoo's format (the network weights alone;
a pre-0.5.0 ``{"model": ..., "optimizer": ...}`` file is converted), a ``models/model.ts``
exported from it with ``monai.bundle.ckpt_export`` exactly as the zoo's ``ci/verify_bundle.py``
calls it (no ``key_in_ckpt``), and a ``large_files.yml`` that lists exactly those files with
their md5 (``--large-files-url`` fills the download URLs of a release).
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import sys
import zipfile
from pathlib import Path

import yaml

from bundle.inference.operating_point import file_md5
from bundle.paths import ROOT, inline_macros, read_config

NAME = "brain_mri_tumor_detection"
REQUIRED = ["configs/metadata.json", "configs/inference.yaml", "LICENSE", "docs/README.md"]
LARGE_FILES = ["models/model.pt", "models/model.ts"]
_MODULE_RE = re.compile(r"\bbundle(?:\.[A-Za-z_]\w*)+")


def _strings(node) -> list[str]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in _strings(k) + _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def _module_file(root: Path, dotted: str) -> Path | None:
    """Longest prefix of ``dotted`` that is a module or package under root (``bundle.a.B`` -> bundle/a.py)."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        base = root.joinpath(*parts[:n])
        if base.with_suffix(".py").is_file():
            return base.with_suffix(".py")
        if (base / "__init__.py").is_file():
            return base / "__init__.py"
    return None


def _imports_of(path: Path, root: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    pkg = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "bundle")
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:  # relative import
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([mod] if mod else []))
            if mod.split(".")[0] == "bundle":
                out.add(mod)
                out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def bundle_modules(root: Path = ROOT, config_files: list[Path] | None = None) -> list[Path]:
    """Every bundle/ file the configs need: referenced modules, their bundle imports, package __init__s."""
    config_files = config_files or sorted((root / "configs").glob("*.yaml")) + sorted((root / "configs").glob("*.json"))
    todo: set[str] = set()
    for cfg in config_files:
        doc = yaml.safe_load(cfg.read_text()) if cfg.suffix == ".yaml" else json.loads(cfg.read_text())
        for s in _strings(doc):
            todo.update(_MODULE_RE.findall(s))
    seen: set[Path] = set()
    while todo:
        dotted = todo.pop()
        f = _module_file(root, dotted)
        if f is None or f in seen:
            continue
        seen.add(f)
        todo.update(_imports_of(f, root))
    # packages on the way need their __init__.py
    for f in list(seen):
        for parent in f.relative_to(root).parents:
            init = root / parent / "__init__.py"
            if parent.parts and init.is_file():
                seen.add(init)
    return sorted(seen)


def monailabel_metadata(meta: dict) -> dict:
    """metadata.json as MONAI Label reads it: 3D image in, boxes with label 'tumor' out."""
    meta = json.loads(json.dumps(meta))
    inp = meta["network_data_format"]["inputs"]["image"]
    inp["spatial_shape"] = ["*", "*", "*"]
    inp["is_patch_data"] = False
    out = meta["network_data_format"]["outputs"]["pred"]
    out["num_channels"] = 8
    out["spatial_shape"] = ["n", "8"]
    out["channel_def"] = {"0": "tumor"}
    meta["pred_classes"] = (
        "3D boxes per volume, world LPS cccwhd in MONAI Label (slice-wise 2D model, boxes linked across slices), label 0 = tumor"
    )
    return meta


def describe_input(meta: dict, k: int) -> dict:
    """network_data_format for a model of ``k`` input channels: a 2.5D model takes each slice with its neighbours."""
    meta = json.loads(json.dumps(meta))
    inp = meta["network_data_format"]["inputs"]["image"]
    inp["num_channels"] = k
    h = k // 2
    inp["channel_def"] = {str(i): "image" if k == 1 else f"slice z{i - h:+d}" if i != h else "slice z" for i in range(k)}
    return meta


def export_torchscript(out: Path) -> Path:
    """models/model.ts from the package's model.pt, with the zoo's own call (``ckpt_export``, no ``key_in_ckpt``)."""
    from monai.bundle import ckpt_export

    ts = out / "models" / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(ts),
        ckpt_file=str(out / "models" / "model.pt"),
        meta_file=str(out / "configs" / "metadata.json"),
        config_file=str(out / "configs" / "inference.yaml"),
        bundle_root=str(out),
    )
    return ts


def write_large_files(out: Path, url_base: str = "") -> list[dict]:
    """large_files.yml: the package's model files, each with its md5; url empty unless a release hosts them."""
    entries = []
    for rel in LARGE_FILES:
        if (out / rel).is_file():
            url = f"{url_base.rstrip('/')}/{Path(rel).name}" if url_base else ""
            entries.append({"path": rel, "url": url, "hash_val": file_md5(out / rel), "hash_type": "md5"})
    head = (
        "# Written by scripts/package_bundle.py: exactly the large files this package holds, with their md5.\n"
        "# Files over the zoo's 25 MB limit leave the package; their url then says where to download them.\n"
    )
    (out / "large_files.yml").write_text(head + yaml.safe_dump({"large_files": entries}, sort_keys=False))
    return entries


def ship_operating_point(models: Path, out: Path) -> dict | None:
    """The package's models/operating_point.json, with the md5s of the packaged model files.

    The threshold lives in that file only: the configs read it at run time (``operating_point.load``), so
    packaging copies the file and rewrites no config. The package's model.pt may be converted and model.ts
    is exported here, so their md5s are recorded anew (restamp), unless the source file was already stale
    for its model: then it stays as it was, and inference warns as it would have.
    """
    from bundle.inference import operating_point

    src = models / operating_point.FILENAME
    if not src.is_file():
        return None
    doc = json.loads(src.read_text())
    if operating_point.is_current(models, doc) is False:
        print(f"{src}: chosen for another model (md5); packaged as is, re-run configs/evaluate_volume.yaml", file=sys.stderr)
        return doc
    return operating_point.restamp(out / "models", doc.get("model_md5")) or doc


def _copy_sources(out: Path, root: Path, models: Path) -> None:
    """The modules the configs reach, configs, docs, licence, the model file, its operating point and canonical grid."""
    from bundle.inference import operating_point
    from bundle.transforms import grid

    files: list[Path] = []
    files += bundle_modules(root)
    files += sorted(p for p in (root / "configs").iterdir() if p.is_file())
    files += sorted(p for p in (root / "docs").rglob("*") if p.is_file())
    files += [root / "LICENSE"]
    # model.ts is exported from model.pt below, so a stale one is never shipped beside it
    if (models / "model.pt").is_file():
        files.append(models / "model.pt")
    elif (models / "model.ts").is_file():
        files.append(models / "model.ts")
    if (models / operating_point.FILENAME).is_file():  # the validated threshold travels with its model
        files.append(models / operating_point.FILENAME)
    if (models / grid.FILENAME).is_file():  # and the canonical grid it was trained on (every serving path resamples to it)
        files.append(models / grid.FILENAME)
    for f in files:
        rel = Path("models") / f.name if f.parent == models else f.relative_to(root)
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel.parts[0] == "configs" and f.suffix == ".yaml":  # each config stands alone (configs/network.yaml's keys inlined)
            dst.write_text(inline_macros(f.read_text(), root))
        else:
            shutil.copy2(f, dst)


def _as_monailabel(out: Path, root: Path) -> None:
    """MONAI Label serves detection on volumes: the volume config becomes inference.yaml, train.yaml trains on volumes."""
    from monai.bundle import ConfigParser

    (out / "configs" / "inference.yaml").write_text(inline_macros((root / "configs" / "inference_volume.yaml").read_text(), root))
    meta = monailabel_metadata(json.loads((root / "configs" / "metadata.json").read_text()))
    (out / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2))
    parser = ConfigParser()
    read_config(parser, [root / "configs" / "train.yaml", root / "configs" / "train_volume.yaml"], root)  # network.yaml's keys in
    # MONAI Label fine-tunes from models/model.pt on every /train request ("pretrained"); a saved
    # training state from the previous request would make the next one resume instead
    parser["resume"] = False
    parser["train_state_interval"] = 0
    ConfigParser.export_config_file(parser.get(), str(out / "configs" / "train.yaml"), fmt="yaml", default_flow_style=None, sort_keys=False)


def package(
    out: Path,
    root: Path = ROOT,
    target: str = "zoo",
    make_zip: bool = True,
    models_dir: Path | None = None,
    large_files_url: str = "",
) -> dict:
    """Write the bundle folder (and ``<out>.zip``); return the manifest (relative paths).

    ``models_dir`` (default ``<root>/models``) is where model.pt (or, without it, model.ts) is taken from.
    """
    from bundle.engines.checkpoints import convert, input_channels

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    models = Path(models_dir) if models_dir else root / "models"
    _copy_sources(out, root, models)
    if target == "monailabel":
        _as_monailabel(out, root)
    k = input_channels(out / "models")  # the packaged model's input, in the metadata the zoo's checks feed it by
    meta_path = out / "configs" / "metadata.json"
    meta_path.write_text(json.dumps(describe_input(json.loads(meta_path.read_text()), k), indent=2))
    if (out / "models" / "model.pt").is_file():
        if convert(out / "models" / "model.pt"):
            print(f"{models / 'model.pt'} is in the pre-0.5.0 format; the package holds its weights alone", file=sys.stderr)
        export_torchscript(out)
    ship_operating_point(models, out)
    write_large_files(out, large_files_url)
    manifest = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    missing = [r for r in REQUIRED if r not in manifest]
    if missing:
        raise FileNotFoundError(f"bundle at {out} lacks required files: {missing}")
    if make_zip:
        with zipfile.ZipFile(out.with_suffix(".zip"), "w", zipfile.ZIP_DEFLATED) as z:
            for rel in manifest:
                z.write(out / rel, f"{out.name}/{rel}")
    return {"folder": str(out), "zip": str(out.with_suffix(".zip")) if make_zip else None, "files": manifest}
