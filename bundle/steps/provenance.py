"""What an evaluation ran: the git commit (with a digest of uncommitted changes), the configs, the overrides, the model.

Why: cached evaluations were keyed by the checkpoint path alone, so figures written by older code or by
another config were read back as if current (issue 24: a results page no rerun reproduced). Every volume
evaluation is stamped with this, and a cached result is reused only when its stamp equals the one the
step would run with now; otherwise it runs again.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from bundle.paths import ROOT
from bundle.steps.runner import bundle_run

STAMP = "provenance.json"
CODE_DIRS = ("bundle", "configs")  # what decides a figure; docs and tests do not


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def git_state(root: str | Path = ROOT) -> dict[str, Any]:
    """The commit, and whether (and how) the code differs from it: an md5 of ``git diff HEAD`` over bundle/ and configs/.

    Untracked files under those folders count too (their paths and contents). No git (a zoo or MONAI Label copy):
    commit None, and the stamp still records the configs and the model.
    """

    def git(*args: str) -> bytes:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, check=True, timeout=60).stdout

    try:
        commit = git("rev-parse", "HEAD").decode().strip()
        diff = git("diff", "HEAD", "--", *CODE_DIRS)
        untracked = git("ls-files", "--others", "--exclude-standard", "--", *CODE_DIRS).decode().split()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "dirty_md5": None}
    for name in sorted(untracked):
        p = Path(root) / name
        diff += name.encode() + (p.read_bytes() if p.is_file() else b"")
    dirty = bool(diff)
    return {"commit": commit, "dirty": dirty, "dirty_md5": _md5(diff) if dirty else None}


def stamp(configs: str | list[str], overrides: dict[str, Any], model: str | Path | None = None, root: str | Path = ROOT) -> dict:
    """The stamp of one ``monai.bundle run``: code state, each config file's md5, the overrides (as passed), the model's md5."""
    names = [configs] if isinstance(configs, str) else list(configs)
    files = {n: (_md5((Path(root) / n).read_bytes()) if (Path(root) / n).is_file() else None) for n in names}
    m = Path(model) if model else None
    return {
        "git": git_state(root),
        "configs": files,
        "overrides": {k: str(v) for k, v in sorted(overrides.items())},
        "model_md5": _md5(m.read_bytes()) if m and m.is_file() else None,
    }


def run_or_reuse(configs: str | list[str], out: Path, result: str, log: str | Path, model: Path | None = None, **overrides) -> dict:
    """``bundle_run(configs, **overrides)`` unless ``out/result`` was written by the same stamp; the result, stamped.

    A result without a stamp, or with another one (other commit or uncommitted code, config, overrides, model), runs again.
    """
    now = stamp(configs, overrides, model)
    res, st = Path(out) / result, Path(out) / STAMP
    if res.is_file() and st.is_file() and json.loads(st.read_text()) == now:
        return json.loads(res.read_text())
    st.unlink(missing_ok=True)
    bundle_run(configs, ROOT, log, **overrides)
    doc = json.loads(res.read_text())
    doc.setdefault("provenance", {})["run"] = now
    res.write_text(json.dumps(doc, indent=2))
    st.write_text(json.dumps(now, indent=1))
    return doc
