"""The README's main job, end to end on the built-in demo data (the steps are bundle/demo/run.py).

demo data -> PACS export (DICOM, GSPS, SR) -> de-identification -> mining -> three trainings:
(a) mined key slices only, (b) whole mined series with ignore regions (--series_rounds: self-trained over every slice),
(c) oracle on complete boxes -> evaluation on held-out, fully annotated test patients: per volume
(sensitivity, false boxes per volume, paired test), then key slices (F1 with 95% CI, FROC, COCO) ->
inference with the final model -> runs/demo/results.md (docs/results.md is written by scripts/ablation.py, docs/results_key_slices.md by scripts/replicate.py).

Every model step is a plain ``python -m monai.bundle run`` command, printed before it runs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundle.demo.run import DemoOptions, option_problem, run  # noqa: E402
from bundle.selftrain.pseudo import parse_threshold  # noqa: E402
from bundle.steps.runner import one_line_on_failed_step  # noqa: E402


def parse(argv: list[str] | None = None) -> DemoOptions:
    """Command-line flags -> DemoOptions (its defaults are the flags' defaults)."""
    d = DemoOptions()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default=d.size, help="demo size: tiny, small, default, large (large is for a GPU machine)")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--epochs", type=int, default=d.epochs, help="epochs of each training")
    ap.add_argument("--rounds", type=int, default=d.rounds, help="key-slice self-training rounds (--series false)")
    ap.add_argument("--series_rounds", type=int, default=d.series_rounds, help="(b)'s self-training rounds over every slice")
    ap.add_argument(
        "--score_threshold",
        type=parse_threshold,
        default=d.score_threshold,
        help="pseudo-box score threshold, or 'auto': where each teacher reaches --target_precision on validation",
    )
    ap.add_argument(
        "--target_precision", type=float, default=d.target_precision, help="with 'auto' (docs/selftraining.md explains the choice)"
    )
    ap.add_argument("--n_bootstrap", type=int, default=d.n_bootstrap)
    ap.add_argument(
        "--series",
        type=lambda v: v.lower() in ("1", "true", "yes"),
        default=d.series,
        help="(b) on whole series with ignore regions (false: key slices)",
    )
    ap.add_argument(
        "--context_slices", type=int, default=d.context_slices, help="(b)'s input slices: 3 (2.5D: each slice with its neighbours), 1 (2D)"
    )
    ap.add_argument(
        "--ignore_floor", type=float, default=d.ignore_floor, help="series self-training: lowest teacher score made an ignore region"
    )
    ap.add_argument("--series_target_precision", type=float, default=d.series_target_precision)
    ap.add_argument("--max_pseudo_per_series", type=int, default=d.max_pseudo_per_series)
    ap.add_argument(
        "--unread_share", type=float, default=d.unread_share, help="share of studies with lesions no reader measured (unlabelled series)"
    )
    ap.add_argument(
        "--volume_oracle",
        type=lambda v: v.lower() in ("1", "true", "yes"),
        default=d.volume_oracle,
        help="also train (b)'s recipe on complete boxes: the volume-level ceiling by lesion size (false saves one training)",
    )
    ap.add_argument("--work", default=d.work, help="where every artefact goes (relative to the repository)")
    ap.add_argument("--results", default=d.results, help="the results page this run writes")
    ap.add_argument("--model_dir", default=d.model_dir, help="where the self-trained model is copied as model.pt (the bundle's model)")
    ap.add_argument("--data", default=d.data, help="where the demo data, export, de-identified copy and mined datalist go")
    args = ap.parse_args(argv)
    o = DemoOptions(**vars(args))
    if option_problem(o):  # one line, not run()'s ValueError traceback
        ap.error(option_problem(o))
    return o


def main() -> None:
    command = " ".join(shlex.quote(c) for c in [Path(sys.executable).name, "scripts/demo.py", *sys.argv[1:]])
    with one_line_on_failed_step():  # the failed step's traceback is in runs/demo/demo.log
        run(parse(), command)


if __name__ == "__main__":
    main()
