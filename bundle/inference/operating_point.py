"""The shipped operating point: `operating_point.json` next to the model, read as `score_threshold`'s default.

Why a file beside the weights: the threshold belongs to one set of weights. Volume evaluation
(configs/evaluate_volume.yaml) chooses it on validation volumes and writes it into ckpt_dir;
configs/inference_volume.yaml, the MONAI Label package and the Deploy app read it from there, so a
normal volume in Slicer or in the PACS shows the boxes the validation allowed, not the 50-box cap.

The file records the md5 of the model it was chosen for. When the model beside it has another md5
(retrained, fine-tuned by MONAI Label's /train) `load` warns in one line and still uses the file's
threshold (`on_stale="use"`): a threshold chosen for the model's ancestor is a better guess than an
unvalidated default; `on_stale="default"` falls back to the default instead. Re-run the volume
evaluation to refresh it.

It also records the inference settings its scores came from (``settings``: the grid, the 2.5D stack, the
box selector, linking; configs/inference_volume.yaml ``serving_settings``). A threshold chosen on tracks
boxed one way keeps other boxes on tracks boxed another way, so `load` names each setting that differs
in one warning line (and still uses the threshold, as for another model).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

FILENAME = "operating_point.json"
SCORE_KIND = "logit"  # what the volume path's scores are: the classifier's logit, never saturating like its sigmoid
MODEL_FILES = ("model.pt", "model.ts")
logger = logging.getLogger("brain_mri_tumor_detection.operating_point")


def float32_at_least(x: float) -> float:
    """The smallest float32 >= x: a float32 score passes it exactly when its float64 value passes x.

    Why: evaluation compares float64 scores read from JSON, the serving paths compare float32 tensors
    (torch and NumPy cast a Python threshold to float32, which may round it below a score it excluded).
    """
    f = np.float32(x)
    if float(f) < x:
        f = np.nextafter(f, np.float32(np.inf))
    return float(f)


def file_md5(path: str | Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def logit(p: float) -> float:
    """The classification logit of a probability (the volume path's scores are logits; a default given as 0.3 reads well)."""
    p = float(p)
    if p <= 0.0 or p >= 1.0:
        return -math.inf if p <= 0.0 else math.inf
    return math.log(p / (1.0 - p))


def write_if(flag: Any, ckpt_dir: str | Path, chosen: dict[str, Any]) -> Path | None:
    """:func:`write` when ``flag`` says so; ``--write_operating_point false`` on the command line counts as false.

    Why: ``monai.bundle run`` (python-fire) passes ``false`` through as the string "false", which is truthy: the
    operating point of a model that must not be shipped would be written beside it anyway."""
    if isinstance(flag, str):
        words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "none": False, "": False}
        if flag.strip().lower() not in words:
            raise ValueError(f"write_operating_point: {flag!r} is not true or false")
        flag = words[flag.strip().lower()]
    return write(ckpt_dir, chosen) if flag else None


def write(ckpt_dir: str | Path, chosen: dict[str, Any], model_file: str | Path | None = None) -> Path:
    """Write `<ckpt_dir>/operating_point.json` from a chosen operating point (bundle.metrics.volume.choose_operating_point).

    model_file (default `<ckpt_dir>/model.pt`) is the weights it was chosen for; its md5 goes in the file.
    The threshold is a classification logit (``score_kind``), stored as the smallest float32 >= it, so the
    float32 serving paths keep exactly the boxes evaluation kept. A point that keeps nothing on validation
    is refused: a model shown with no box at all is not a product (the evaluation's report still says so).
    """
    ckpt_dir = Path(ckpt_dir)
    model = Path(model_file) if model_file else ckpt_dir / "model.pt"
    thr = float(chosen["score_threshold"])
    if not math.isfinite(thr):
        raise ValueError(f"{ckpt_dir / FILENAME}: score_threshold must be a finite number, got {thr}")
    if chosen.get("keeps_nothing_on_validation"):
        raise ValueError(
            f"{ckpt_dir / FILENAME}: refusing to ship an operating point that keeps nothing on validation "
            f"(score_threshold {thr}, targets {chosen.get('targets')}); retrain, or loosen max_fp_per_volume / max_fp_per_normal_volume"
        )
    doc = {
        "score_threshold": float32_at_least(thr),
        "score_kind": chosen.get("score_kind", SCORE_KIND),
        **{k: v for k, v in chosen.items() if k not in ("score_threshold", "score_kind")},
        "model_file": model.name,
        "model_md5": file_md5(model) if model.is_file() else None,
    }
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / FILENAME
    path.write_text(json.dumps(doc, indent=1))
    return path


def restamp(ckpt_dir: str | Path, source_md5: str | None = None) -> dict | None:
    """Record the md5 of every model file now in ckpt_dir (packaging converts model.pt and exports model.ts).

    Keeps the md5 it was chosen for as `source_model_md5`. Returns the new document, or None without a file.
    """
    path = Path(ckpt_dir) / FILENAME
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    doc["source_model_md5"] = source_md5 or doc.get("model_md5")
    doc["model_md5_by_file"] = {n: file_md5(Path(ckpt_dir) / n) for n in MODEL_FILES if (Path(ckpt_dir) / n).is_file()}
    doc["model_md5"] = doc["model_md5_by_file"].get(doc.get("model_file", "model.pt"), doc.get("model_md5"))
    path.write_text(json.dumps(doc, indent=1))
    return doc


def is_current(ckpt_dir: str | Path, doc: dict) -> bool | None:
    """True/False: the model file beside it has the recorded md5 or not; None: nothing to compare."""
    ckpt_dir = Path(ckpt_dir)
    known = dict(doc.get("model_md5_by_file") or {})
    if doc.get("model_md5"):
        known.setdefault(doc.get("model_file", "model.pt"), doc["model_md5"])
    for name in MODEL_FILES:  # the file a config loads first: model.pt (inference_volume.yaml), else model.ts
        if (ckpt_dir / name).is_file() and name in known:
            return file_md5(ckpt_dir / name) == known[name]
    return None


def load(ckpt_dir: str | Path, default: float = 0.3, on_stale: str = "use", settings: dict | None = None) -> dict[str, Any]:
    """The operating point for the model in ckpt_dir: {"score_threshold", "source", ...}.

    No file (or an unreadable one): the default, source "default" (an unreadable file warns). A file
    whose md5 does not match the model: one warning line, then its threshold (on_stale "use") or the
    default (on_stale "default"). settings: the inference settings about to run; each that differs from
    the file's is named in one warning and listed in "changed_settings".
    """
    if on_stale not in ("use", "default"):
        raise ValueError(f"operating_point.load: on_stale must be 'use' or 'default', got {on_stale!r}")
    path = Path(ckpt_dir) / FILENAME
    fallback = {"score_threshold": float(default), "source": "default"}
    if not path.is_file():
        return fallback
    try:
        doc = json.loads(path.read_text())
        thr = float(doc["score_threshold"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        logger.warning("%s: not an operating point (%s); using the default score_threshold %s", path, e, default)
        return fallback
    if doc.get("score_kind", "probability") != SCORE_KIND:  # written before scores were logits: its sigmoid threshold as a logit
        logger.warning(
            "%s: a probability threshold %s (before scores were logits); using its logit. Re-run configs/evaluate_volume.yaml.", path, thr
        )
        thr = float32_at_least(logit(thr))
    current = is_current(ckpt_dir, doc)
    if current is False:
        use = on_stale == "use"
        logger.warning(
            "%s: chosen for another model (md5 differs from %s); using %s score_threshold %s. Re-run configs/evaluate_volume.yaml.",
            path,
            doc.get("model_file", "model.pt"),
            "its" if use else "the default",
            thr if use else default,
        )
        if not use:
            return fallback | {"stale_file": str(path)}
    changed = changed_settings(doc.get("settings"), settings)
    if changed:
        logger.warning(
            "%s: chosen with other inference settings (%s); its threshold may keep other boxes than validation allowed. "
            "Re-run configs/evaluate_volume.yaml with these settings.",
            path,
            "; ".join(changed),
        )
    return doc | {"score_threshold": thr, "source": str(path), "current": current, "changed_settings": changed}


def _plain(x: Any) -> Any:
    """JSON's view of a setting (tuples as lists, numbers as read back), so a file and a config compare alike."""
    return json.loads(json.dumps(x, default=str))


def changed_settings(recorded: dict | None, served: dict | None) -> list[str]:
    """'group.key: recorded -> served' for each setting both sides name and that differs; [] when either is absent."""
    if not recorded or not served:
        return []
    rec, now = _plain(recorded), _plain(served)
    out = []
    for group in sorted(set(rec) & set(now)):
        a, b = rec[group], now[group]
        if not (isinstance(a, dict) and isinstance(b, dict)):
            if a != b:
                out.append(f"{group}: {a!r} -> {b!r}")
            continue
        out += [f"{group}.{k}: {a[k]!r} -> {b[k]!r}" for k in sorted(set(a) & set(b)) if a[k] != b[k]]
    return out
