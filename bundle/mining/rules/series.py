"""Series selection rules, kept importable here for mining's code and configs (`bundle.mining.rules.series.SeriesRules`).

Their home is bundle/datalist/series_rules.py: volume inference picks the axial T1 post-contrast series of a DICOM
study folder with the same rules, and the model side reads data only through the datalist layer and io.
"""

from bundle.datalist.series_rules import (
    CONTRAST_NAMES,
    EXCLUDE,
    NO_AGENT,
    PRE_CONTRAST,
    T1_NAMES,
    T1_SEQUENCES,
    SeriesRules,
    check_series,
    normal_of,
    normalise,
)

__all__ = [
    "CONTRAST_NAMES",
    "EXCLUDE",
    "NO_AGENT",
    "PRE_CONTRAST",
    "T1_NAMES",
    "T1_SEQUENCES",
    "SeriesRules",
    "check_series",
    "normal_of",
    "normalise",
]
