"""PNG plots a person can look at: the FROC curve, the precision-recall curve, and one patient's slices with boxes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
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
