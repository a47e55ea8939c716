"""Readers, one format per file: each turns one annotation object into measurements (never raises on bad input)."""
