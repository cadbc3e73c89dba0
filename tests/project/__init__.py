"""Project checks: packaging, deploy files, import contracts, the bench."""
