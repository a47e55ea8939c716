"""The de-identification options: the one place their defaults live.

configs/deidentify.yaml passes only the keys a site changes (`options:` or `--options#<key> <value>`);
everything else comes from the defaults below, so a default is never written twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bundle.deid.profile import TABLE_EDITION


@dataclass
class DeidOptions:
    """Profile options (PS3.15 Table E.1-1 columns) and the stage's own policies."""

    retain_longitudinal_modified_dates: bool = True
    date_shift_days: tuple[int, int] = (365, 3650)  # each patient's dates move back by a keyed amount in this range
    retain_patient_characteristics: bool = True
    clean_descriptors: bool = True
    clean_structured_content: bool = True
    clean_graphics: bool = True
    safe_private: list[str] = field(default_factory=list)  # "CREATOR:gggg:ee" (hex group, element offset in block)
    keep_overlays: bool = False  # Overlay Data is X in the Basic Profile; a bitmap may carry burned-in text
    burned_in: str = "exclude"  # or "blank": blank configured regions and keep the image
    burned_in_modalities: list[str] = field(default_factory=lambda: ["US", "SC"])
    blank_regions: list[dict[str, Any]] = field(
        default_factory=list
    )  # [{"modality"|"sop_class_uid"|"rows"|"columns": ..., "regions": [[x0,y0,x1,y1]]}]
    extra_phi_terms: list[str] = field(default_factory=list)  # site-specific strings to scrub from kept free text
    table_edition: str = TABLE_EDITION

    def __post_init__(self) -> None:
        if self.burned_in not in ("exclude", "blank"):
            raise ValueError(f"options.burned_in: expected 'exclude' or 'blank', got {self.burned_in!r}")
        self.date_shift_days = tuple(self.date_shift_days)  # type: ignore[assignment]  # a YAML or CLI list
        lo, hi = self.date_shift_days
        if not 0 <= lo <= hi:
            raise ValueError(f"options.date_shift_days: expected 0 <= min <= max, got {self.date_shift_days!r}")

    @classmethod
    def of(cls, options: DeidOptions | dict[str, Any] | None) -> DeidOptions:
        """Options as given, or the defaults with a mapping's keys overridden (unknown keys are an error)."""
        return options if isinstance(options, DeidOptions) else cls(**(options or {}))
