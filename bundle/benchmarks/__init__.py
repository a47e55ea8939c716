"""The benchmark (docs/benchmarks.md, scripts/benchmark.py): one module per section, the run that drives them, the page."""
