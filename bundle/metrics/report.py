"""Scores saved predictions against a datalist's truth and writes the evaluation report.

Why: evaluation works on files (predictions JSON + datalist), so any two models, or a model and
its TorchScript export, are compared on exactly the same images with the same code. The
operating point is always chosen on validation and applied unchanged to test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bundle.datalist.rules import SizeRule
from bundle.datalist.sections import load_truth, spacing_of
from bundle.inference.predictions import load_predictions, pair, skipped_images
from bundle.metrics import bootstrap, breakdown, froc, plots, study
from bundle.metrics.coco import coco_key, coco_label, coco_metrics
from bundle.metrics.matching import ImageMatch, best_f1_threshold, counts_at, match_image, prf


def _usable_truth(datalist, key: str, predictions) -> list[dict]:
    skipped = skipped_images(predictions)
    return [t for t in load_truth(datalist, key) if t["image"] not in skipped]


def patient_items(datalist_path: str | Path, key: str, patient: str) -> list[dict]:
    """One patient's items of a datalist section, absolute image paths: what plots.plot_patient draws."""
    items = [t for t in load_truth(datalist_path, key) if t.get("patient") == patient]
    if not items:
        raise ValueError(f"{datalist_path}: no '{key}' item of patient {patient!r}")
    return items


def patient_pictures(
    datalist: str, predictions: str, threshold: float, output_dir: str, patients: list[str], key: str = "test"
) -> list[dict]:
    """A PNG per patient (``<output_dir>/<patient>.png``): truth and the predictions kept at the operating point."""
    preds = load_predictions(predictions)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [plots.plot_patient(patient_items(datalist, key, p), out / f"{p}.png", preds, threshold, title=f"{p} ({key})") for p in patients]


def match_all(pairs: list[tuple[dict, dict]], criterion: str = "iou", iou_threshold: float = 0.5) -> list[ImageMatch]:
    out = []
    for t, p in pairs:
        pb, tb = np.asarray(p["box"], dtype=float), np.asarray(t["box"], dtype=float)
        if pb.size and tb.size and pb.reshape(len(pb), -1).shape[1] != tb.reshape(len(tb), -1).shape[1]:
            raise ValueError(f"{t['image']}: predictions are {pb.shape[-1] // 2}D boxes but truth is {tb.shape[-1] // 2}D")
        out.append(match_image(p["box"], p["score"], t["box"], criterion=criterion, iou_threshold=iou_threshold, where=t["image"]))
    return out


@dataclass
class Scored:
    """One model scored on one datalist: what the report and the paired test need."""

    threshold: float
    validation: dict
    pairs: list[tuple[dict, dict]]
    matches: list[ImageMatch]
    patients: list[str]
    val_studies: tuple[np.ndarray, np.ndarray]


def score_model(
    datalist, val_predictions, test_predictions, criterion="iou", iou_threshold=0.5, val_key="validation", test_key="test"
) -> Scored:
    val_pairs = pair(load_predictions(val_predictions), _usable_truth(datalist, val_key, val_predictions), str(val_predictions))
    test_pairs = pair(load_predictions(test_predictions), _usable_truth(datalist, test_key, test_predictions), str(test_predictions))
    val_matches = match_all(val_pairs, criterion, iou_threshold)
    threshold, val_best = best_f1_threshold(val_matches)
    _, vs, va = study.study_scores(
        [np.asarray(p["score"]) for _, p in val_pairs],
        [len(t["box"]) for t, _ in val_pairs],
        [t.get("patient", t["image"]) for t, _ in val_pairs],
    )
    return Scored(
        threshold=threshold,
        validation=val_best,
        pairs=test_pairs,
        matches=match_all(test_pairs, criterion, iou_threshold),
        patients=[t.get("patient", t["image"]) for t, _ in test_pairs],
        val_studies=(vs, va),
    )


def evaluate(
    datalist: str,
    val_predictions: str,
    test_predictions: str,
    output_dir: str,
    iou_threshold: float = 0.5,
    criterion: str = "iou",
    n_bootstrap: int = 1000,
    seed: int = 0,
    val_key: str = "validation",
    test_key: str = "test",
    fp_unit: str = "image",
    name: str = "model",
    size_rule: SizeRule | None = None,
) -> dict:
    """Every figure for one model: P/R/F1 with CIs (all lesions and inside the size rule), FROC/CPM per image
    and per patient, COCO, study level, breakdowns, plots; each figure's exact name under "labels"."""
    s = score_model(datalist, val_predictions, test_predictions, criterion, iou_threshold, val_key, test_key)
    result = _figures(s, n_bootstrap, seed, fp_unit, size_rule or SizeRule())
    result.update({"name": name, "criterion": criterion, "iou_threshold": iou_threshold})
    result["labels"] = labels(result)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = result["test"]
    result["plots"] = {
        "froc": plots.plot_froc({name: s.matches}, out / "froc.png", fp_unit),
        "froc_per_patient": plots.plot_froc({name: froc.by_patient(s.matches, s.patients)}, out / "froc_per_patient.png", "patient"),
        "pr": plots.plot_pr({name: s.matches}, out / "pr.png", {name: (t["recall"], t["precision"])}),
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    (out / "summary.md").write_text(summary_markdown(result))
    return result


def _match_label(criterion: str, iou_threshold: float) -> str:
    return f"IoU >= {iou_threshold:g}" if criterion == "iou" else "prediction centre inside the truth box"


def labels(r: dict) -> dict[str, str]:
    """The exact name of each headline figure in metrics.json: IoU range, FP unit, which lesions count."""
    match = _match_label(r["criterion"], r["iou_threshold"])
    rule = r["test_size_rule"]["rule"]
    return {
        "test": f"precision / recall / F1 at the operating threshold, {match}, all truth boxes",
        "test_size_rule": f"precision / recall / F1 at the operating threshold, {match}, truth boxes with long axis "
        f"{rule['min_long_mm']:g}-{rule['max_long_mm']:g} mm (the mining size rule); predictions matched to truth outside it ignored",
        "test_mAP": coco_label("mAP"),
        "test_mAR": coco_label("mAR"),
        "test_froc": r["test_froc"]["label"],
        "test_froc_per_patient": r["test_froc_per_patient"]["label"],
    }


def _size_rule_figures(s: Scored, spacings: list, rule: SizeRule, n_bootstrap: int, seed: int) -> dict:
    """P/R/F1 with patient bootstrap CIs counting only truth inside the size rule (see breakdown.restrict_to_size)."""
    inside = breakdown.restrict_to_size(s.matches, [t["box"] for t, _ in s.pairs], spacings, rule)
    _, counts = bootstrap.patient_counts(inside, s.patients, s.threshold)
    return prf(*counts_at(inside, s.threshold)) | {
        "rule": {"min_long_mm": rule.min_long_mm, "max_long_mm": rule.max_long_mm},
        "n_truth": sum(m.n_truth for m in inside),
        "ci95": bootstrap.bootstrap_ci(counts, n_bootstrap, seed),
    }


def _figures(s: Scored, n_bootstrap: int, seed: int, fp_unit: str, size_rule: SizeRule | None = None) -> dict:
    pairs = s.pairs
    test = prf(*counts_at(s.matches, s.threshold))
    _, counts = bootstrap.patient_counts(s.matches, s.patients, s.threshold)
    ci = bootstrap.bootstrap_ci(counts, n_bootstrap, seed)
    coco = coco_metrics(
        [p["box"] for _, p in pairs],
        [p["score"] for _, p in pairs],
        [p["label"] for _, p in pairs],
        [t["box"] for t, _ in pairs],
        [t["label"] for t, _ in pairs],
    )
    study_thr = study.best_threshold(*s.val_studies)
    _, ss, sa = study.study_scores([np.asarray(p["score"]) for _, p in pairs], [len(t["box"]) for t, _ in pairs], s.patients)
    dims = next((len(np.asarray(t["box"]).reshape(len(t["box"]), -1)[0]) // 2 for t, _ in pairs if len(t["box"])), 2)
    spacings = [spacing_of(t, dims) for t, _ in pairs]
    return {
        "operating_threshold": s.threshold,
        "validation": s.validation,
        "test": test,
        "test_ci95": ci,
        "test_images": len(pairs),
        "test_patients": len(set(s.patients)),
        "test_coco": coco,
        "test_mAP": coco.get(coco_key("mAP"), float("nan")),
        "test_mAR": coco.get(coco_key("mAR"), float("nan")),
        "test_size_rule": _size_rule_figures(s, spacings, size_rule or SizeRule(), n_bootstrap, seed),
        "test_froc": froc.froc_summary(s.matches, fp_unit),
        "test_froc_per_patient": froc.froc_summary(froc.by_patient(s.matches, s.patients), "patient"),
        "test_study": study.study_metrics(ss, sa, study_thr),
        "test_breakdown": breakdown.breakdown(
            s.matches,
            [t["box"] for t, _ in pairs],
            [t["label"] for t, _ in pairs],
            [p["box"] for _, p in pairs],
            [p["label"] for _, p in pairs],
            spacings,
            s.threshold,
        ),
    }


def compare(
    datalist: str,
    a: tuple[str, str],
    b: tuple[str, str],
    output_dir: str,
    names: tuple[str, str] = ("A", "B"),
    iou_threshold: float = 0.5,
    criterion: str = "iou",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """Two models on the same test patients: each one's figures and the paired bootstrap test of F1 (A - B)."""
    sa = score_model(datalist, a[0], a[1], criterion, iou_threshold)
    sb = score_model(datalist, b[0], b[1], criterion, iou_threshold)
    ids_a, ca = bootstrap.patient_counts(sa.matches, sa.patients, sa.threshold)
    ids_b, cb = bootstrap.patient_counts(sb.matches, sb.patients, sb.threshold)
    if ids_a != ids_b:
        raise ValueError("paired test: the two prediction sets cover different test patients")
    test = bootstrap.paired_test(ca, cb, n_bootstrap, seed)
    result = {
        "names": list(names),
        "paired_f1_test": test,
        names[0]: _figures(sa, n_bootstrap, seed, "image"),
        names[1]: _figures(sb, n_bootstrap, seed, "image"),
    }
    for n in names:
        result[n].update({"criterion": criterion, "iou_threshold": iou_threshold})
        result[n]["labels"] = labels(result[n])
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result["plots"] = {
        "froc": plots.plot_froc({names[0]: sa.matches, names[1]: sb.matches}, out / "froc_compare.png"),
        "pr": plots.plot_pr({names[0]: sa.matches, names[1]: sb.matches}, out / "pr_compare.png"),
    }
    (out / "compare.json").write_text(json.dumps(result, indent=2))
    (out / "compare.md").write_text(compare_markdown(result))
    return result


def _ci(c: dict, k: str) -> str:
    return f"{c[k]['value']:.3f} ({c[k]['ci_low']:.3f}-{c[k]['ci_high']:.3f})"


def _cpm_row(fr: dict) -> str:
    rates = " / ".join(f"{v:.3f}" for v in fr["sensitivity_at_fp"].values())
    return f"| FROC CPM, FP per {fr['fp_unit']} ({fr['n_units']} {fr['fp_unit']}s; sensitivity at 1/8 ... 8: {rates}) | {fr['cpm']:.3f} |"


def summary_markdown(r: dict) -> str:
    t, ci, fr, st = r["test"], r["test_ci95"], r["test_froc"], r["test_study"]
    sr, rule = r["test_size_rule"], r["test_size_rule"]["rule"]
    match = _match_label(r["criterion"], r["iou_threshold"])
    inside = f"truth inside the size rule {rule['min_long_mm']:g}-{rule['max_long_mm']:g} mm ({sr['n_truth']} truth boxes)"
    auc = "n/a (one class only)" if st["auc"] is None else f"{st['auc']:.3f}"
    lines = [
        f"# Evaluation summary: {r.get('name', 'model')}",
        "",
        f"Matching: {match}; operating score threshold {r['operating_threshold']:.3f} "
        f"chosen on validation (validation F1 {r['validation']['f1']:.3f}). 95% CIs: bootstrap over "
        f"{ci['n_patients']} test patients, {ci['n_resamples']} resamples, seed {ci['seed']}. FROC sensitivities are "
        "per truth box, read off the curve by linear interpolation (LUNA16).",
        "",
        "| test metric | value (95% CI) |",
        "| --- | --- |",
        f"| images / patients | {r['test_images']} / {r['test_patients']} |",
        f"| precision, all truth boxes | {_ci(ci, 'precision')} |",
        f"| recall, all truth boxes | {_ci(ci, 'recall')} |",
        f"| F1 ({match}), all truth boxes | {_ci(ci, 'f1')} |",
        f"| TP / FP / FN, all truth boxes | {t['tp']} / {t['fp']} / {t['fn']} |",
        f"| F1 ({match}), {inside}; predictions on truth outside it ignored | {_ci(sr['ci95'], 'f1')} |",
        f"| precision / recall, {inside} | {sr['precision']:.3f} / {sr['recall']:.3f} |",
        f"| {coco_label('mAP')} / mAR | {r['test_mAP']:.3f} / {r['test_mAR']:.3f} |",
        _cpm_row(fr),
        *([_cpm_row(r["test_froc_per_patient"])] if "test_froc_per_patient" in r else []),
        f"| sensitivity at 0.5 / 1 / 2 / 4 / 8 FP per {fr['fp_unit']} | "
        + " / ".join(f"{v:.3f}" for v in fr["deeplesion_sensitivity_at_fp"].values())
        + " |",
        f"| study level: AUC | {auc} ({st['abnormal']} abnormal, {st['normal']} normal studies) |",
        "",
        "| lesion size (long axis) | truth | detected | recall | predicted | precision |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for k, c in r["test_breakdown"]["size"].items():
        rec = "-" if c["recall"] is None else f"{c['recall']:.3f}"
        pre = "-" if c["precision"] is None else f"{c['precision']:.3f}"
        lines.append(f"| {k} | {c['truth']} | {c['detected']} | {rec} | {c['predicted']} | {pre} |")
    if "plots" in r:
        p = r["plots"]
        lines += ["", f"Plots: FROC per image `{p['froc']}`, per patient `{p['froc_per_patient']}`, precision-recall `{p['pr']}`."]
    return "\n".join(lines) + "\n"


def compare_markdown(r: dict) -> str:
    a, b = r["names"]
    t = r["paired_f1_test"]
    lines = [
        f"# {a} vs {b}",
        "",
        f"| model | F1, all truth (95% CI) | F1, truth in size rule | precision | recall | {coco_label('mAP')} "
        "| CPM, FP per image | CPM, FP per patient |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n in (a, b):
        f = r[n]
        lines.append(
            f"| {n} | {_ci(f['test_ci95'], 'f1')} | {_ci(f['test_size_rule']['ci95'], 'f1')} | {f['test']['precision']:.3f} "
            f"| {f['test']['recall']:.3f} | {f['test_mAP']:.3f} | {f['test_froc']['cpm']:.3f} | {f['test_froc_per_patient']['cpm']:.3f} |"
        )
    lines += [
        "",
        f"Paired bootstrap over {t['n_patients']} patients ({t['n_resamples']} resamples, seed {t['seed']}): "
        f"F1({a}) - F1({b}) = {t['difference']:+.3f} (95% CI {t['ci_low']:+.3f} to {t['ci_high']:+.3f}), two-sided P = {t['p_value']:.4f}.",
    ]
    return "\n".join(lines) + "\n"
