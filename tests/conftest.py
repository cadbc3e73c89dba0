"""Shared fixtures: PostgreSQL for the tests that run over both database engines (tests/support/postgres.py)."""

pytest_plugins = ("tests.support.postgres",)
