"""Series selection: which referenced images count as axial T1 post-contrast (configurable rules)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from bundle.io.records import ImageInfo


@dataclass
class SeriesRules:
    """Regexes on SeriesDescription (case-insensitive), ImageType exclusions, modality, axial plane check."""

    include: list[str] = field(
        default_factory=lambda: [r"t1.*(post|\+ ?c|gad|contrast|ce\b)", r"(post|\+ ?c|gad).*t1", r"mprage.*(post|gad|\+c)"]
    )
    exclude: list[str] = field(
        default_factory=lambda: [r"\bsub\b", r"subtract", r"localizer|scout|survey", r"\bmip\b", r"\bmpr\b", r"flair|t2|dwi|adc"]
    )
    image_type_exclude: list[str] = field(default_factory=lambda: ["LOCALIZER", "MIP"])
    modalities: list[str] = field(default_factory=lambda: ["MR"])
    require_axial: bool = True
    axial_tolerance_deg: float = 25.0
    allow_missing_orientation: bool = True  # secondary captures carry no plane; other rules still apply


def normal_of(orientation: list[float]) -> np.ndarray:
    o = np.asarray(orientation, dtype=np.float64)
    n = np.cross(o[:3], o[3:])
    return n / (np.linalg.norm(n) or 1.0)


def check_series(info: ImageInfo, rules: SeriesRules) -> tuple[str, str] | None:
    """(reason, detail) when the image's series fails the rules; None when it is selected."""
    if rules.modalities and info.modality not in rules.modalities:
        return "modality", f"modality {info.modality!r} not in {rules.modalities}"
    desc = info.series_description
    if rules.include and not any(re.search(p, desc, re.IGNORECASE) for p in rules.include):
        return "series_description", f"{desc!r} matches no include rule"
    for p in rules.exclude:
        if re.search(p, desc, re.IGNORECASE):
            return "series_description", f"{desc!r} matches exclude rule {p!r}"
    bad = sorted(set(v.upper() for v in info.image_type) & set(v.upper() for v in rules.image_type_exclude))
    if bad:
        return "image_type", f"ImageType contains {bad}"
    if rules.require_axial:
        if info.orientation is None or len(info.orientation) != 6:
            if not rules.allow_missing_orientation:
                return "not_axial", "no ImageOrientationPatient"
        else:
            tilt = float(np.degrees(np.arccos(min(1.0, abs(normal_of(info.orientation)[2])))))
            if tilt > rules.axial_tolerance_deg:
                return "not_axial", f"plane normal {tilt:.0f} deg from the patient z axis"
    return None
