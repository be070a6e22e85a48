"""Replay and audit: the log's digest, erasure by crypto-shredding, export and import;
as-of reads, explain, verify and what-if, all from the pure core."""
