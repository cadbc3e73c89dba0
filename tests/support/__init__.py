"""Shared test support: stand-ins for the engine's ports."""
