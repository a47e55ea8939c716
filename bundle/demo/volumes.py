"""The demo's volume datalist: every lesion of the validation and test volumes, from the simulator's truth.

Why: volume-level evaluation needs fully labelled volumes (every lesion boxed); the demo has them in
truth.json. A hospital writes the same file from its own fully labelled volumes (docs/evaluation.md).
"""

from __future__ import annotations

import json
from pathlib import Path

from bundle.datalist.schema import DatalistItem, write_datalist

FILENAME = "datalist_volume.json"


def volume_items(truth: dict, section: str) -> list[DatalistItem]:
    """One item per patient of the split section: the volume, its lesions' 3D boxes, long axis = the lesion's diameter."""
    out = []
    for p in truth["patients"]:
        if truth["split"].get(p["patient_id"]) != section:
            continue
        lesions = p["lesions"]
        out.append(
            DatalistItem(
                image=p["image"],
                box=[[int(v) for v in les["box_vox"]] for les in lesions],
                label=[int(les.get("label", 0)) for les in lesions],
                patient=p["patient_id"],
                spacing=[float(s) for s in p["spacing"]],
                long_mm=[float(les["diameter_mm"]) for les in lesions],
                extra={"kind": [les["kind"] for les in lesions]},
            )
        )
    return out


def write_volume_datalist(
    demo_dir: str | Path, out_path: str | Path | None = None, sections: tuple[str, ...] = ("validation", "test")
) -> Path:
    """Write `<demo_dir>/datalist_volume.json` (image paths relative to demo_dir) from `<demo_dir>/truth.json`."""
    demo_dir = Path(demo_dir)
    truth_path = demo_dir / "truth.json"
    if not truth_path.is_file():
        raise FileNotFoundError(f"{truth_path}: no demo truth (run bundle.demo.synth.generate first)")
    truth = json.loads(truth_path.read_text())
    out = Path(out_path) if out_path else demo_dir / FILENAME
    if out.resolve().parent != demo_dir.resolve():
        raise ValueError(f"{out}: the volume datalist must sit in {demo_dir} (its image paths are relative to it)")
    doc = {s: volume_items(truth, s) for s in sections}
    return write_datalist(doc, out)
