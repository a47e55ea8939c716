"""Series selection: which images are axial T1-weighted post-contrast, as real headers name them (mining and volume inference).

Why these inputs: vendors name the same series differently (Siemens "t1_mprage_tra_KM", GE "AX T1 SE +C" /
BRAVO / FSPGR, Philips "T1W_3D_TFE +Gd"), radiologists often measure on an axial reformat of a 3D
acquisition whose description says little ("MPR AX"), and the header carries more than the description:
ProtocolName, SequenceName, ScanningSequence + MRAcquisitionType, ContrastBolusAgent, ImageType, the plane.
The decision, in order (the first failing step is the reason; docs/mining.md has the table of names):
modality, ImageType, excluded kinds of series (localizer, T2, FLAIR, diffusion, ...), pre-contrast words,
site names accepted outright (`include`), T1 weighting, contrast, axial plane. Every step is a field, so
`configs/mine.yaml` can override it (`--series_rules#...`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from bundle.io.records import ImageInfo

# Names are matched lower-cased, with every character other than a-z 0-9 + * / turned into one space
# ("T1W_3D_TFE +Gd" -> "t1w 3d tfe +gd", "t1_mprage_tra_KM" -> "t1 mprage tra km"), so \b works around "_".
EXCLUDE = {
    "localizer": r"locali[sz]er|scout|survey|\baahead|\bautoalign|\b3 ?pl(ane)? loc|\btri ?pilot|\bcal(ibration)?\b|\bsense ?ref|\bref ?scan",
    "t2_pd": r"\bt2|\bpd\b|\bpdw|\bswi\b|\bswan\b|\bstir\b|\bhaste\b|\bfiesta\b|\bciss\b|\bdrive\b|\bmedic\b|\bmerge\b",
    "flair": r"(?<!t1 )(?<!t1w )\bflair|dark ?fluid|\btirm\b",
    "diffusion": r"\bdwi|\bdti\b|\badc\b|\bdiff|\btrace\w*|\btensor|\bep2d|\bresolve\b|\bb ?(500|800|1000|1500|2000|3000)\b|\beadc\b|\bfa\b",
    "perfusion_dynamic": r"perf|\bdsc\b|\bdce\b|\bpwi\b|\bp?c?asl\b|\bdyn|\btwist\b|\bbold\b|\bfmri\b|\bmoco\b|\brcbv\b|\bcbf\b|\bcbv\b|\bmtt\b|\bktrans",
    "angio_spectro": r"\btof\b|angio|\bmra\b|\bmrv\b|venogra|phase ?contrast|\bcine\b|\bsvs\b|\bcsi\b|spectro|\bmrs\b",
    "subtraction": r"\bsubs?\b|subtra[ck]t",
    "projection": r"\bmip\b|\bminip\b|\bmaxip\b|projection",
}
PRE_CONTRAST = (
    r"\bpre\b|\bprecon|pre ?contrast|pre ?(gd|gad|km)\b|\bnativ|\bohne\b|\bo ?km\b|\bw ?/ ?o\b|\bwo\b|\bwithout\b|non ?contrast"
    r"|\bnon ?con\b|unenhanced|non ?enhanced|\bplain\b|\bsans\b|\bsenza\b|sin contraste"
)
T1_NAMES = (
    r"\bt1|mp ?rage|\bmp2rage|\bbravo\b|\bfspgr\b|\bspgr\b|\btfe\b|\bvibe\b|\bstarvibe\b|\blava\b|\bspace\b|\bcube\b|\bflash\b"
    r"|\bfl3d|\btfl|\bthrive\b|\bvista\b|\bisfse\b|\b3d ?gre\b|\bgre ?3d\b"
)
T1_SEQUENCES = r"tfl|fl3d|fl2d|efgre3d|fspgr|spgr|bravo|tfe|t1|vibe|mprage|(^|[^t])se2d|lava|thrive"
CONTRAST_NAMES = (
    r"\bpost(?! ?fossa)(?!erior)|\+ ?c\b|\bc ?\+|\bgd\b|\bgad|\bkm\b|kontrast|contrast|\bmdc\b|\bce\b|\bt1 ?c\b|\bt1c\+|\bt1 ?ce\b|\bt1 ?gd\b"
    r"|enhanc|\bw ?/ ?c\b|dotarem|gadovist|gadavist|multihance|prohance|magnevist|omniscan|clariscan|vueway|elucirem"
)
NO_AGENT = r"^\s*(none|no|nein|keine?|ohne|0|n ?/ ?a|-+|nil)?\s*$"


def normalise(text: str) -> str:
    """Lower case; runs of characters other than a-z, 0-9, +, *, / become one space."""
    return re.sub(r"[^a-z0-9+*/]+", " ", text.lower()).strip()


@dataclass
class SeriesRules:
    """Axial T1 post-contrast selection (defaults: docs/mining.md, "Series rules"). Regexes match `normalise`d names."""

    modalities: list[str] = field(default_factory=lambda: ["MR"])
    image_type_exclude: list[str] = field(
        default_factory=lambda: ["LOCALIZER", "MIP", "MINIP", "PROJECTION IMAGE", "SUB", "SUBTRACTION", "DIFFUSION", "ADC", "TRACEW", "FA"]
    )
    # kind of series -> regex, on SeriesDescription and (protocol_name_excludes) ProtocolName; a list of regexes also works
    exclude: dict[str, str] | list[str] = field(default_factory=lambda: dict(EXCLUDE))
    protocol_name_excludes: bool = True  # GE's ProtocolName names the whole exam: turn off if it says e.g. "BRAIN DWI"
    pre_contrast: list[str] = field(default_factory=lambda: [PRE_CONTRAST])  # on SeriesDescription only ("W/WO" exams)
    include: list[str] = field(default_factory=list)  # site names accepted as T1 post-contrast outright (after the exclusions)
    t1_names: list[str] = field(default_factory=lambda: [T1_NAMES])  # SeriesDescription or ProtocolName
    t1_sequences: list[str] = field(default_factory=lambda: [T1_SEQUENCES])  # SequenceName / PulseSequenceName
    t1_from_3d_gradient_echo: bool = True  # ScanningSequence GR + MRAcquisitionType 3D (MPRAGE, BRAVO, VIBE, TFE)
    contrast_names: list[str] = field(default_factory=lambda: [CONTRAST_NAMES])  # SeriesDescription only
    contrast_from_agent: bool = True  # a filled-in ContrastBolusAgent counts (unless it says none)
    require_axial: bool = True
    axial_tolerance_deg: float = 25.0
    allow_missing_orientation: bool = True  # secondary captures carry no plane; other rules still apply


def normal_of(orientation: list[float]) -> np.ndarray:
    o = np.asarray(orientation, dtype=np.float64)
    n = np.cross(o[:3], o[3:])
    return n / (np.linalg.norm(n) or 1.0)


def _first(patterns: list[str], *texts: str) -> str | None:
    """The first pattern that matches one of the (normalised) texts."""
    for p in patterns:
        if any(t and re.search(p, t) for t in texts):
            return p
    return None


def _named_excludes(rules: SeriesRules) -> dict[str, str]:
    return rules.exclude if isinstance(rules.exclude, dict) else {p: p for p in rules.exclude}


def _is_t1(info: ImageInfo, rules: SeriesRules, desc: str, proto: str) -> bool:
    if _first(rules.t1_names, desc, proto) or _first(rules.t1_sequences, info.sequence_name.lower()):
        return True
    gradient_echo_3d = "GR" in [s.upper() for s in info.scanning_sequence] and info.acquisition_type.upper() == "3D"
    return rules.t1_from_3d_gradient_echo and gradient_echo_3d


def _names(info: ImageInfo, rules: SeriesRules) -> tuple[str, str] | None:
    """(reason, detail) from the names and the acquisition; None when they say axial T1 post-contrast."""
    desc, proto = normalise(info.series_description), normalise(info.protocol_name)
    said = f"SeriesDescription {info.series_description!r}, ProtocolName {info.protocol_name!r}"
    for kind, p in _named_excludes(rules).items():
        if _first([p], desc, proto if rules.protocol_name_excludes else ""):
            return "series_description", f"{kind}: {said} matches {p!r}"
    if _first(rules.pre_contrast, desc):
        return "series_description", f"pre_contrast: SeriesDescription {info.series_description!r} says pre-contrast"
    if _first(rules.include, info.series_description.lower()):
        return None
    if not _is_t1(info, rules, desc, proto):
        acq = f"SequenceName {info.sequence_name!r}, ScanningSequence {info.scanning_sequence}, MRAcquisitionType {info.acquisition_type!r}"
        return "series_description", f"not_t1: neither {said} nor {acq} shows T1 weighting"
    agent = rules.contrast_from_agent and not re.match(NO_AGENT, info.contrast_agent.lower())
    if not (_first(rules.contrast_names, desc) or agent):
        return (
            "series_description",
            f"no_contrast: SeriesDescription {info.series_description!r}, ContrastBolusAgent {info.contrast_agent!r}",
        )
    return None


def check_series(info: ImageInfo, rules: SeriesRules) -> tuple[str, str] | None:
    """(reason, detail) when the image's series fails the rules; None when it is selected. Detail starts with the step's name."""
    if rules.modalities and info.modality not in rules.modalities:
        return "modality", f"modality {info.modality!r} not in {rules.modalities}"
    bad = sorted(set(v.upper() for v in info.image_type) & set(v.upper() for v in rules.image_type_exclude))
    if bad:
        return "image_type", f"ImageType {info.image_type} contains {bad}"
    failed = _names(info, rules)
    if failed:
        return failed
    if rules.require_axial:
        if info.orientation is None or len(info.orientation) != 6:
            if not rules.allow_missing_orientation:
                return "not_axial", "no ImageOrientationPatient"
        else:
            tilt = float(np.degrees(np.arccos(min(1.0, abs(normal_of(info.orientation)[2])))))
            if tilt > rules.axial_tolerance_deg:
                return "not_axial", f"plane normal {tilt:.0f} deg from the patient z axis"
    return None
