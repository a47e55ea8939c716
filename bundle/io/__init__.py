"""Low-level I/O: read one DICOM/PNG object, write one NIfTI slice or volume, and the records they yield. No policy."""
