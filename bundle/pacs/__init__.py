"""PACS sources: a folder export or a live DICOMweb server (QIDO-RS / WADO-RS / STOW-RS)."""
