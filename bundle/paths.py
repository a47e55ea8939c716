"""Where the bundle's own folders are. One place resolves them, so no module counts `parents[...]` itself.

Why: MONAI Label and the model zoo put the bundle root on ``sys.path`` (they do not pip-install it), so
the root is the folder above this package wherever it was copied to.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
MODELS = ROOT / "models"
DOCS = ROOT / "docs"


def config(name: str) -> str:
    """A bundle config's path, as ``monai.bundle run --config_file`` takes it."""
    return str(CONFIGS / name)
