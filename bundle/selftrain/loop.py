"""The self-training loop: teacher -> pseudo-boxes on its own training images -> student -> repeat.

Why a loop of plain bundle runs: each round is the same training a user runs by hand, on a
datalist this module writes; a ``state.json`` records finished rounds, so an interrupted run
resumes at the last finished round instead of starting over.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bundle.datalist.rules import from_config
from bundle.datalist.sections import absolute_datalist, spacing_of
from bundle.inference.predictions import load_predictions
from bundle.metrics.matching import best_f1_threshold, match_image, threshold_for_precision
from bundle.paths import ROOT
from bundle.selftrain.pseudo import PseudoRules, expand_datalist, write_datalist
from bundle.steps.runner import bundle_run


def validation_matches(datalist: dict, predictions_path: str, section: str = "validation", iou_threshold: float = 0.5) -> list:
    """Every validation image's predictions matched to its (complete) truth."""
    preds = load_predictions(predictions_path)
    empty = {"box": [], "score": []}
    matches = []
    for t in datalist[section]:
        p = preds.get(str(Path(t["image"]).resolve()), empty)
        matches.append(match_image(p["box"], p["score"], t["box"], iou_threshold=iou_threshold, where=t["image"]))
    return matches


def validation_f1(datalist: dict, predictions_path: str, section: str = "validation", iou_threshold: float = 0.5) -> dict:
    """Max F1 on the validation section (the quantity the stopping rule watches)."""
    thr, best = best_f1_threshold(validation_matches(datalist, predictions_path, section, iou_threshold))
    return best | {"threshold": thr}


def pseudo_quality(datalist: dict, truth: dict[str, list], round_index: int, iou_threshold: float = 0.3) -> dict:
    """Precision and recall of this round's pseudo-boxes against the complete truth (demo data only).

    truth: image path -> every lesion box on that image. Recall counts the lesions the mined
    boxes missed; precision counts pseudo-boxes that land on one of them.
    """
    tp = n_pseudo = n_missing = found = 0
    for item in datalist["training"]:
        dims = len(item["box"][0]) if item.get("box") else 4
        full = np.asarray(truth.get(item["image"], []), dtype=float).reshape(-1, dims)
        src, rnd = item.get("box_source", []), item.get("box_round", [])
        boxes = np.asarray(item.get("box", []), dtype=float).reshape(-1, dims)
        mined = boxes[[s == "mined" for s in src]] if len(boxes) else boxes
        pseudo = boxes[[s == "pseudo" and r == round_index for s, r in zip(src, rnd)]] if len(boxes) else boxes
        # truth lesions the radiologist did not measure
        if len(full) and len(mined):
            m = match_image(mined, np.ones(len(mined)), full, iou_threshold=iou_threshold)
            measured = set(m.matched_truth[m.tp].tolist())
        else:
            measured = set()
        missing = [j for j in range(len(full)) if j not in measured]
        n_missing += len(missing)
        n_pseudo += len(pseudo)
        if len(pseudo) and len(missing):
            m = match_image(pseudo, np.ones(len(pseudo)), full[missing], iou_threshold=iou_threshold)
            tp += int(m.tp.sum())
            found += int(m.tp.sum())
    return {
        "iou_threshold": iou_threshold,
        "pseudo_boxes": n_pseudo,
        "correct": tp,
        "precision": tp / n_pseudo if n_pseudo else None,
        "unmeasured_lesions": n_missing,
        "recovered": found,
        "recall": found / n_missing if n_missing else None,
    }


@dataclass
class Schedule:
    """How the rounds run; defaults here, configs/self_train.yaml overrides keys (`--schedule#rounds 1`)."""

    rounds: int = 2  # N: stop after N student rounds, or earlier when validation F1 stops improving
    target_precision: float = 0.5  # with score_threshold 'auto' (docs/selftraining.md: a fixed 0.95 collapsed round 2)
    from_scratch: bool = True  # False: the student starts from the teacher's weights
    cumulative: bool = False  # True: keep earlier rounds' pseudo-boxes; False: mined boxes + this teacher's only
    # True: the datalist holds whole series (configs/train_series.yaml); the teacher labels every slice of every
    # training series through configs/inference_volume.yaml with linking off (one box per slice detection)
    series: bool = False

    def __post_init__(self) -> None:
        for name in ("from_scratch", "cumulative", "series"):  # "false" from a command line is not True
            v = getattr(self, name)
            if isinstance(v, str):
                setattr(self, name, v.strip().lower() in ("1", "true", "yes"))


class SelfTraining:
    """Runs rounds into ``work_dir``; every artefact of round r lives in ``work_dir/round<r>/``."""

    def __init__(
        self,
        work_dir: str,
        datalist: str,
        rules: PseudoRules,
        schedule: Schedule | None = None,
        train_overrides: dict | None = None,
        truth: str | None = None,
        log_path: str | None = None,
    ) -> None:
        self.work = Path(work_dir)
        self.datalist_path = str(datalist)
        self.rules = rules
        schedule = schedule or Schedule()
        self.rounds = schedule.rounds
        self.target_precision = schedule.target_precision
        self.from_scratch = schedule.from_scratch
        self.cumulative = schedule.cumulative
        self.series = schedule.series
        self.overrides = dict(train_overrides or {})
        self.truth = json.loads(Path(truth).read_text()) if truth else None
        self.log = log_path or str(self.work / "self_train.log")
        self.state_path = self.work / "state.json"

    # ---- state -------------------------------------------------------------------------------
    def load_state(self) -> dict:
        if self.state_path.exists():
            return json.loads(self.state_path.read_text())
        return {"rounds": []}

    def save_state(self, state: dict) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_path)  # atomic: a kill never leaves half a state file

    def rules_for(self, teacher: dict) -> tuple[PseudoRules, dict]:
        """The rules for this teacher; 'auto' sets the score threshold from its validation predictions.

        Why: every model has its own score scale. On the demo a fixed 0.95 was where the round-0
        teacher reached precision 0.50 on the fully annotated validation patients (its pseudo-boxes:
        precision 0.81), but the round-1 student, more confident, had precision 0.27 there; its
        round-2 pseudo-boxes had precision 0.58 and validation F1 fell from 0.756 to 0.558.
        'auto' keeps the teacher's validation precision at `target_precision` whatever its scale.
        """
        if self.rules.score_threshold != "auto":
            return self.rules, {"score_threshold": self.rules.score_threshold, "rule": "fixed"}
        dl = absolute_datalist(teacher["datalist"])
        matches = validation_matches(dl, str(Path(teacher["dir"]) / "predictions_validation.json"))
        thr, at = threshold_for_precision(matches, self.target_precision)
        info = {"score_threshold": thr, "rule": f"validation precision >= {self.target_precision}", "teacher_validation_at_threshold": at}
        return replace(self.rules, score_threshold=min(thr, 1.0 + 1e-9)), info

    # ---- steps -------------------------------------------------------------------------------
    def _train(self, rdir: Path, datalist_path: str, init_ckpt: str | None) -> None:
        over = self.overrides | {
            "bundle_root": ROOT,
            "data_list_file_path": datalist_path,
            "dataset_dir": Path(datalist_path).parent,
            "ckpt_dir": rdir / "models",
            "output_dir": rdir / "train_eval",
        }
        if init_ckpt:
            over["pretrained_ckpt"] = init_ckpt
        bundle_run(["configs/train.yaml", "configs/train_series.yaml"] if self.series else "configs/train.yaml", ROOT, self.log, **over)

    def _predict(self, model_dir: Path, datalist_path: str, section: str, out: Path) -> str:
        if self.series:
            return self._predict_slices(model_dir, datalist_path, section, out)
        bundle_run(
            "configs/inference.yaml",
            ROOT,
            self.log,
            quiet=True,
            bundle_root=ROOT,
            ckpt_dir=model_dir / "models",
            data_list_file_path=datalist_path,
            dataset_dir=Path(datalist_path).parent,
            data_list_key=section,
            output_path=out,
            score_threshold=0.0,
            **{k: v for k, v in self.overrides.items() if k in ("val_patch_size",)},
        )
        return str(out)

    def _predict_slices(self, model_dir: Path, datalist_path: str, section: str, out: Path) -> str:
        """Every slice of every volume of a section, each detection its own one-slice 3D box (linking off)."""
        paths = [it["image"] for it in absolute_datalist(datalist_path)[section]]
        listing = Path(out).with_suffix(".inputs.json")
        listing.write_text(json.dumps(paths))
        keys = ("val_patch_size", "context_slices")
        bundle_run(
            "configs/inference_volume.yaml",
            ROOT,
            self.log,
            quiet=True,
            bundle_root=ROOT,
            ckpt_dir=model_dir / "models",
            datalist=f"$[{{'image': p}} for p in json.load(open('{listing}'))]",
            output_path=out,
            score_threshold=0.0,
            link_iou=2.0,  # never link: every slice detection stays a box of its own slice
            link_nms_thresh=1.0,
            max_boxes=100000,
            **{k: v for k, v in self.overrides.items() if k in keys},
        )
        return str(out)

    def run(self) -> dict:
        state = self.load_state()
        base = absolute_datalist(self.datalist_path)
        if state.get("early_stop"):
            print(f"self-training already finished: {state['early_stop']}")
        while len(state["rounds"]) <= self.rounds and not state.get("early_stop"):
            r = len(state["rounds"])
            rdir = self.work / f"round{r}"
            if r == 0:
                dl, stats = base, {"round": 0, "boxes_added": 0}
            else:
                teacher_dir = Path(state["rounds"][state["best_round"]]["dir"])
                src = absolute_datalist(state["rounds"][-1]["datalist"]) if self.cumulative else base
                tpath = write_datalist(src, rdir / "teacher_input.json")
                preds = load_predictions(self._predict(teacher_dir, tpath, "training", rdir / "teacher_predictions_training.json"))
                spacings = {it["image"]: spacing_of(it, 3 if self.series else 2) for it in src["training"]}
                rules, threshold_info = self.rules_for(state["rounds"][state["best_round"]])
                dl, stats = expand_datalist(src, preds, spacings, r, rules)
                stats["threshold"] = threshold_info
            dl_path = write_datalist(dl, rdir / "datalist.json")
            init = None if (r == 0 or self.from_scratch) else str(Path(state["rounds"][state["best_round"]]["dir"]) / "models" / "model.pt")
            print(f"round {r}: training on {sum(len(i['box']) for i in dl['training'])} boxes ({stats['boxes_added']} pseudo)", flush=True)
            self._train(rdir, dl_path, init)
            val = validation_f1(dl, self._predict(rdir, dl_path, "validation", rdir / "predictions_validation.json"))
            entry = {"round": r, "dir": str(rdir), "datalist": dl_path, "pseudo": stats, "validation": val}
            if self.truth is not None and r > 0:
                entry["pseudo_quality"] = pseudo_quality(dl, self.truth, r)
            state["rounds"].append(entry)
            best = state.get("best_round")
            if best is None or val["f1"] > state["rounds"][best]["validation"]["f1"]:
                state["best_round"] = r
            print(f"round {r}: validation F1 {val['f1']:.3f} (best round {state['best_round']})", flush=True)
            if r > 0 and state["best_round"] != r:
                state["early_stop"] = f"validation F1 stopped improving at round {r}"
            self.save_state(state)
        state["stopped"] = state.get("early_stop") or f"finished {len(state['rounds']) - 1} round(s)"
        state["best_model"] = str(Path(state["rounds"][state["best_round"]]["dir"]) / "models" / "model.pt")
        self.save_state(state)
        self.write_report(state)
        return state

    def write_report(self, state: dict) -> None:
        lines = [
            "# Self-training report",
            "",
            f"Stopped: {state['stopped']}. Best round: {state['best_round']} ({state['rounds'][state['best_round']]['dir']}/models/model.pt).",
            "",
            "| round | boxes added | added score median | validation F1 | pseudo precision | pseudo recall |",
            "| --- | --- | --- | --- | --- | --- |",
        ]

        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:.3f}"

        for e in state["rounds"]:
            q = e.get("pseudo_quality", {})
            med = e["pseudo"].get("score_quantiles", {}).get("0.5")
            lines.append(
                f"| {e['round']} | {e['pseudo']['boxes_added']} | {fmt(med)} | {e['validation']['f1']:.3f} | {fmt(q.get('precision'))} | {fmt(q.get('recall'))} |"
            )
        (self.work / "report.md").write_text("\n".join(lines) + "\n")
        (self.work / "report.json").write_text(json.dumps(state, indent=2))


def run_self_training(
    work_dir: str,
    datalist: str,
    rules: PseudoRules | dict | None = None,
    schedule: Schedule | dict | None = None,
    truth: str | None = None,
    train_overrides: dict | None = None,
) -> dict:
    """Entry point for configs/self_train.yaml (and so scripts/self_train.py) and the demo."""
    return SelfTraining(work_dir, datalist, from_config(PseudoRules, rules), from_config(Schedule, schedule), train_overrides, truth).run()
