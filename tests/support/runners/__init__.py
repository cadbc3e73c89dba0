"""Helper processes the crash tests spawn as `python -m tests.support.runners.<name>` and kill mid-work."""
