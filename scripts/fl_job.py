"""Write the NVIDIA FLARE job that trains this bundle at several hospitals (bundle/federated/job.py; docs/distributed.md).

    python scripts/fl_job.py --out jobs/fedavg --num_rounds 20 \
        --site hospital-a=/data/a/datalist.json --site hospital-b=/data/b/datalist.json
    nvflare simulator jobs/fedavg -w /tmp/fl_workspace -n 2 -t 2

A site is NAME=DATALIST[,DATASET_DIR] (DATASET_DIR defaults to the datalist's folder), paths as that site sees them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundle.federated.job import JobSpec, Site, write_job  # noqa: E402


def _site(text: str) -> Site:
    name, _, paths = text.partition("=")
    datalist, _, dataset_dir = paths.partition(",")
    if not name or not datalist:
        raise argparse.ArgumentTypeError(f"--site wants NAME=DATALIST[,DATASET_DIR], got {text!r}")
    return Site(name, datalist, dataset_dir or str(Path(datalist).parent))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="the job folder to write")
    p.add_argument("--site", type=_site, action="append", required=True)
    p.add_argument("--num_rounds", type=int, default=JobSpec.num_rounds)
    p.add_argument("--local_epochs", type=int, default=JobSpec.local_epochs)
    p.add_argument("--override", action="append", default=[], help="KEY=JSON, any configs/train.yaml key for every site")
    a = p.parse_args()
    overrides = {k: json.loads(v) for k, _, v in (o.partition("=") for o in a.override)}
    spec = JobSpec(num_rounds=a.num_rounds, local_epochs=a.local_epochs, overrides=overrides)
    print(write_job(a.out, a.site, spec))


if __name__ == "__main__":
    main()
