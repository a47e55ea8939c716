"""Where the bundle's own folders are. One place resolves them, so no module counts `parents[...]` itself.

Why: MONAI Label and the model zoo put the bundle root on ``sys.path`` (they do not pip-install it), so
the root is the folder above this package wherever it was copied to.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
MODELS = ROOT / "models"
DOCS = ROOT / "docs"


def config(name: str) -> str:
    """A bundle config's path, as ``monai.bundle run --config_file`` takes it."""
    return str(CONFIGS / name)


# a config line that takes one key from another config file: `network_def: "%configs/network.yaml#network_def"`
_MACRO_LINE = re.compile(r'^(?P<key>\w+): "%(?P<path>[\w./-]+\.ya?ml)#(?P=key)"')


def resolve_macros(config, root: str | Path = ROOT):
    """``config`` (a loaded config: nested dicts and lists) with each macro replaced by what it names, read under ``root``.

    Why: MONAI's ConfigParser reads a macro's file (``%configs/network.yaml#network_def``) relative to the working
    directory; a process whose working directory is not the bundle root (an app, packaging, a test) resolves them here,
    against the bundle the config belongs to. Everything else is left as written (ids keep their ``#``)."""
    if isinstance(config, dict):
        return {k: resolve_macros(v, root) for k, v in config.items()}
    if isinstance(config, list):
        return [resolve_macros(v, root) for v in config]
    if isinstance(config, str) and config.startswith("%") and "#" in config and config.index("#") > 1:
        from monai.bundle import ConfigParser

        path, ids = config[1:].split("#", 1)
        return copy.deepcopy(ConfigParser(ConfigParser.load_config_file(Path(root) / path))[ids])
    return config


def read_config(parser, files: str | Path | list, root: str | Path = ROOT):
    """``parser.read_config(files)``, its macros resolved under ``root`` (the bundle the files belong to); the parser."""
    parser.read_config([str(f) for f in files] if isinstance(files, list) else str(files))
    parser.set(resolve_macros(parser.get(), root))
    return parser


def inline_macros(text: str, root: str | Path = ROOT) -> str:
    """A config's text with each macro line replaced by the block it names (the key's lines in that file, comments kept).

    Why: the model zoo's checks and MONAI Label read a packaged bundle from another working directory, where a
    macro's relative path finds nothing; the packaged configs therefore carry the network's keys themselves."""
    out = []
    for line in text.split("\n"):
        m = _MACRO_LINE.match(line)
        out += _block(Path(root) / m["path"], m["key"]) if m else [line]
    return "\n".join(out)


def _block(path: Path, key: str) -> list[str]:
    """The lines of top-level ``key`` in a YAML file: its own line and the indented lines under it."""
    lines = path.read_text().split("\n")
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"{key}:"))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines))
    return lines[start:end]
