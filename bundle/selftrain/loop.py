"""The self-training loop: teacher -> pseudo-boxes on its own training images -> student -> repeat.

Why a loop of plain bundle runs: each round is the same training a user runs by hand, on a
datalist this module writes; a ``state.json`` records finished rounds, so an interrupted run
resumes at the last finished round instead of starting over.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from bundle.datalist.rules import from_config
from bundle.datalist.sections import absolute_datalist, spacing_of
from bundle.inference.operating_point import logit
from bundle.inference.predictions import load_predictions
from bundle.metrics.matching import threshold_for_precision
from bundle.paths import ROOT
from bundle.selftrain.ema import checked_decay
from bundle.selftrain.pseudo import PseudoRules, expand_datalist, threshold_for_count, with_unlabelled, write_datalist
from bundle.selftrain.scoring import pseudo_quality, shipped_limits, validation_f1, validation_matches, volume_selection  # noqa: F401
from bundle.steps.runner import bundle_run

# validation_f1, pseudo_quality, volume_selection live in scoring.py; imported here for the callers of the loop


@dataclass
class Schedule:
    """How the rounds run; defaults here, configs/self_train.yaml overrides keys (`--schedule#rounds 1`)."""

    rounds: int = 2  # N: stop after N student rounds, or earlier when the selection metric stops improving
    target_precision: float = 0.5  # with score_threshold 'auto' (docs/selftraining.md: a fixed 0.95 collapsed round 2)
    from_scratch: bool = True  # False: the student starts from the teacher's weights (mean teacher: from the last student)
    cumulative: bool = False  # True: keep earlier rounds' pseudo-boxes; False: mined boxes + this teacher's only
    # True: the datalist holds whole series (configs/train_series.yaml); the teacher labels every slice of every
    # training series through configs/inference_volume.yaml with linking off (one box per slice detection)
    series: bool = False
    # mean teacher (bundle/selftrain/ema.py): the teacher is an EMA of the student, started from the previous
    # teacher, and never replaced by the student; the student trains with strong augmentation (configs/self_train_student.yaml)
    mean_teacher: bool = False
    # per iteration, or "auto": the previous teacher keeps 5% of the average at the round's end (ema.auto_decay; a fixed
    # 0.999 left it 82% after a CPU-sized round of ~200 iterations, so round 1's teacher was round 0's)
    ema_decay: float | str = "auto"
    # what keeps rounds and checkpoints: "f1" (key-slice max F1 on validation) or "volume" (validation sensitivity
    # >= 10 mm at the shipped false-box limits, then CPM; needs volume_datalist: every lesion of the validation volumes)
    select: str = "f1"
    volume_datalist: str | None = None
    # against confirmation bias (ablation arms): the pseudo-box count held at round 1's by moving the threshold,
    # and temporal consistency (a box kept only when the teacher's earlier checkpoint predicted it too)
    dynamic_count: bool = False
    temporal_consistency: bool = False
    # contrast series nobody measured (configs/mine.yaml unlabelled: true writes datalist_unlabelled.json): from round 1 the
    # teacher labels them too; a series joins the student's training only with at least one pseudo-box
    unlabelled_datalist: str | None = None
    # IoU at which a validation box is a lesion for the 'auto' threshold. None: on series 0.3, pseudo_quality's (at 0.5 the
    # default demo's round 1 got no pseudo-box: docs/selftraining.md); on key slices 0.5, the seed study's
    threshold_iou: float | None = None

    def __post_init__(self) -> None:
        for name in ("from_scratch", "cumulative", "series", "mean_teacher", "dynamic_count", "temporal_consistency"):
            v = getattr(self, name)  # "false" from a command line is not True
            if isinstance(v, str):
                setattr(self, name, v.strip().lower() in ("1", "true", "yes"))
        self.ema_decay = checked_decay(self.ema_decay, "schedule ema_decay")
        if self.select not in ("f1", "volume"):
            raise ValueError(f"schedule select {self.select!r}: 'f1' or 'volume'")
        if self.select == "volume" and not self.volume_datalist:
            raise ValueError("schedule select 'volume' needs volume_datalist (validation volumes with every lesion boxed)")
        if self.mean_teacher and not self.series:
            raise ValueError("schedule mean_teacher needs series true: the teacher labels every slice of whole series")
        if self.temporal_consistency and not self.mean_teacher:
            raise ValueError("schedule temporal_consistency needs mean_teacher: the earlier checkpoint is the EMA teacher's")


class SelfTraining:
    """Runs rounds into ``work_dir``; every artefact of round r lives in ``work_dir/round<r>/``.

    A round's candidates are its student (``round<r>/models/model.pt``) and, with the mean teacher, its EMA
    teacher (``round<r>/teacher/models/model.pt``); each is scored on validation, the best candidate over all
    rounds is the result (``state.json``: ``best``, ``best_model``).
    """

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
        self.schedule = schedule or Schedule()
        self.rounds = self.schedule.rounds
        self.target_precision = self.schedule.target_precision
        self.from_scratch = self.schedule.from_scratch
        self.cumulative = self.schedule.cumulative
        self.series = self.schedule.series
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
        teacher: {"dir": folder with models/model.pt, "datalist": its datalist}.
        """
        base = self.scaled_rules()
        if self.rules.score_threshold != "auto":
            info = {"score_threshold": base.score_threshold, "rule": "fixed"}
            return base, info | ({"given_probability": self.rules.score_threshold} if base is not self.rules else {})
        preds = Path(teacher["dir"]) / "predictions_validation.json"
        if not preds.is_file():
            self._predict(Path(teacher["dir"]), teacher["datalist"], "validation", preds)
        dl = absolute_datalist(teacher["datalist"])
        iou = self.schedule.threshold_iou if self.schedule.threshold_iou is not None else (0.3 if self.series else 0.5)
        matches = validation_matches(dl, str(preds), iou_threshold=float(iou))
        thr, at = threshold_for_precision(matches, self.target_precision)
        rule = f"validation precision >= {self.target_precision} at IoU {iou}"
        info = {"score_threshold": thr, "rule": rule, "teacher_validation_at_threshold": at}
        # a probability threshold no teacher reaches keeps nothing above 1; a logit one is inf already
        return replace(base, score_threshold=thr if self.series else min(thr, 1.0 + 1e-9)), info

    def scaled_rules(self) -> PseudoRules:
        """The rules on the teacher's score scale: the volume path (series) scores are logits, so the probabilities a
        user gives (a fixed threshold, the ignore floor) become logits there; the key-slice path keeps probabilities."""
        if not self.series:
            return self.rules
        thr = self.rules.score_threshold
        floor = self.rules.ignore_floor
        return replace(
            self.rules,
            score_threshold=thr if isinstance(thr, str) else logit(thr),
            ignore_floor=None if floor is None else logit(floor),
            logit_scores=True,
        )

    # ---- steps -------------------------------------------------------------------------------
    def _train(self, rdir: Path, datalist_path: str, init_ckpt: str | None, teacher_init: str | None = None, strong: bool = True) -> None:
        over = self.overrides | {
            "bundle_root": ROOT,
            "data_list_file_path": datalist_path,
            "dataset_dir": Path(datalist_path).parent,
            "ckpt_dir": rdir / "models",
            "output_dir": rdir / "train_eval",
        }
        if init_ckpt:
            over["pretrained_ckpt"] = init_ckpt
        configs = ["configs/train.yaml", "configs/train_series.yaml"] if self.series else ["configs/train.yaml"]
        if self.schedule.mean_teacher:
            configs.append("configs/self_train_student.yaml")
            over |= {"teacher_dir": rdir / "teacher" / "models", "ema_decay": self.schedule.ema_decay, "teacher_init": teacher_init or ""}
            if not strong:  # the burn-in round: train.yaml's augmentation, as a plain training
                over["strong_augmentation"] = "$[]"
        bundle_run(configs if len(configs) > 1 else configs[0], ROOT, self.log, **over)
        if self.schedule.mean_teacher:  # the EMA teacher (and its earlier checkpoint) as model folders inference reads
            tdir = rdir / "teacher" / "models"
            shutil.copy(tdir / "teacher.pt", tdir / "model.pt")
            (rdir / "teacher_mid" / "models").mkdir(parents=True, exist_ok=True)
            shutil.copy(tdir / "teacher_mid.pt", rdir / "teacher_mid" / "models" / "model.pt")

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

    def _inference_volume(self, model_dir: Path, paths: list[str], out: Path, **extra) -> str:
        listing = Path(out).with_suffix(".inputs.json")
        listing.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text(json.dumps(paths))
        bundle_run(
            "configs/inference_volume.yaml",
            ROOT,
            self.log,
            quiet=True,
            bundle_root=ROOT,
            ckpt_dir=model_dir / "models",
            input_list=listing,  # the volumes' paths as a file; the model's input (context_slices) is read from its checkpoint
            output_path=out,
            score_threshold="$float('-inf')",  # every box: the scores are logits, and the rules choose
            **extra,
            **{k: v for k, v in self.overrides.items() if k in ("val_patch_size",)},
        )
        return str(out)

    def _predict_slices(self, model_dir: Path, datalist_path: str, section: str, out: Path) -> str:
        """Every slice of every volume of a section, each detection its own one-slice 3D box (linking off)."""
        paths = [it["image"] for it in absolute_datalist(datalist_path)[section]]
        # never link: every slice detection stays a box of its own slice
        return self._inference_volume(model_dir, paths, out, link_iou=2.0, link_nms_thresh=1.0, max_boxes=100000)

    def _score(self, model_dir: Path, dl: dict, dl_path: str) -> dict:
        """One candidate on validation: key-slice max F1 always; the volume figures when they select."""
        val = validation_f1(dl, self._predict(model_dir, dl_path, "validation", model_dir / "predictions_validation.json"))
        val["key"] = [val["f1"]]
        if self.schedule.select == "volume":
            vdl = absolute_datalist(self.schedule.volume_datalist)
            paths = [it["image"] for it in vdl["validation"]]
            preds = self._inference_volume(model_dir, paths, model_dir / "predictions_volume_validation.json")
            vol = volume_selection(str(self.schedule.volume_datalist), preds)
            val = val | {"volume": vol, "key": vol["key"]}
        return val

    def _pseudo_round(self, state: dict, r: int, rdir: Path, base: dict) -> tuple[dict, dict]:
        """Round r's datalist: the teacher's pseudo-boxes and ignore regions on every training item."""
        teacher = self.teacher(state)
        src = absolute_datalist(state["rounds"][-1]["datalist"]) if self.cumulative else base
        src = with_unlabelled(src, self.schedule.unlabelled_datalist)
        tpath = write_datalist(src, rdir / "teacher_input.json")
        preds = load_predictions(self._predict(Path(teacher["dir"]), tpath, "training", rdir / "teacher_predictions_training.json"))
        spacings = {it["image"]: spacing_of(it, 3 if self.series else 2) for it in src["training"]}
        rules, threshold_info = self.rules_for(teacher)
        previous = None
        if self.schedule.temporal_consistency:
            mid = Path(teacher["dir"]).parent / "teacher_mid"
            earlier = load_predictions(self._predict(mid, tpath, "training", rdir / "teacher_mid_predictions_training.json"))
            # predicted = over its own threshold by the same rule (at the ignore floor, before 0.8.2, it rejected nothing)
            mid_rules, mid_info = self.rules_for({"dir": str(mid), "datalist": teacher["datalist"]})
            floor = float(mid_rules.score_threshold)
            previous = {k: [b for b, sc in zip(v["box"], v["score"]) if sc >= floor] for k, v in earlier.items()}
            threshold_info["temporal_consistency"] = {"checkpoint": str(mid), "earlier_score_floor": floor, "earlier": mid_info}
        first = next((e for e in state["rounds"] if e["round"] == 1), None)
        if self.schedule.dynamic_count and first is not None:
            target = int(first["pseudo"]["boxes_added"])
            thr = threshold_for_count(src, preds, spacings, rules, target, previous)
            threshold_info |= {
                "score_threshold": thr,
                "rule": f"dynamic: keeps round 1's count ({target})",
                "before": rules.score_threshold,
            }
            rules = replace(rules, score_threshold=thr)
        dl, stats = expand_datalist(src, preds, spacings, r, rules, previous)
        if self.schedule.unlabelled_datalist:  # an unlabelled series the teacher found nothing on would be all background
            n = len(dl["training"])
            dl["training"] = [it for it in dl["training"] if not it.get("unlabelled") or "pseudo" in it.get("box_source", [])]
            stats["unlabelled_series"] = {
                "offered": sum(1 for it in src["training"] if it.get("unlabelled")),
                "left_out_without_pseudo_box": n - len(dl["training"]),
            }
        stats["threshold"] = threshold_info
        stats["teacher"] = teacher
        return dl, stats

    def teacher(self, state: dict) -> dict:
        """Who labels the next round: the last round's EMA teacher (mean teacher), else the best round's model."""
        if self.schedule.mean_teacher:
            last = state["rounds"][-1]
            return {"dir": str(Path(last["dir"]) / "teacher"), "datalist": last["datalist"], "round": last["round"], "candidate": "teacher"}
        best = state["rounds"][state["best_round"]]
        return {"dir": best["dir"], "datalist": best["datalist"], "round": best["round"], "candidate": "student"}

    def run(self) -> dict:
        state = self.load_state()
        base = absolute_datalist(self.datalist_path)
        if state.get("early_stop"):
            print(f"self-training already finished: {state['early_stop']}")
        mt = self.schedule.mean_teacher
        while len(state["rounds"]) <= self.rounds and not state.get("early_stop"):
            r = len(state["rounds"])
            rdir = self.work / f"round{r}"
            if r == 0:
                dl, stats = base, {"round": 0, "boxes_added": 0}
            else:
                dl, stats = self._pseudo_round(state, r, rdir, base)
            dl_path = write_datalist(dl, rdir / "datalist.json")
            if r == 0:
                init, teacher_init = None, None
            elif mt:  # the student goes on from the last student; the EMA from the last teacher
                init = str(Path(state["rounds"][-1]["dir"]) / "models" / "model.pt")
                teacher_init = str(Path(state["rounds"][-1]["dir"]) / "teacher" / "models" / "model.pt")
            else:
                init = None if self.from_scratch else str(Path(state["rounds"][state["best_round"]]["dir"]) / "models" / "model.pt")
                teacher_init = None
            n_ignore = sum(len(i.get("ignore_box", [])) for i in dl["training"])
            print(
                f"round {r}: training on {sum(len(i['box']) for i in dl['training'])} boxes ({stats['boxes_added']} pseudo), {n_ignore} ignore regions",
                flush=True,
            )
            self._train(rdir, dl_path, init, teacher_init, strong=r > 0)
            candidates = {"student": self._score(rdir, dl, dl_path)}
            if mt:
                candidates["teacher"] = self._score(rdir / "teacher", dl, dl_path)
            kept = max(candidates, key=lambda c: candidates[c]["key"])
            entry = {"round": r, "dir": str(rdir), "datalist": dl_path, "pseudo": stats, "validation": candidates[kept]}
            entry |= {"candidates": candidates, "kept": kept, "model": str(self.model_dir(rdir, kept) / "models" / "model.pt")}
            if self.truth is not None and r > 0:
                spacings = {it["image"]: spacing_of(it, 3 if self.series else 2) for it in dl["training"]}
                entry["pseudo_quality"] = pseudo_quality(dl, self.truth, r, spacings=spacings)
            state["rounds"].append(entry)
            best = state.get("best_round")
            if best is None or _key(entry) > _key(state["rounds"][best]):
                state["best_round"] = r
            what = "sensitivity >= 10 mm, CPM" if self.schedule.select == "volume" else "F1"
            print(f"round {r}: validation {what} {entry['validation']['key']} ({kept}; best round {state['best_round']})", flush=True)
            if r > 0 and state["best_round"] != r:
                state["early_stop"] = f"validation {what} stopped improving at round {r}"
            self.save_state(state)
        state["stopped"] = state.get("early_stop") or f"finished {len(state['rounds']) - 1} round(s)"
        best = state["rounds"][state["best_round"]]
        state["best_model"] = best.get("model") or str(Path(best["dir"]) / "models" / "model.pt")
        state["best"] = {"round": best["round"], "candidate": best.get("kept", "student"), "model": state["best_model"]}
        self.save_state(state)
        self.write_report(state)
        return state

    @staticmethod
    def model_dir(rdir: Path, candidate: str) -> Path:
        return rdir / "teacher" if candidate == "teacher" else rdir

    def write_report(self, state: dict) -> None:
        best = state["best"]
        lines = [
            "# Self-training report",
            "",
            f"Stopped: {state['stopped']}. Kept: round {best['round']}, {best['candidate']} ({best['model']}).",
            "",
            "| round | kept | boxes added | ignore regions | threshold | validation F1 | sens >= 10 mm | CPM >= 10 mm | pseudo precision | pseudo recall |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]

        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:.3f}"

        for e in state["rounds"]:
            q = e.get("pseudo_quality", {})
            v = e["validation"]
            vol = v.get("volume", {})
            thr = e["pseudo"].get("threshold", {}).get("score_threshold")
            rej = e["pseudo"].get("rejected", {})
            n_ign = rej.get("uncertain: ignore region", 0) + rej.get("rejected confident: ignore region", 0)
            lines.append(
                f"| {e['round']} | {e.get('kept', 'student')} | {e['pseudo']['boxes_added']} | {n_ign} | {fmt(thr)} | {v['f1']:.3f} | "
                f"{fmt(vol.get('sensitivity_ge10'))} | {fmt(vol.get('cpm_ge10'))} | {fmt(q.get('precision'))} | {fmt(q.get('recall'))} |"
            )
        sized = [e for e in state["rounds"] if e.get("pseudo_quality", {}).get("by_size")]
        if sized:
            lines += ["", "Pseudo-boxes against the unmeasured lesions, by size (count correct/added; recovered/unmeasured):", ""]
            bins = list(sized[0]["pseudo_quality"]["by_size"])
            lines += ["| round | " + " | ".join(bins) + " |", "| --- |" + " --- |" * len(bins)]
            for e in sized:
                bs = e["pseudo_quality"]["by_size"]
                cells = [f"{bs[b]['correct']}/{bs[b]['pseudo_boxes']}; {bs[b]['recovered']}/{bs[b]['unmeasured']}" for b in bins]
                lines.append(f"| {e['round']} | " + " | ".join(cells) + " |")
        (self.work / "report.md").write_text("\n".join(lines) + "\n")
        (self.work / "report.json").write_text(json.dumps(state, indent=2))


def _key(entry: dict) -> list[float]:
    """A round's selection key (states written before 0.8 carry only the validation F1)."""
    v = entry["validation"]
    return list(v.get("key", [v["f1"]]))


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
