"""Create a tool venv (MONAI Label, MONAI Deploy) layered over the bundle's own environment.

Why: MONAI Label and the Deploy SDK each pull packages that clash with the bundle's environment
(pydicom-seg pins numpy<2; the Deploy SDK installs ``monai/deploy`` into MONAI's package folder, so
``import monai`` then imports Holoscan). A full venv with torch costs ~7 GB and a minute of
copying per tool; a layered venv reuses torch/monai/pydicom of the interpreter that runs this
script through a ``.pth`` file and installs only what the tool adds (a few hundred MB, < 1 min).
Packages installed into the layer shadow the base ones, so a clash stays inside the layer.

Requirements files are plain pip files plus two directives in comments:
``# [no-deps] name==ver`` installs without dependencies (after the plain requirements) and
``# [shadow] name==ver`` installs a private copy even when the base already has it.

    python scripts/make_venv.py --requirements deploy/app/requirements.txt --venv .venv-deploy
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _directives(text: str, name: str) -> list[str]:
    tag = f"# [{name}]"
    return [line[len(tag) :].strip() for line in text.splitlines() if line.startswith(tag)]


def _python(venv_dir: Path) -> Path:
    return venv_dir / "bin" / "python"


def make_venv(requirements: Path, venv_dir: Path, base_python: str = sys.executable, quiet: bool = True) -> Path:
    """Build (or reuse, when the requirements did not change) a layered venv; returns its python."""
    requirements = requirements.resolve()
    text = requirements.read_text()
    base_purelib = subprocess.check_output(
        [base_python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
    ).strip()
    stamp_text = hashlib.sha256((text + base_purelib).encode()).hexdigest()
    stamp = venv_dir / ".installed"
    if stamp.exists() and stamp.read_text() == stamp_text and _python(venv_dir).exists():
        return _python(venv_dir)
    base_prefix = subprocess.check_output([base_python, "-c", "import sys; print(sys.base_prefix)"], text=True).strip()
    if not _python(venv_dir).exists():
        # the venv must use the same base interpreter as the environment it layers over
        subprocess.check_call([str(Path(base_prefix) / "bin" / "python3"), "-m", "venv", str(venv_dir)])
    purelib = subprocess.check_output(
        [str(_python(venv_dir)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
    ).strip()
    # "00_" so the base is on sys.path before other .pth files run (holoscan's imports filelock)
    (Path(purelib) / "00_base_env.pth").write_text(base_purelib + "\n")
    pip = [str(_python(venv_dir)), "-m", "pip", "install"] + (["-q"] if quiet else [])
    subprocess.check_call(pip + ["-r", str(requirements)])
    shadow = _directives(text, "shadow")
    if shadow:
        subprocess.check_call(pip + ["--no-deps", "--ignore-installed", *shadow])
    no_deps = _directives(text, "no-deps")
    if no_deps:
        subprocess.check_call(pip + ["--no-deps", *no_deps])
    stamp.write_text(stamp_text)
    return _python(venv_dir)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requirements", required=True, type=Path)
    p.add_argument("--venv", required=True, type=Path)
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args()
    print(make_venv(a.requirements, a.venv if a.venv.is_absolute() else ROOT / a.venv, quiet=not a.verbose))


if __name__ == "__main__":
    main()
