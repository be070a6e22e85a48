"""Reading the network projections from PostgreSQL (the live storage adapter)."""

from __future__ import annotations

import base64
import struct
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from ledger.errors import InvalidInput
from ledger.projections.core import Pair, PolicyTimeline
from ledger.projections.projector import PAIR_COLUMNS, PROJECTION, pair_of, policies_until
from ledger.store.cursor import MAX_BIGINT, Cursor
from ledger.store.database import Connection
from ledger.store.read import ENVELOPE_COLUMNS, Envelope, envelope_of


class Snapshot(msgspec.Struct, frozen=True):
    """Which rows reads use and how far into the log they reach."""

    generation: int
    checkpoint: Cursor
    policy: PolicyTimeline


_STATE: Final = """
SELECT generation, checkpoint_tx, checkpoint_position
FROM projection_state WHERE tenant_id = $1 AND projection = $2
"""

_PAIRS_OF: Final = f"""
SELECT {PAIR_COLUMNS}
FROM network_pairs p
WHERE p.tenant_id = $1 AND p.generation = $2 AND (p.a = $3 OR p.b = $3)
"""

_PAIR: Final = f"""
SELECT {PAIR_COLUMNS}
FROM network_pairs p
WHERE p.tenant_id = $1 AND p.generation = $2 AND p.a = $3 AND p.b = $4
"""

_KNOWN: Final = """
SELECT EXISTS (SELECT 1 FROM timeline_person
               WHERE tenant_id = $1 AND generation = $2 AND person = $3)
"""

_PERSON_TIMELINE: Final = f"""
SELECT {ENVELOPE_COLUMNS}
FROM timeline_person t
JOIN events e ON e.tenant_id = t.tenant_id AND e.id = t.event_id
WHERE t.tenant_id = $1 AND t.generation = $2 AND t.person = $3
  AND (t.occurred_at, t.position) > ($4, $5)
ORDER BY t.occurred_at, t.position
LIMIT $6
"""

_PAIR_TIMELINE: Final = f"""
SELECT {ENVELOPE_COLUMNS}
FROM timeline_pair t
JOIN events e ON e.tenant_id = t.tenant_id AND e.id = t.event_id
WHERE t.tenant_id = $1 AND t.generation = $2 AND t.a = $3 AND t.b = $4
  AND (t.occurred_at, t.position) > ($5, $6)
ORDER BY t.occurred_at, t.position
LIMIT $7
"""


async def snapshot(conn: Connection, tenant_id: int, projection: str = PROJECTION) -> Snapshot:
    row = await conn.fetchrow(_STATE, tenant_id, projection)
    if row is None:
        return Snapshot(1, Cursor(0, 0), PolicyTimeline())
    checkpoint = Cursor(row["checkpoint_tx"], row["checkpoint_position"])
    return Snapshot(
        row["generation"], checkpoint, await policies_until(conn, tenant_id, checkpoint)
    )


async def checkpoint_of(conn: Connection, tenant_id: int, projection: str = PROJECTION) -> Cursor:
    row = await conn.fetchrow(_STATE, tenant_id, projection)
    return Cursor(0, 0) if row is None else Cursor(row["checkpoint_tx"], row["checkpoint_position"])


async def pairs_of(
    conn: Connection, tenant_id: int, generation: int, person: str
) -> list[tuple[str, str, Pair]]:
    rows = await conn.fetch(_PAIRS_OF, tenant_id, generation, person)
    return [(row["a"], row["b"], pair_of(row)) for row in rows]


async def pair(conn: Connection, tenant_id: int, generation: int, a: str, b: str) -> Pair | None:
    low, high = (a, b) if a < b else (b, a)
    row = await conn.fetchrow(_PAIR, tenant_id, generation, low, high)
    return None if row is None else pair_of(row)


async def known(conn: Connection, tenant_id: int, generation: int, person: str) -> bool:
    return bool(await conn.fetchval(_KNOWN, tenant_id, generation, person))


# Timeline cursors: (occurred_at, position) of the last item seen.
_TIMELINE_PACK: Final = struct.Struct(">qQ")
_TIMELINE_PREFIX: Final = "t1"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
TIMELINE_START: Final = (datetime(1, 1, 1, tzinfo=UTC), 0)


def encode_timeline_cursor(occurred_at: datetime, position: int) -> str:
    micros = (occurred_at - _EPOCH) // timedelta(microseconds=1)
    raw = _TIMELINE_PACK.pack(micros, position)
    return _TIMELINE_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_timeline_cursor(token: str) -> tuple[datetime, int]:
    body = token[len(_TIMELINE_PREFIX) :]
    try:
        if not token.startswith(_TIMELINE_PREFIX):
            raise ValueError(token)
        micros, position = _TIMELINE_PACK.unpack(
            base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        )
        if position > MAX_BIGINT:
            raise ValueError(token)
        return _EPOCH + timedelta(microseconds=micros), position
    except (ValueError, struct.error, OverflowError):
        raise InvalidInput(
            "cursor is not a timeline cursor this ledger issued; use next_cursor from the "
            "previous page or omit it",
            field="cursor",
            in_body=False,
        ) from None


async def timeline(
    conn: Connection,
    tenant_id: int,
    generation: int,
    people: tuple[str] | tuple[str, str],
    after: tuple[datetime, int],
    limit: int,
) -> tuple[list[Envelope], str | None]:
    """A person's (one name) or a pair's (two names) events in ``occurred_at`` order."""
    args: list[Any]
    if len(people) == 1:
        query, args = _PERSON_TIMELINE, [tenant_id, generation, people[0], *after, limit]
    else:
        low, high = sorted(people)
        query, args = _PAIR_TIMELINE, [tenant_id, generation, low, high, *after, limit]
    rows = await conn.fetch(query, *args)
    items = [envelope_of(row) for row in rows]
    last = items[-1] if len(items) == limit else None
    return items, None if last is None else encode_timeline_cursor(last.occurred_at, last.position)
