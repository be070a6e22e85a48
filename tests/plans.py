"""Reading EXPLAIN's JSON: what a statement touched, for tests that a query
stays a probe as the log grows (a timing would be flaky; buffer counts are not)."""

from __future__ import annotations

from typing import Any


def blocks_on(plan: dict[str, Any], relation: str) -> int:
    """Buffers that the plan's nodes on ``relation`` touched (``EXPLAIN (ANALYZE,
    BUFFERS, FORMAT JSON)``, the ``Plan`` of its one entry)."""
    own = (
        plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)
        if plan.get("Relation Name") == relation
        else 0
    )
    return own + sum(blocks_on(child, relation) for child in plan.get("Plans", []))
