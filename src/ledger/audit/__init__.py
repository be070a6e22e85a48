"""Replay and audit: as-of reads, explain, verify, what-if, all from the pure core."""
