"""Self-training from the command line: configs/self_train.yaml with the given overrides, then its report.

Every option is a key of the config (its defaults live in code: PseudoRules, Schedule), e.g.
  python scripts/self_train.py --datalist data/mined/datalist.json --work_dir runs/selftrain \
      --schedule#rounds 1 --pseudo_rules#score_threshold 0.9 --train_overrides '{"epochs": 20}'
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundle.steps.runner import bundle_run, config_overrides, one_line_on_failed_step  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    overrides = config_overrides(list(sys.argv[1:] if argv is None else argv), __doc__)
    work = Path(overrides.get("work_dir", "runs/selftrain"))
    work = work if work.is_absolute() else Path.cwd() / work
    overrides["work_dir"] = work
    for key in ("datalist", "truth"):  # the config runs from the bundle root; paths are the caller's
        if key in overrides and overrides[key] not in ("null", "None") and not Path(overrides[key]).is_absolute():
            overrides[key] = Path.cwd() / overrides[key]
    with one_line_on_failed_step():
        bundle_run("configs/self_train.yaml", ROOT, work / "self_train_command.log", **overrides)
    print((work / "report.md").read_text())
    print(f"stopped: {json.loads((work / 'state.json').read_text())['stopped']}")


if __name__ == "__main__":
    main()
