"""PNG plots a person can look at: the FROC curve, the precision-recall curve, and one patient's slices with boxes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from bundle.metrics.froc import LUNA_FP_RATES, UNIT_LABELS, froc_curve  # noqa: E402
from bundle.metrics.matching import ImageMatch  # noqa: E402


def plot_froc(curves: dict[str, list[ImageMatch]], path: str | Path, unit: str = "image") -> str:
    """One FROC line per model (one match per unit), log-scaled FP axis, LUNA16 operating points marked.

    Drawn as straight segments between the curve's points: the interpolation the CPM uses.
    """
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, matches in curves.items():
        fps, sens = froc_curve(matches)
        ax.plot(fps[::-1], sens[::-1], label=name)
    for r in LUNA_FP_RATES:
        ax.axvline(r, color="0.85", lw=0.8, zorder=0)
    ax.set_xscale("log")
    ax.set_xlim(LUNA_FP_RATES[0] / 2, LUNA_FP_RATES[-1] * 2)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(UNIT_LABELS.get(unit, f"FP per {unit}"))
    ax.set_ylabel("sensitivity")
    ax.set_title("FROC")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def plot_pr(curves: dict[str, list[ImageMatch]], path: str | Path, operating: dict[str, tuple[float, float]] | None = None) -> str:
    """Precision against recall over all score thresholds, with each model's operating point."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name, matches in curves.items():
        scores = np.concatenate([m.scores for m in matches] + [np.zeros(0)])
        tps = np.concatenate([m.tp for m in matches] + [np.zeros(0, dtype=bool)])
        n_truth = max(sum(m.n_truth for m in matches), 1)
        order = np.argsort(-scores, kind="stable")
        ctp = np.cumsum(tps[order])
        prec = ctp / np.arange(1, len(order) + 1)
        rec = ctp / n_truth
        (line,) = ax.plot(rec, prec, label=name)
        if operating and name in operating:
            r, p = operating[name]
            ax.plot([r], [p], "o", color=line.get_color())
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("Precision-recall")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


TRUTH_COLOUR = "#00ff00"  # pure colours: a test (or a reader) can find each kind of box by its pixels
MINED_COLOUR = "#00a0ff"
PSEUDO_COLOUR = "#ff00ff"
PREDICTION_COLOUR = "#ffa000"


def boxes_by_source(item: dict) -> tuple[list, list]:
    """(mined, pseudo) boxes of a self-training datalist item (``box_source`` per box; none means mined)."""
    sources = item.get("box_source") or ["mined"] * len(item.get("box", []))
    boxes = list(item.get("box", []))
    return [b for b, s in zip(boxes, sources) if s != "pseudo"], [b for b, s in zip(boxes, sources) if s == "pseudo"]


def _draw_boxes(ax, boxes, colour: str, style: str = "-", scores=None, lw: float = 1.5) -> None:
    """Boxes [x0, y0, x1, y1] (x = first array axis, max exclusive) on an image shown as ``arr.T``."""
    from matplotlib.patches import Rectangle

    for k, b in enumerate(np.asarray(boxes, dtype=float).reshape(-1, 4)):
        ax.add_patch(Rectangle((b[0] - 0.5, b[1] - 0.5), b[2] - b[0], b[3] - b[1], fill=False, ec=colour, lw=lw, ls=style))
        if scores is not None:
            ax.text(b[0] - 0.5, b[3] + 0.5, f"{scores[k]:.2f}", color=colour, fontsize=7, va="bottom")


def plot_patient(
    items: list[dict],
    path: str | Path,
    predictions: dict[str, dict] | None = None,
    threshold: float = 0.5,
    mined: list | None = None,
    pseudo: list | None = None,
    title: str = "",
    max_panels: int = 12,
) -> dict:
    """One patient's slices that have anything to show, as one PNG: truth, mined and pseudo boxes, predictions.

    Why: a reader judges a detector faster from its boxes on the images than from a table.
    items: the patient's datalist items with absolute image paths (bundle.datalist.sections.load_truth), truth in "box".
    predictions: {absolute image path: record} as bundle.inference.predictions.load_predictions returns; only boxes with
    score >= threshold (the operating point) are drawn, with their scores. mined / pseudo: one box
    list per item (aligned with items), where the patient has such boxes. A slice is shown when it
    has a truth, mined, pseudo or kept predicted box; at most max_panels, in item order.
    Returns {"path", "panels": image paths shown, "not_shown": slices with findings left out}.
    """
    preds = predictions or {}
    rows = []
    for k, it in enumerate(items):
        p = preds.get(str(Path(it["image"]).resolve()), {"box": [], "score": []})
        keep = [i for i, s in enumerate(p["score"]) if s >= threshold]
        mb = list(mined[k] or []) if mined and k < len(mined) else []
        qb = list(pseudo[k] or []) if pseudo and k < len(pseudo) else []
        pb, ps = [p["box"][i] for i in keep], [p["score"][i] for i in keep]
        if len(it.get("box", [])) or pb or mb or qb:
            rows.append((it, mb, qb, pb, ps))
    shown = rows[:max_panels]
    ncols = max(1, min(4, len(shown)))
    nrows = max(1, -(-len(shown) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.4 * nrows + 0.6), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (it, mb, qb, pb, ps) in zip(axes.ravel(), shown):
        img = nib.load(it["image"])
        arr = np.asarray(img.dataobj, dtype=np.float32).reshape(img.shape[:2])
        ax.imshow(arr.T, cmap="gray", origin="lower", interpolation="nearest")
        _draw_boxes(ax, it.get("box", []), TRUTH_COLOUR, lw=4)  # widest, underneath: still seen where others coincide
        _draw_boxes(ax, mb, MINED_COLOUR, "--")
        _draw_boxes(ax, qb, PSEUDO_COLOUR, "--")
        _draw_boxes(ax, pb, PREDICTION_COLOUR, ":", ps)
        ax.set_title(f"{Path(it['image']).name.split('.')[0]}: {len(it.get('box', []))} truth, {len(pb)} predicted", fontsize=8)
    _legend(fig, threshold, title, len(shown), len(rows))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {"path": str(path), "panels": [it["image"] for it, *_ in shown], "not_shown": len(rows) - len(shown)}


def _legend(fig, threshold: float, title: str, n_shown: int, n_rows: int) -> None:
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=TRUTH_COLOUR, lw=2, label="truth"),
        Line2D([], [], color=MINED_COLOUR, lw=2, ls="--", label="mined"),
        Line2D([], [], color=PSEUDO_COLOUR, lw=2, ls="--", label="pseudo"),
        Line2D([], [], color=PREDICTION_COLOUR, lw=2, ls=":", label=f"predicted, score >= {threshold:.3f}"),
    ]
    more = f" ({n_shown} of {n_rows} slices with findings)" if n_shown < n_rows else ""
    fig.suptitle((title or "patient") + more, fontsize=10)
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
