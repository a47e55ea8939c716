"""Self-training: teacher -> pseudo-boxes -> student, over rounds chosen on validation."""
