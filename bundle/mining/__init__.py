"""Mining: turn radiologists' measurements (GSPS, SR TID 1500, overlays, CSV) into detection boxes."""
