"""Benchmarks: `python -m bench NAME` (or `all`); each prints one JSON line of figures last."""
