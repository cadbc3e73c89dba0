"""Reliability and security campaigns: crashes, faults, bad input, failover."""
