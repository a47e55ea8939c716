"""Data preparation stages: de-identification, conversion, splits."""
