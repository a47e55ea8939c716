"""De-identification (PS3.15 Annex E) of a DICOM export before it leaves the hospital: its own stage, before mining."""
