"""Generate the synthetic brain-MRI demo set (volumes, masks, truth, 2D detection datalist)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundle.demo.synth import SIZES, generate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="data/demo")
    ap.add_argument("--size", default="default", choices=sorted(SIZES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--patients", type=int, default=None, help="override the size's patient count")
    a = ap.parse_args()
    t0 = time.time()
    res = generate(a.out, size=a.size, seed=a.seed, n_patients=a.patients)
    res["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
