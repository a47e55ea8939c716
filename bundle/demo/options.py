"""What one demo run does (``DemoOptions``, scripts/demo.py's flags) and where it reads and writes (``Paths``).

Why a module of its own: the demo's steps (run.py), its whole-volume steps (volume_steps.py) and its results page
(results.py) all read the options and paths; here, none of them imports another to get them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bundle.paths import ROOT
from bundle.selftrain.loop import Schedule
from bundle.selftrain.pseudo import PseudoRules, parse_threshold
from bundle.transforms.slices import check_context_slices


@dataclass
class DemoOptions:
    """What one demo run does; scripts/demo.py's flags, with these defaults."""

    size: str = "default"  # demo size: tiny, small, default, large (large is for a GPU machine)
    seed: int = 0
    epochs: int = 36  # epochs of each training; docs/results.md: 36 beat 12 on validation for every arm it ran (train.yaml keeps 15)
    rounds: int = 1  # key-slice self-training rounds (series False: the seed study's setting)
    score_threshold: float | str = PseudoRules.score_threshold  # pseudo-box score, or 'auto' (each teacher's validation precision)
    target_precision: float = Schedule.target_precision
    n_bootstrap: int = 1000
    work: str = "runs/demo"  # every artefact, relative to the repository
    results: str = "runs/demo/results.md"  # this run's page (docs/results.md is scripts/ablation.py's: docs/README.md)
    model_dir: str = "models"  # the self-trained model is copied here as model.pt (the bundle's model)
    data: str = "data"  # demo data, export, de-identified copy and mined datalist
    series: bool = True  # (b) on whole mined series with ignore regions; False: key slices, self-trained, as the seed study
    # (b)'s mean-teacher self-training rounds over every slice (docs/selftraining.md); a round is kept only when it wins
    # validation sensitivity >= 10 mm at the shipped false-box limits, else (b) is the round-0 teacher and named so
    series_rounds: int = 1
    # (b)'s input: each slice with its neighbours (2.5D), the 36-epoch choice on validation (docs/results.md); 1: 2D.
    # A training setting: every later step reads it back from the trained model (bundle.engines.checkpoints.input_channels)
    context_slices: int = 3
    ignore_floor: float = 0.3  # series self-training: teacher scores in [floor, pseudo threshold) become ignore regions
    series_target_precision: float = 0.8  # series self-training: the teacher's precision on every validation slice
    max_pseudo_per_series: int = 50
    # share of studies with lesions that no reader measured (the export's p_unread): mined as unlabelled series, which
    # (b)'s self-training labels with its teacher (docs/selftraining.md)
    unread_share: float = 0.1
    # the volume-level ceiling: (b)'s recipe trained on every lesion slice boxed, scored per volume by lesion size
    # (one more whole-series training and volume evaluation; false saves that time)
    volume_oracle: bool = True


def yes(text: str) -> bool:
    """A yes/no flag's value: 1, true or yes (any case) is yes."""
    return text.lower() in ("1", "true", "yes")


# scripts/demo.py's flags, one per DemoOptions field: its type on the command line and its help (the default is the field's)
FLAGS: dict[str, tuple] = {
    "size": (str, "demo size: tiny, small, default, large (large is for a GPU machine)"),
    "seed": (int, "the demo data's seed"),
    "epochs": (int, "epochs of each training"),
    "rounds": (int, "key-slice self-training rounds (--series false)"),
    "series_rounds": (int, "(b)'s self-training rounds over every slice"),
    "score_threshold": (
        parse_threshold,
        "pseudo-box score threshold, or 'auto': where each teacher reaches --target_precision on validation",
    ),
    "target_precision": (float, "with 'auto' (docs/selftraining.md explains the choice)"),
    "n_bootstrap": (int, "bootstrap resamples of the confidence intervals"),
    "series": (yes, "(b) on whole series with ignore regions (false: key slices)"),
    "context_slices": (int, "(b)'s input slices: 3 (2.5D: each slice with its neighbours), 1 (2D)"),
    "ignore_floor": (float, "series self-training: lowest teacher score made an ignore region"),
    "series_target_precision": (float, "series self-training: the teacher's precision on every validation slice"),
    "max_pseudo_per_series": (int, "series self-training: most pseudo-boxes per series"),
    "unread_share": (float, "share of studies with lesions no reader measured (unlabelled series)"),
    "volume_oracle": (yes, "also train (b)'s recipe on complete boxes: the volume-level ceiling by lesion size (false saves one training)"),
    "work": (str, "where every artefact goes (relative to the repository)"),
    "results": (str, "the results page this run writes"),
    "model_dir": (str, "where the self-trained model is copied as model.pt (the bundle's model)"),
    "data": (str, "where the demo data, export, de-identified copy and mined datalist go"),
}


@dataclass
class Paths:
    """Where a run reads and writes, resolved against the repository."""

    work: Path
    data: Path
    model_out: Path
    log: Path

    @classmethod
    def of(cls, o: DemoOptions) -> Paths:
        work = ROOT / o.work
        return cls(work=work, data=ROOT / o.data, model_out=ROOT / o.model_dir / "model.pt", log=work / "demo.log")


def rel(p: Path) -> Path:
    """Paths on the results page: relative to the repository when they are inside it."""
    return p.relative_to(ROOT) if p.is_relative_to(ROOT) else p


def option_problem(o: DemoOptions) -> str:
    """Why these options cannot run, in one line ("" when they can)."""
    try:
        check_context_slices(o.context_slices)
    except ValueError:
        return f"--context_slices {o.context_slices}: an odd number of slices (1: 2D; 3: each slice with one neighbour each side)"
    if o.context_slices != 1 and not o.series:
        return f"--context_slices {o.context_slices} needs --series true: mined key slices carry no neighbours, whole series do"
    return ""
