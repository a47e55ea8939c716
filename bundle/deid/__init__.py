"""De-identification (PS3.15 Annex E) of a DICOM export before it leaves the hospital: its own stage, before mining.

Entry: deidentify.py (`deidentify_folder`, `run` for configs/deidentify.yaml); options and their defaults: options.py.
The other modules are named by concern; docs/deidentification.md has the map.
"""
