"""Every evaluation also scores the test volumes as other protocols store them, at the shipped operating point.

Why: the figure that decides whether the tool is usable is false boxes per volume on any scanner's protocol
(issue 24), so the same detector, preprocessing (the canonical grid) and threshold run over each variant of
:mod:`bundle.inference.protocols`, and each is scored as the test set is (bundle.metrics.volume).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from monai.data import DataLoader, Dataset
from monai.data.utils import no_collation

from bundle.datalist.schema import load_datalist
from bundle.engines.detection import DetectionEvaluator
from bundle.inference.predictions import VolumeDetectionSaver
from bundle.inference.protocols import DEFAULT_VARIANTS, write_variant
from bundle.metrics.volume import GE_LABEL, MatchRule, at_threshold, froc_figures, score_volumes

logger = logging.getLogger(__name__)


def evaluate(
    detector: Any,
    preprocessing: Callable,
    datalist_file: str | Path,
    output_dir: str | Path,
    threshold: float,
    variants: Mapping[str, Mapping[str, Any]] | None = None,
    device: Any = "cpu",
    amp: bool = False,
    criterion: str = "strict",
    iou_threshold: float = 0.1,
    section: str = "test",
    reference: dict | None = None,
    save_score_threshold: float = float("-inf"),
) -> dict:
    """Each variant's test volumes through ``detector`` (weights already loaded) at ``threshold``; writes
    ``<output_dir>/metrics_protocols.json`` and ``summary_protocols.md``. ``reference``: the stored test set's
    figures at the same threshold (a first row to compare with). ``variants`` None: :data:`DEFAULT_VARIANTS`; {}: none.
    ``save_score_threshold``: boxes saved down to it, as the test set's (the FROC and CPM need the boxes below ``threshold``).
    """
    variants = DEFAULT_VARIANTS if variants is None else variants
    out = Path(output_dir)
    rule = MatchRule(criterion, iou_threshold)
    rows: dict[str, dict] = {}
    for name, spec in variants.items():
        vdir = out / "protocols" / name
        dl = write_variant(datalist_file, vdir, spec, section)
        preds = vdir / "predictions_volume_test.json"
        data = load_datalist(dl, section, dl.parent, box_mode="xyzxyz")
        loader = DataLoader(Dataset(data, transform=preprocessing), batch_size=1, shuffle=False, num_workers=0, collate_fn=no_collation)
        saver = VolumeDetectionSaver(str(preds), score_threshold=save_score_threshold)
        DetectionEvaluator(device, loader, detector, val_handlers=[saver], amp=amp, use_inferer=True).run()
        rows[name] = score_variant(dl, preds, section, rule, threshold, spec)
        logger.info("protocol %s: %s", name, rows[name]["at_operating_point"])
    return write_report(out, threshold, rule, reference, rows)


def score_variant(datalist: Path, predictions: Path, section: str, rule: MatchRule, threshold: float, spec: Mapping) -> dict:
    """One variant's saved predictions scored at ``threshold`` (its truth already in the variant's grid)."""
    vols = score_volumes(str(datalist), str(predictions), section, rule)
    return {
        "variant": dict(spec),
        "at_operating_point": at_threshold(vols, threshold),
        "cpm": froc_figures(vols)["cpm"],
        f"cpm {GE_LABEL}": froc_figures(vols, 10.0)["cpm"],
    }


def write_report(out: Path, threshold: float, rule: MatchRule, reference: dict | None, rows: dict) -> dict:
    """``metrics_protocols.json`` and ``summary_protocols.md`` under ``out``; the result."""
    result = {"score_threshold": threshold, "match": rule.label(), "reference": reference, "variants": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics_protocols.json").write_text(json.dumps(result, indent=2))
    (out / "summary_protocols.md").write_text(summary_markdown(result))
    return result


def rescore(
    eval_dir: str | Path, output_dir: str | Path, threshold: float, rule: MatchRule, reference: dict | None = None, section: str = "test"
) -> dict:
    """An evaluation's saved protocol predictions at another threshold: no volume runs again.

    Why: an operating-point rule is an evaluation choice; comparing two rules must not retrain or re-infer anything."""
    src_dir = Path(eval_dir)
    src = json.loads((src_dir / "metrics_protocols.json").read_text())
    rows = {}
    for name, row in src["variants"].items():
        vdir = src_dir / "protocols" / name
        rows[name] = score_variant(
            vdir / "datalist_volume.json", vdir / "predictions_volume_test.json", section, rule, threshold, row["variant"]
        )
    return write_report(Path(output_dir), threshold, rule, reference, rows)


def _f(v: Any, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def summary_markdown(r: dict) -> str:
    """One row per protocol: sensitivity (all, >= 10 mm, by size), false boxes per volume and per normal volume, CPM."""
    lines = [
        f"### Protocol variants at the shipped operating point (score >= {r['score_threshold']:.4f}; {r['match']})",
        "",
        f"| stored as | sens | sens {GE_LABEL} | 10-20 mm | FP / vol | FP / normal vol | CPM {GE_LABEL} |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = ([("as stored", r["reference"])] if r.get("reference") else []) + list(r["variants"].items())
    for name, row in rows:
        a = row["at_operating_point"]
        small = a.get("by_size", {}).get("10-20 mm")
        small_s = f"{small['found']}/{small['lesions']}" if small else "n/a"
        lines.append(
            f"| {name} | {_f(a.get('sensitivity'))} | {_f(a.get('sensitivity ' + GE_LABEL))} | {small_s} | {_f(a.get('fp_per_volume'), 2)}"
            f" | {_f(a.get('fp_per_normal_volume'), 2)} | {_f(row.get('cpm ' + GE_LABEL, (row.get('froc_ge_10mm') or {}).get('cpm')))} |"
        )
    return "\n".join(lines) + "\n"
