"""Reading the network projections from PostgreSQL (the live storage adapter)."""

from __future__ import annotations

import base64
import struct
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from ledger.errors import InvalidInput
from ledger.policy import RANKED
from ledger.projections.core import Pair, PolicyTimeline
from ledger.projections.projector import PAIR_COLUMNS, PROJECTION, pair_of, policies_until
from ledger.projections.views import Balance, balance
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

# A person's balances after a counterparty, in counterparty order, from both
# sides of their pairs (stored once, a < b): two walks of the partial indexes
# network_pairs_balances_{a,b} (pairs with something given), merged. COLLATE
# "C" is code point order, Python's, whatever the database's collation. A page
# costs its own rows, not the person's whole history.
_BALANCES: Final = """
(SELECT p.b COLLATE "C" AS counterparty, p.given_ab AS given, p.given_ba AS received
 FROM network_pairs p
 WHERE p.tenant_id = $1 AND p.generation = $2 AND p.a = $3
   AND (p.given_ab <> 0 OR p.given_ba <> 0) AND p.b COLLATE "C" > $4::text
 ORDER BY p.b COLLATE "C"
 LIMIT $5::bigint + $6::bigint)
UNION ALL
(SELECT p.a COLLATE "C", p.given_ba, p.given_ab
 FROM network_pairs p
 WHERE p.tenant_id = $1 AND p.generation = $2 AND p.b = $3
   AND (p.given_ab <> 0 OR p.given_ba <> 0) AND p.a COLLATE "C" > $4::text
 ORDER BY p.a COLLATE "C"
 LIMIT $5::bigint + $6::bigint)
ORDER BY counterparty
OFFSET $5 LIMIT $6
"""

# How many of a person's relationships rank before one with strength $4 and
# counterparty $5 (views.strength_order), counting at most $6 from each side:
# walks of network_pairs_strength_{a,b} from the strongest down to it.
_STRONGER: Final = """
SELECT count(*) FROM (
    (SELECT FROM network_pairs p
     WHERE p.tenant_id = $1 AND p.generation = $2 AND p.a = $3 AND p.strength_log2 >= $4
       AND (p.strength_log2 > $4 OR p.b COLLATE "C" < $5)
     LIMIT $6)
    UNION ALL
    (SELECT FROM network_pairs p
     WHERE p.tenant_id = $1 AND p.generation = $2 AND p.b = $3 AND p.strength_log2 >= $4
       AND (p.strength_log2 > $4 OR p.a COLLATE "C" < $5)
     LIMIT $6)
) AS stronger
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


async def balances(
    conn: Connection,
    tenant_id: int,
    generation: int,
    person: str,
    after: str,
    skip: int,
    limit: int,
) -> list[Balance]:
    """Up to ``limit`` of ``person``'s balances with counterparties after ``after``
    (past the first ``skip`` of them), in :func:`ledger.projections.views.balances`' order."""
    rows = await conn.fetch(_BALANCES, tenant_id, generation, person, after, skip, limit)
    return [balance(row["counterparty"], row["given"], row["received"]) for row in rows]


async def rank(
    conn: Connection, tenant_id: int, generation: int, person: str, counterparty: str, pair: Pair
) -> int:
    """The rank of ``person``'s relationship with ``counterparty`` (``pair``) by
    :func:`ledger.projections.views.strength_order`, exact up to
    :data:`ledger.policy.RANKED` (past it, all ranks share one cadence)."""
    stronger = await conn.fetchval(
        _STRONGER, tenant_id, generation, person, pair.strength_log2, counterparty, RANKED
    )
    return 1 + min(int(stronger), RANKED)


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
