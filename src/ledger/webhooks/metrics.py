"""Webhook gauges for ``/metrics``: the outbox's backlog, its dead letters, failed attempts.

Read at each scrape from the outbox itself, so every API process reports the
same numbers (they are the database's, not a process's); no tenant label.
"""

from __future__ import annotations

from typing import Final

from ledger.observe.metrics import Gauge, gauge_source
from ledger.store.database import Connection

_OUTBOX: Final = """
SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'dead') AS dead,
       coalesce(sum(attempts) - count(*) FILTER (WHERE status = 'delivered'), 0) AS failed,
       extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'pending'))::float8
           AS oldest_pending
FROM webhook_deliveries
"""


@gauge_source
async def outbox(conn: Connection) -> list[Gauge]:
    row = await conn.fetchrow(_OUTBOX)
    assert row is not None
    return [
        Gauge(
            name="ledger_webhook_backlog",
            help="Webhook deliveries waiting for their next attempt",
            value=row["pending"],
        ),
        Gauge(
            name="ledger_webhook_dead",
            help="Webhook deliveries that failed their last retry (replayable)",
            value=row["dead"],
        ),
        Gauge(
            name="ledger_webhook_failures_total",
            help="Webhook delivery attempts that failed, over the outbox's life",
            value=row["failed"],
            kind="counter",
        ),
        Gauge(
            name="ledger_webhook_oldest_pending_seconds",
            help="Age of the oldest delivery still waiting (0 when none)",
            value=row["oldest_pending"] or 0.0,
        ),
    ]
