"""Benchmarks of the ledger's append paths and projections, each beside a raw baseline.

Run with ``python -m bench`` (or ``--quick`` for a short run). Every figure is
measured next to its baseline in the same run, on the same PostgreSQL, and the
two alternate in rounds, so the ratio survives a noisy machine better than
either number alone. See ``BENCHMARKS.md`` for what each figure means.
"""
