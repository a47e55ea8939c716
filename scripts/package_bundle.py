"""Package the bundle for the model zoo or a MONAI Label app (bundle/serving/package.py does the work).

python scripts/package_bundle.py                      # dist/brain_mri_tumor_detection/ + .zip
python scripts/package_bundle.py --target monailabel --out apps/monaibundle/model/brain_mri_tumor_detection
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bundle.paths import ROOT  # noqa: E402
from bundle.serving.package import NAME, package  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "dist" / NAME)
    p.add_argument("--target", choices=["zoo", "monailabel"], default="zoo")
    p.add_argument("--models-dir", type=Path, default=None, help="where model.pt/model.ts are (default: models/)")
    p.add_argument("--large-files-url", default="", help="where a release hosts model.pt/model.ts (fills large_files.yml url)")
    p.add_argument("--no-zip", action="store_true")
    a = p.parse_args()
    res = package(a.out.resolve(), target=a.target, make_zip=not a.no_zip, models_dir=a.models_dir, large_files_url=a.large_files_url)
    print(json.dumps({"folder": res["folder"], "zip": res["zip"], "n_files": len(res["files"])}, indent=1))
    for f in res["files"]:
        print(" ", f)


if __name__ == "__main__":
    main()
