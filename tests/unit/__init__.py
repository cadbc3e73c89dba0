"""Unit tests, one folder per bot package: one module's behaviour, no Discord."""
