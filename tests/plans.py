"""Reading EXPLAIN's JSON: what a statement touched, for tests that a query
stays a probe as the log grows (a timing would be flaky; buffer counts are not)."""

from __future__ import annotations

import json
from typing import Any

from ledger.store.database import Connection


async def explain(conn: Connection, statement: str, *args: Any) -> dict[str, Any]:
    """The executed plan of ``statement`` (``EXPLAIN (ANALYZE, BUFFERS)``), its top node."""
    (explained,) = json.loads(
        await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}", *args)
    )
    plan: dict[str, Any] = explained["Plan"]
    return plan


async def pages_of(conn: Connection, relation: str) -> int:
    """How many pages ``relation`` has: a walk of it touches about that many buffers."""
    pages: int = await conn.fetchval(
        "SELECT pg_relation_size($1::regclass) / current_setting('block_size')::int", relation
    )
    return pages


def blocks_on(plan: dict[str, Any], relation: str) -> int:
    """Buffers that the plan's nodes on ``relation`` touched."""
    own = (
        plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)
        if plan.get("Relation Name") == relation
        else 0
    )
    return own + sum(blocks_on(child, relation) for child in plan.get("Plans", []))
