"""Replaying a tenant's log into the pure core, bounded in transaction or valid time.

Every audit answer (as_of reads, explain, verify, what-if) comes from
:class:`ledger.projections.core.Fold`, the same code the live projector runs:
an audit that re-derived with other code would prove nothing. This module is
the storage adapter that feeds it.

Two ways of reading, by cost:

- :func:`involving` replays only what one person or one pair needs: their
  events through the GIN index on ``events.people``, plus every event of the
  favor and introduction streams among them (a decline names only the decliner;
  the fold needs the request to know who was declined), plus the policy
  changes. Cost: two indexed queries and a fold of the person's (or pair's)
  events, independent of the tenant's size; a very active person is the
  expensive case (all their events are read and folded on each call).
- :func:`log_until` streams the whole log in batches with the projector's own
  reader (verify); cost proportional to the tenant's log.

Seam for the violations projection: rules evaluate events in ``occurred_at``
order against the state just before each. A violations-as-of read can take the
:class:`Replay` events from :func:`involving` (already bounded, deduplicated)
and run the rules over them with the same ``policies``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final

import msgspec

from ledger.audit.asof import FIELD
from ledger.errors import InvalidInput, Unavailable
from ledger.projections.core import Fold, PolicyTimeline, ProjectedEvent
from ledger.projections.projector import to_projected
from ledger.store.cursor import START, Cursor
from ledger.store.database import Connection
from ledger.store.read import ENVELOPE_COLUMNS, VISIBLE, Envelope, envelope_of


class Bound(msgspec.Struct, frozen=True, kw_only=True):
    """The part of the log a replay sees.

    ``cursor``: recorded at or before this place in the log (transaction time);
    ``happened_by``: occurred at or before this moment (valid time), or no limit;
    ``now``: the moment time-dependent values (stage, strength) are read at.
    """

    cursor: Cursor
    happened_by: datetime | None
    now: datetime


_COLUMNS: Final = (
    "e.id, e.type, e.occurred_at, e.tx_id::text::bigint AS tx_id, e.position, e.data, e.stream"
)
_WITHIN: Final = f"""(e.tx_id, e.position) <= ($2::text::xid8, $3::bigint)
  AND ($4::timestamptz IS NULL OR e.occurred_at <= $4)
  AND e.{VISIBLE}"""

_INVOLVING: Final = f"""
SELECT {_COLUMNS}
FROM events e
WHERE e.tenant_id = $1 AND {_WITHIN}
  AND e.people @> $5::jsonb
"""

_STREAMS: Final = f"""
SELECT {_COLUMNS}
FROM events e
WHERE e.tenant_id = $1 AND {_WITHIN}
  AND e.stream = ANY($5::text[])
"""

_POLICY_CHANGES: Final = f"""
SELECT {_COLUMNS}
FROM events e
WHERE e.tenant_id = $1 AND {_WITHIN}
  AND e.type = 'policy.changed'
"""

_OF_TYPES: Final = f"""
SELECT {_COLUMNS}
FROM events e
WHERE e.tenant_id = $1 AND {_WITHIN}
  AND e.type = ANY($5::text[])
ORDER BY e.tx_id, e.position
"""

# Streams whose later steps name fewer people than their first event.
_STREAMS_WITH_PARTIES: Final = ("favor-", "introduction-")


class Replay(msgspec.Struct, frozen=True):
    """Events in log order, the policies in force, and the bound they came from."""

    events: list[ProjectedEvent]
    policies: PolicyTimeline
    bound: Bound

    def fold(self) -> Fold:
        fold = Fold(self.policies)
        fold.apply_all(self.events)
        return fold


def _args(tenant_id: int, bound: Bound) -> list[object]:
    return [tenant_id, str(bound.cursor.tx_id), bound.cursor.position, bound.happened_by]


async def policies_within(conn: Connection, tenant_id: int, bound: Bound) -> PolicyTimeline:
    """The policy changes recorded and happened within ``bound``."""
    rows = await conn.fetch(_POLICY_CHANGES, *_args(tenant_id, bound))
    return PolicyTimeline(to_projected(row) for row in rows)


async def involving(
    conn: Connection, tenant_id: int, people: Iterable[str], bound: Bound
) -> Replay:
    """What a fold needs to get right every pair and timeline entry of ``people``
    together (one name: a person; two: a pair), within ``bound``."""
    args = _args(tenant_id, bound)
    rows = list(await conn.fetch(_INVOLVING, *args, msgspec.json.encode(sorted(set(people)))))
    streams = sorted({r["stream"] for r in rows if r["stream"].startswith(_STREAMS_WITH_PARTIES)})
    if streams:
        rows += await conn.fetch(_STREAMS, *args, streams)
    unique = {row["id"]: row for row in rows}
    events = sorted(
        (to_projected(row) for row in unique.values()), key=lambda e: (e.tx_id, e.position)
    )
    return Replay(events, await policies_within(conn, tenant_id, bound), bound)


async def of_types(conn: Connection, tenant_id: int, types: Iterable[str], bound: Bound) -> Replay:
    """Only the events of ``types`` within ``bound`` (through the index by type), in log order."""
    rows = await conn.fetch(_OF_TYPES, *_args(tenant_id, bound), sorted(set(types)))
    events = [to_projected(row) for row in rows]
    return Replay(events, await policies_within(conn, tenant_id, bound), bound)


_AT_CURSOR: Final = f"""
SELECT e.recorded_at, e.{VISIBLE} AS visible
FROM events e
WHERE e.tenant_id = $1 AND e.tx_id = $2::text::xid8 AND e.position = $3
"""

_HEAD: Final = f"""
SELECT e.tx_id::text::bigint AS tx_id, e.position FROM events e
WHERE e.tenant_id = $1 AND e.{VISIBLE}
ORDER BY e.tx_id DESC, e.position DESC LIMIT 1
"""

_KNOWN: Final = f"""
SELECT EXISTS (SELECT 1 FROM events e WHERE e.tenant_id = $1 AND {_WITHIN}
               AND e.people @> $5::jsonb)
"""

_ENVELOPES: Final = f"""
SELECT {ENVELOPE_COLUMNS}
FROM events e
WHERE e.tenant_id = $1 AND e.id = ANY($2::uuid[])
"""


async def resolve(conn: Connection, tenant_id: int, as_of: Cursor | datetime) -> Bound:
    """The bound an ``as_of`` stands for in this tenant's log.

    A cursor must be a place in this tenant's log (or the start): the ledger
    knew what was recorded up to it, and stage and strength are read at the
    moment it was recorded. A time bounds what happened, as known now (up to
    the readable head of the log), read at that time.
    """
    if isinstance(as_of, datetime):
        head = await conn.fetchrow(_HEAD, tenant_id)
        cursor = START if head is None else Cursor(head["tx_id"], head["position"])
        return Bound(cursor=cursor, happened_by=as_of, now=as_of)
    if as_of == START:
        return Bound(cursor=START, happened_by=None, now=datetime.now(UTC))
    row = await conn.fetchrow(_AT_CURSOR, tenant_id, str(as_of.tx_id), as_of.position)
    if row is None:
        raise InvalidInput(
            "as_of is not a place in this tenant's log; use a cursor this tenant was given "
            "(an append's cursor, an event's cursor, a Ledger-Cursor header) or an RFC 3339 time",
            field=FIELD,
            in_body=False,
        )
    if not row["visible"]:
        raise Unavailable(
            "as_of is a place the readable log has not reached yet (an older transaction is "
            "still running); retry shortly",
            field=FIELD,
            in_body=False,
        )
    return Bound(cursor=as_of, happened_by=None, now=row["recorded_at"])


async def knows(conn: Connection, tenant_id: int, person: str, bound: Bound) -> bool:
    """Whether any event within ``bound`` involves ``person``."""
    return bool(
        await conn.fetchval(_KNOWN, *_args(tenant_id, bound), msgspec.json.encode([person]))
    )


async def envelopes(conn: Connection, tenant_id: int, ids: list[uuid.UUID]) -> list[Envelope]:
    """Full events by id, in the order of ``ids``."""
    rows = {row["id"]: envelope_of(row) for row in await conn.fetch(_ENVELOPES, tenant_id, ids)}
    return [rows[i] for i in ids]
