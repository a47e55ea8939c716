"""Checkpoint formats: ``models/model.pt`` holds the network weights alone; training state lives apart.

Why: the model zoo, MONAI Label and ``monai.bundle ckpt_export`` (without ``key_in_ckpt``) read
``model.pt`` as a bare ``state_dict``, which is what ``CheckpointSaver`` writes for a one-entry
``save_dict`` (zoo bundles: ``{"model": "@network"}``). What a resumed training needs besides the
weights (optimizer, scheduler, trainer epoch, the best-model bookkeeping) goes to a separate
state file in ``train_state_dir``, written and read with MONAI's CheckpointSaver/CheckpointLoader.

Bundles before 0.5.0 saved ``{"model": ..., "optimizer": ...}`` as ``model.pt``; every reader here
still accepts it, and ``python -m bundle.engines.checkpoints OLD.pt [NEW.pt]`` converts it.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.transforms import Randomizable, Transform

from bundle.transforms.slices import check_context_slices

logger = logging.getLogger(__name__)

CONVERT_HINT = "python -m bundle.engines.checkpoints {path}"


def _load(path: str | Path, map_location: Any = "cpu") -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        return torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, pickle of arbitrary objects, not a torch file
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def is_old_format(ckpt: Any) -> bool:
    """``{"model": state_dict, "optimizer": ...}``, what bundles before 0.5.0 wrote as model.pt."""
    return isinstance(ckpt, Mapping) and "model" in ckpt and _is_state_dict(ckpt["model"]) and not _is_state_dict(ckpt)


def network_weights(path: str | Path, map_location: Any = "cpu") -> dict[str, torch.Tensor]:
    """The network's ``state_dict`` from ``path``: zoo format (bare) or the pre-0.5.0 ``{"model": ...}``."""
    ckpt = _load(path, map_location)
    if _is_state_dict(ckpt):
        return dict(ckpt)
    if is_old_format(ckpt):
        logger.warning(
            "%s is in the pre-0.5.0 format {'model': ..., 'optimizer': ...}; convert it with: %s", path, CONVERT_HINT.format(path=path)
        )
        return dict(ckpt["model"])
    keys = sorted(ckpt)[:5] if isinstance(ckpt, Mapping) else type(ckpt).__name__
    raise ValueError(f"{path}: not network weights (a state_dict, or {{'model': state_dict, ...}}); found {keys}")


def input_channels(ckpt_dir: str | Path, default: int = 1) -> int:
    """Input channels of the model in ckpt_dir (1: 2D slices; k: 2.5D, k adjacent slices), from its first convolution.

    Why: a 2.5D model (context_slices k) is shipped as the same model.pt (or model.ts alone); every reader
    of it (inference, evaluation, MONAI Label, the Deploy app) builds its network and its k-slice input
    from this, so the model alone says what it takes. No model file: ``default`` (the bare package the zoo
    checks build). ``ckpt_dir`` may also name the model file itself (.pt or .ts). The one reader of ``context_slices``
    at inference; checked once (:func:`bundle.transforms.slices.check_context_slices`: odd, >= 1).
    """
    given = Path(ckpt_dir)
    found = [given] if given.is_file() else [p for p in (given / "model.pt", given / "model.ts") if p.is_file()]
    if not found:
        return int(default)
    path = found[0]
    weights = torch.jit.load(str(path), map_location="cpu").state_dict() if path.suffix == ".ts" else network_weights(path)
    for key, w in weights.items():
        if key.endswith(".weight") and w.ndim >= 4:  # registration order: the stem convolution comes first
            return check_context_slices(int(w.shape[1]))
    raise ValueError(f"{path}: no convolution weight found to read the input channels from")


def convert(src: str | Path, dst: str | Path | None = None) -> bool:
    """Rewrite a pre-0.5.0 ``model.pt`` as the weights alone (in place unless ``dst``); False if already so."""
    ckpt = _load(src)
    dst = Path(dst) if dst else Path(src)
    if _is_state_dict(ckpt):
        if dst != Path(src):
            torch.save(ckpt, str(dst))
        return False
    weights = network_weights(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    torch.save(weights, str(tmp))
    tmp.replace(dst)
    return True


class _BestRecord(BaseSaveHandler):
    """The best-model saver's disk writer, which also writes ``<model>_key_metric.json`` beside each new best.

    Why: the training state is saved every ``train_state_interval`` epochs, but a validation can write
    a new best ``model.pt`` in between (or a run can be killed between the two writes); the record says
    which score the ``model.pt`` on disk has, so a resumed run never replaces it by a worse one.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.path = Path(inner.dirname) / f"{Path(inner.filename).stem}_key_metric.json" if getattr(inner, "filename", None) else None

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        self.inner(checkpoint, filename, metadata)
        if self.path is not None and metadata is not None:
            tmp = self.path.with_name(self.path.name + ".tmp")
            rec = {
                "file": self.inner.filename,
                "filename": filename,
                "priority": float(metadata["priority"]),
                "metric": metadata.get("score_name"),
            }
            tmp.write_text(json.dumps(rec))  # "filename": ignite's name for it in the bookkeeping
            tmp.replace(self.path)

    def remove(self, filename: str) -> None:
        self.inner.remove(filename)

    def saved(self) -> tuple[float, str] | None:
        """(score, file name) of the best model on disk, if both the record and the file are there."""
        try:
            rec = json.loads(self.path.read_text()) if self.path is not None else None
            if rec and (self.path.parent / rec["file"]).is_file():
                return float(rec["priority"]), str(rec["filename"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            logger.warning("ignoring the best-model record %s: %s", self.path, e)
        return None


class KeyMetricState:
    """The best-metric bookkeeping of a ``CheckpointSaver(save_key_metric=True)`` as a state dict.

    Why: saved with the training state, a resumed run replaces ``model.pt`` only by a model that
    beats the best one before the interruption, not by the first one it validates. MONAI's own
    ``key_metric_save_state`` would put this into ``model.pt`` itself, which must stay weights only.
    A best saved after the training state (``_BestRecord``) counts too when it scores higher.
    """

    def __init__(self, saver: Any) -> None:
        self.saver = saver
        ckpt = getattr(saver, "_key_metric_checkpoint", None)
        self.record = None
        if ckpt is not None and not isinstance(ckpt.save_handler, _BestRecord):
            ckpt.save_handler = self.record = _BestRecord(ckpt.save_handler)
        elif ckpt is not None:
            self.record = ckpt.save_handler

    def state_dict(self) -> dict:
        ckpt = getattr(self.saver, "_key_metric_checkpoint", None)
        return dict(ckpt.state_dict()) if ckpt is not None else {"_saved": []}

    def load_state_dict(self, state_dict: Mapping) -> None:
        saved = [tuple(x) for x in state_dict.get("_saved", [])]
        on_disk = self.record.saved() if self.record is not None else None
        if on_disk is not None and (not saved or on_disk[0] > max(float(x[0]) for x in saved)):
            logger.info("best model %s (%g) was saved after the training state; it stays the one to beat", on_disk[1], on_disk[0])
            state_dict = {**state_dict, "_saved": [on_disk]}
        self.saver.load_state_dict(state_dict)


def _randomizables(obj: Any, seen: set[int]) -> list[Randomizable]:
    """Every Randomizable reachable from a transform (Compose lists, wrapped transforms), in a fixed order."""
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    out = [obj] if isinstance(obj, Randomizable) else []
    children = (
        list(obj) if isinstance(obj, (list, tuple)) else [v for _, v in sorted(vars(obj).items())] if hasattr(obj, "__dict__") else []
    )
    for child in children:
        if isinstance(child, (Transform, Randomizable, list, tuple)):
            out += _randomizables(child, seen)
    return out


class ResumeState:
    """Random number generators and the AMP loss scaler of a training, as a state dict (weights_only-safe).

    Why: a run resumed at epoch k should go on as the uninterrupted run would have: the same crops,
    flips and shuffles (torch, numpy, Python and each random transform's own generator, which
    ``set_determinism`` at start-up would otherwise rewind to epoch 1) and, with AMP, the loss
    scale it had learned instead of 65536 again.
    """

    def __init__(self, trainer: Any, transform: Any = None) -> None:
        self.trainer = trainer
        self.transforms = _randomizables(transform, set()) if transform is not None else []

    @staticmethod
    def _np(state: tuple) -> dict:
        return {
            "name": state[0],
            "keys": torch.from_numpy(state[1].astype(np.int64)),
            "pos": int(state[2]),
            "gauss": [int(state[3]), float(state[4])],
        }

    @staticmethod
    def _np_back(d: Mapping) -> tuple:
        return (d["name"], d["keys"].numpy().astype(np.uint32), d["pos"], d["gauss"][0], d["gauss"][1])

    def state_dict(self) -> dict:
        scaler = getattr(self.trainer, "scaler", None)
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": self._np(np.random.get_state()),
            "python": random.getstate(),
            "transforms": [self._np(t.R.get_state()) for t in self.transforms],
            "scaler": scaler.state_dict() if scaler is not None else {},
        }

    def load_state_dict(self, state: Mapping) -> None:
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        np.random.set_state(self._np_back(state["numpy"]))
        random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
        if len(state["transforms"]) == len(self.transforms):
            for t, s in zip(self.transforms, state["transforms"]):
                t.R.set_state(self._np_back(s))
        else:
            logger.warning(
                "training state has %d random transforms, the config %d: their generators start afresh",
                len(state["transforms"]),
                len(self.transforms),
            )
        scaler = getattr(self.trainer, "scaler", None)
        if scaler is not None and state["scaler"]:
            scaler.load_state_dict(state["scaler"])


def _epoch_of(state: Mapping) -> int:
    if not isinstance(state, Mapping) or not isinstance(state.get("trainer"), Mapping):
        raise ValueError("no trainer state in it")
    trainer = state["trainer"]
    if "epoch" in trainer:
        return int(trainer["epoch"])
    return int(trainer.get("iteration", 0)) // max(1, int(trainer.get("epoch_length") or 1))


def _states(state_dir: str | Path) -> list[tuple[int, Path]]:
    """(epoch, file) of every readable training state in state_dir, oldest first."""
    out = []
    for f in sorted(Path(state_dir).glob("*.pt")) if Path(state_dir).is_dir() else []:
        try:
            out.append((_epoch_of(_load(f)), f))
        except (ValueError, AttributeError, TypeError) as e:
            logger.warning("skipping training state %s: %s", f, e)
    return sorted(out)


def resume_path(state_dir: str | Path, max_epochs: int, resume: bool = True) -> str | None:
    """The newest readable, unfinished training state in ``state_dir``, or None to start afresh.

    A state at ``max_epochs`` or beyond is a finished run: running the same config again trains
    anew instead of doing nothing. Unreadable files (a run killed while saving) are skipped.
    """
    if not resume:
        return None
    states = _states(state_dir)
    if not states:
        return None
    epoch, path = states[-1]
    if epoch >= max_epochs:
        logger.warning("training state %s is a finished run (epoch %d of %d): training anew", path, epoch, max_epochs)
        return None
    logger.info("resuming training from %s (epoch %d of %d)", path, epoch, max_epochs)
    return str(path)


def _is_main_process() -> bool:
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def attach_train_state(trainer: Any, saver: Any, load_dict: dict, resume_from: str | None, map_location: Any = None) -> None:
    """Attach the state saver (a CheckpointSaver with ``save_interval``) and, to resume, a CheckpointLoader.

    Why here and not in ``train#handlers``: the state holds the trainer itself, so the handlers
    cannot be built before it. The saver's ``n_saved`` bookkeeping starts empty in every process;
    a resumed run registers the states already saved (so the oldest are removed as new ones come),
    a new run removes the previous run's states (they would outrank its own by epoch). Under
    torch.distributed only rank 0 saves and removes; every rank loads the state it resumes from.
    """
    from monai.handlers import CheckpointLoader

    interval = getattr(saver, "_interval_checkpoint", None)
    if not _is_main_process():  # torchrun: every rank resumes, rank 0 alone saves and cleans up
        interval = saver = None
    if interval is not None:
        states = _states(saver.save_dir)
        keep = (states[-interval.n_saved :] if interval.n_saved else states) if resume_from else []
        for state in states:
            if state not in keep:
                logger.info("removing training state %s (%s)", state[1], "beyond n_saved" if resume_from else "from a previous run")
                state[1].unlink()
        interval.load_state_dict({"_saved": [(epoch, f.name) for epoch, f in keep]})
    if saver is not None:
        saver.attach(trainer)
    if resume_from:
        saved = _load(resume_from)
        missing = sorted(k for k in load_dict if k not in saved)
        if missing:  # a state from an older bundle (e.g. before the RNG state was saved): resume what it has
            logger.warning("training state %s has no %s: those start afresh", resume_from, ", ".join(missing))
        load_dict = {k: v for k, v in load_dict.items() if k in saved}
        CheckpointLoader(load_path=resume_from, load_dict=load_dict, map_location=map_location).attach(trainer)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Convert a pre-0.5.0 model.pt ({'model': ..., 'optimizer': ...}) to the weights alone.")
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path, nargs="?", default=None, help="default: rewrite src in place")
    a = p.parse_args(argv)
    changed = convert(a.src, a.dst)
    print(f"{a.dst or a.src}: {'converted to the weights alone' if changed else 'already the weights alone'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
