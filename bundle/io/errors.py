"""The project's error for bad user input, and the hook that prints it as one line.

Why here (the lowest layer): every stage raises it (datalists, image checks, mining and de-identification
sources), and every config's ``initialize`` installs the hook, so ``python -m monai.bundle run`` ends a bad
input with one line naming the file and the problem and a non-zero exit code, while a genuine bug keeps its
traceback. ``BUNDLE_DEBUG=1`` shows the traceback for input errors too.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType

DEBUG_ENV = "BUNDLE_DEBUG"


class InputError(ValueError):
    """A file (or folder) the user handed the bundle is unusable; the message names it and says why."""


def find_input_error(exc: BaseException | None) -> InputError | None:
    """The InputError behind ``exc``: MONAI wraps it (``Failed to evaluate``, ``applying transform``)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, InputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    err = find_input_error(exc)
    if err is None or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        sys.__excepthook__(kind, exc, tb)
        return
    print(f"error: {err} ({DEBUG_ENV}=1 shows the traceback)", file=sys.stderr, flush=True)


def install_excepthook() -> None:
    """Uncaught InputErrors print one line (exit code 1); everything else prints its traceback as usual."""
    sys.excepthook = _hook
