"""Shared fixtures: PostgreSQL for the tests that run over both database engines (tests/support/postgres.py),
and the settings that put a whole engine on either (tests/support/engines.py)."""

pytest_plugins = ("tests.support.postgres", "tests.support.engines")
