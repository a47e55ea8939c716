"""The size rule: which lesions a mined datalist can hold. Its one home, shared by both sides.

Why here: mining applies it to every measurement, self-training to every pseudo-box, and evaluation
reports results inside it; all three read this dataclass (configs override its keys) instead of
repeating 10 and 70.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class SizeRule:
    """Seed study: keep measurements whose long axis is 1 cm to 7 cm (both ends included)."""

    min_long_mm: float = 10.0
    max_long_mm: float = 70.0

    def reason(self, length_mm: float) -> str | None:
        """'too_small' / 'too_large' (mining's exclusion reasons), or None inside the range."""
        if length_mm < self.min_long_mm:
            return "too_small"
        if length_mm > self.max_long_mm:
            return "too_large"
        return None

    def contains(self, length_mm: float) -> bool:
        return self.reason(length_mm) is None


def from_config(cls: type, value: Any) -> Any:
    """A rules dataclass from an instance (configs build them with `_target_`), a mapping of its fields, or None (defaults)."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        return cls(**value)
    raise TypeError(f"{cls.__name__}: expected a {cls.__name__} or a mapping of its fields, got {type(value).__name__}")
