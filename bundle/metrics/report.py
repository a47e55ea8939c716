"""Scores saved predictions against a datalist's truth and writes the evaluation report.

Why: evaluation works on files (predictions JSON + datalist), so any two models, or a model and
its TorchScript export, are compared on exactly the same images with the same code.
"""

from __future__ import annotations

import json
from pathlib import Path

from bundle.metrics.coco import coco_metrics
from bundle.metrics.matching import best_f1_threshold, counts_at, match_image, prf


def _key(path: str) -> str:
    """Images are matched by path relative to nothing: the resolved absolute path."""
    return str(Path(path).resolve())


def load_predictions(path: str | Path) -> dict[str, dict]:
    """Predictions JSON (DetectionSaver) -> {absolute image path: record}; empty or bad files name themselves."""
    p = Path(path)
    text = p.read_text() if p.exists() else ""
    if not text.strip():
        raise ValueError(f"{p}: predictions file is missing or empty")
    try:
        doc = json.loads(text)
        recs = doc["predictions"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{p}: not a predictions file (needs a 'predictions' list): {e}") from e
    out = {}
    for i, r in enumerate(recs):
        if "image" not in r:
            raise ValueError(f"{p}: predictions[{i}] has no 'image' field")
        out[_key(r["image"])] = r
    return out


def load_truth(datalist_path: str | Path, key: str) -> list[dict]:
    """Datalist section as records with absolute image paths."""
    p = Path(datalist_path)
    doc = json.loads(p.read_text())
    if key not in doc:
        raise ValueError(f"{p}: datalist has no '{key}' section (has {sorted(doc)})")
    base = p.parent
    out = []
    for r in doc[key]:
        r = dict(r)
        r["image"] = _key(str(base / r["image"]))
        out.append(r)
    return out


def pair(preds: dict[str, dict], truth: list[dict], where: str) -> list[tuple[dict, dict]]:
    """(truth, prediction) per truth image; a prediction for an image not in the truth is an error."""
    known = {t["image"] for t in truth}
    unknown = sorted(set(preds) - known)
    if unknown:
        raise ValueError(f"{where}: predictions for {len(unknown)} image(s) not in the truth, e.g. {unknown[0]}")
    empty = {"box": [], "score": [], "label": []}
    return [(t, preds.get(t["image"], empty)) for t in truth]


def match_all(pairs: list[tuple[dict, dict]], criterion: str = "iou", iou_threshold: float = 0.5):
    return [
        match_image(p["box"], p["score"], t["box"], criterion=criterion, iou_threshold=iou_threshold, where=t["image"]) for t, p in pairs
    ]


def evaluate(
    datalist: str,
    val_predictions: str,
    test_predictions: str,
    output_dir: str,
    iou_threshold: float = 0.5,
    criterion: str = "iou",
    val_key: str = "validation",
    test_key: str = "test",
) -> dict:
    """Operating point (max F1) chosen on validation, applied unchanged to test; COCO mAP on test."""
    val_pairs = pair(load_predictions(val_predictions), load_truth(datalist, val_key), val_predictions)
    test_pairs = pair(load_predictions(test_predictions), load_truth(datalist, test_key), test_predictions)
    threshold, val_best = best_f1_threshold(match_all(val_pairs, criterion, iou_threshold))
    test_matches = match_all(test_pairs, criterion, iou_threshold)
    test = prf(*counts_at(test_matches, threshold))
    coco = coco_metrics(
        [p["box"] for _, p in test_pairs],
        [p["score"] for _, p in test_pairs],
        [p["label"] for _, p in test_pairs],
        [t["box"] for t, _ in test_pairs],
        [t["label"] for t, _ in test_pairs],
    )
    result = {
        "criterion": criterion,
        "iou_threshold": iou_threshold,
        "operating_threshold": threshold,
        "validation": val_best,
        "test": test,
        "test_images": len(test_pairs),
        "test_coco": coco,
        "test_mAP": coco.get("mAP_IoU_0.10_0.50_0.05_MaxDet_100", float("nan")),
    }
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    (out / "summary.md").write_text(summary_markdown(result))
    return result


def summary_markdown(r: dict) -> str:
    t = r["test"]
    lines = [
        "# Evaluation summary",
        "",
        f"Matching: {r['criterion']} (IoU >= {r['iou_threshold']}); operating score threshold "
        f"{r['operating_threshold']:.3f} chosen on validation (max F1 {r['validation']['f1']:.3f}).",
        "",
        "| test metric | value |",
        "| --- | --- |",
        f"| images | {r['test_images']} |",
        f"| precision | {t['precision']:.3f} |",
        f"| recall | {t['recall']:.3f} |",
        f"| F1 | {t['f1']:.3f} |",
        f"| TP / FP / FN | {t['tp']} / {t['fp']} / {t['fn']} |",
        f"| COCO mAP (IoU 0.1-0.5) | {r['test_mAP']:.3f} |",
        "",
    ]
    return "\n".join(lines)
