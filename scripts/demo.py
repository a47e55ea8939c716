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

from bundle.demo.options import FLAGS, DemoOptions, option_problem  # noqa: E402
from bundle.demo.run import run  # noqa: E402
from bundle.steps.runner import one_line_on_failed_step  # noqa: E402


def parse(argv: list[str] | None = None) -> DemoOptions:
    """Command-line flags -> DemoOptions (its defaults are the flags' defaults; the flags are bundle/demo/options.py FLAGS)."""
    d = DemoOptions()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, (kind, text) in FLAGS.items():
        ap.add_argument(f"--{name}", type=kind, default=getattr(d, name), help=text)
    o = DemoOptions(**vars(ap.parse_args(argv)))
    if option_problem(o):  # one line, not run()'s ValueError traceback
        ap.error(option_problem(o))
    return o


def main() -> None:
    command = " ".join(shlex.quote(c) for c in [Path(sys.executable).name, "scripts/demo.py", *sys.argv[1:]])
    with one_line_on_failed_step():  # the failed step's traceback is in runs/demo/demo.log
        run(parse(), command)


if __name__ == "__main__":
    main()
