"""End to end: the real bot against the Discord and DashScope emulators."""
