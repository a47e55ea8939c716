"""Active learning: which unreviewed study a radiologist should review next, and a reviewed study as complete labels."""
