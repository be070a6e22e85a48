"""Audit: the log's digest, erasure by crypto-shredding, export and import."""
