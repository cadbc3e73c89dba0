"""Tests of the sandbox: the DashScope and Discord emulators, the sandbox video and the demo."""
