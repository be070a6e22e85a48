"""Reading the log: by cursor (gap-free), by stream, by id.

Why readers follow ``(tx_id, position)`` and a commit horizon
------------------------------------------------------------
Positions come from a sequence, handed out when a transaction inserts, not
when it commits. A writer that took position 41 may commit after a writer that
took 42; a reader that saw 42 and moved its cursor past it would never see 41.
That is the classic lost-event hole of PostgreSQL event stores.

Two cures were on the table. A lock per tenant (``LOCK TABLE``, an advisory
lock, a counter row) makes positions contiguous and commit-ordered, but it
serialises every append of a tenant: about 1,000 appends/s with 32 writers on
this hardware. We chose the other one, a commit horizon: every row stores the
``xid8`` of the transaction that wrote it, readers order by ``(tx_id,
position)`` and only read rows whose transaction is older than the oldest
transaction still running (``pg_snapshot_xmin(pg_current_snapshot())``).
Every transaction below that horizon has finished, so nothing can later
appear before a cursor a reader has already passed. Writers never wait for
each other (about 5,000 appends/s in the same setting).

The price: the cursor is composite (hence opaque), and a long transaction
anywhere in the PostgreSQL cluster holds the horizon back, so a follower of the
log sees new events late (never wrongly). :func:`horizon` reports how far
behind it is, and ``GET /v1/events/horizon`` serves that to operators.
Single-event and stream reads are not held back: versions within a stream are
already commit-ordered by the ``(tenant_id, stream, version)`` constraint.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

import msgspec

from ledger.audit.erasure import opened
from ledger.store.cursor import Cursor, encode_version_cursor
from ledger.store.database import Connection


class Envelope(msgspec.Struct, frozen=True):
    """An event as readers see it; ``cursor`` resumes the log right after it."""

    id: uuid.UUID
    type: str
    stream: str
    version: int
    position: int
    occurred_at: datetime
    recorded_at: datetime
    data: dict[str, Any]
    metadata: dict[str, Any]
    cursor: str


class EventPage(msgspec.Struct, frozen=True):
    items: list[Envelope]
    next_cursor: str | None


class Horizon(msgspec.Struct, frozen=True):
    """How far the readable log lags behind what is committed."""

    cursor: str | None
    pending_events: int
    oldest_transaction_age_seconds: float | None


# Qualified with `e`, so that projections can join their rows to the events.
# Sealed personal data comes with its person's key (NULL once forgotten); the
# key is looked up only for the rare rows that carry sealed data.
ENVELOPE_COLUMNS: Final = """e.id, e.type, e.stream, e.version, e.position,
       e.tx_id::text::bigint AS tx_id, e.occurred_at, e.recorded_at, e.data, e.metadata,
       e.sealed, CASE WHEN e.sealed IS NOT NULL THEN
         (SELECT k.key FROM person_keys k
           WHERE k.tenant_id = e.tenant_id AND k.person = e.data->>'person') END AS person_key"""

# The commit horizon: only rows of transactions older than every running one.
VISIBLE: Final = "tx_id < pg_snapshot_xmin(pg_current_snapshot())"

_LOG_FILTERS: Final = {
    (False, False): "",
    (True, False): "AND type = ANY($5::text[])",
    (False, True): "AND people @> $5::jsonb",
    (True, True): "AND type = ANY($5::text[]) AND people @> $6::jsonb",
}
# One fixed statement per filter combination, so each gets its own plan.
_READ_LOG: Final = {
    key: f"""
SELECT {ENVELOPE_COLUMNS}
FROM events e
WHERE tenant_id = $1
  AND (tx_id, position) > ($2::text::xid8, $3::bigint)
  AND {VISIBLE}
  {fragment}
ORDER BY e.tx_id, e.position  -- the column, not the bigint alias: keeps the index order
LIMIT $4
"""
    for key, fragment in _LOG_FILTERS.items()
}

_READ_STREAM: Final = f"""
SELECT {ENVELOPE_COLUMNS}
FROM events e
WHERE tenant_id = $1 AND stream = $2 AND version > $3
ORDER BY version
LIMIT $4
"""

_BY_ID: Final = f"""
SELECT {ENVELOPE_COLUMNS}
FROM events e
WHERE tenant_id = $1 AND id = $2
"""

_HORIZON: Final = f"""
SELECT
  (SELECT count(*) FROM events
    WHERE tenant_id = $1 AND NOT ({VISIBLE})) AS pending,
  (SELECT extract(epoch FROM clock_timestamp() - min(xact_start))::float8
     FROM pg_stat_activity WHERE backend_xid IS NOT NULL) AS oldest_age,
  (SELECT ARRAY[tx_id::text::bigint, position] FROM events
    WHERE tenant_id = $1 AND {VISIBLE}
    ORDER BY tx_id DESC, position DESC LIMIT 1) AS head
"""


def envelope_of(row: Any) -> Envelope:
    """The one place stored rows become envelopes, so the one place personal
    data is opened (or shown erased)."""
    return Envelope(
        id=row["id"],
        type=row["type"],
        stream=row["stream"],
        version=row["version"],
        position=row["position"],
        occurred_at=row["occurred_at"],
        recorded_at=row["recorded_at"],
        data=opened(row["data"], row["sealed"], row["person_key"], row["id"]),
        metadata=row["metadata"],
        cursor=Cursor(row["tx_id"], row["position"]).encode(),
    )


async def read_log(
    conn: Connection,
    tenant_id: int,
    *,
    after: Cursor | None,
    limit: int,
    types: list[str] | None = None,
    person: str | None = None,
) -> EventPage:
    """The tenant's log after ``after`` (from the start when None), gap-free."""
    after = after or Cursor(0, 0)
    args: list[Any] = [tenant_id, str(after.tx_id), after.position, limit]
    if types:
        args.append(types)
    if person is not None:
        args.append(msgspec.json.encode([person]))
    rows = await conn.fetch(_READ_LOG[(bool(types), person is not None)], *args)
    items = [envelope_of(row) for row in rows]
    next_cursor = items[-1].cursor if len(items) == limit else None
    return EventPage(items=items, next_cursor=next_cursor)


async def read_stream(
    conn: Connection, tenant_id: int, stream: str, *, after_version: int, limit: int
) -> EventPage:
    rows = await conn.fetch(_READ_STREAM, tenant_id, stream, after_version, limit)
    items = [envelope_of(row) for row in rows]
    next_cursor = encode_version_cursor(items[-1].version) if len(items) == limit else None
    return EventPage(items=items, next_cursor=next_cursor)


async def get_event(conn: Connection, tenant_id: int, event_id: uuid.UUID) -> Envelope | None:
    row = await conn.fetchrow(_BY_ID, tenant_id, event_id)
    return None if row is None else envelope_of(row)


async def horizon(conn: Connection, tenant_id: int) -> Horizon:
    row = await conn.fetchrow(_HORIZON, tenant_id)
    assert row is not None
    head = row["head"]
    return Horizon(
        cursor=None if head is None else Cursor(head[0], head[1]).encode(),
        pending_events=row["pending"],
        oldest_transaction_age_seconds=row["oldest_age"],
    )
