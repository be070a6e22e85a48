"""Projections: balances, relationships and timelines derived from the log."""
