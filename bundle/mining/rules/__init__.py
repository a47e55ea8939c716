"""Rules with their defaults in code: series selection and measurement -> box (size rule, margins, duplicates)."""
