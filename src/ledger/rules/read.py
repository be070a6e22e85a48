"""Reading violations from PostgreSQL (the live storage adapter)."""

from __future__ import annotations

import base64
import struct
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from ledger.errors import InvalidInput
from ledger.store.database import Connection


class ViolationItem(msgspec.Struct, frozen=True):
    """A violation as clients read it (PRODUCT.md section 6b)."""

    id: uuid.UUID
    code: str
    severity: str
    offender: str
    affected: list[str]
    evidence: list[uuid.UUID]
    occurred_at: datetime
    explanation: str


def item_of_row(row: Any) -> ViolationItem:
    """A stored violation row as clients read it."""
    return ViolationItem(
        id=row["id"],
        code=row["code"],
        severity=row["severity"],
        offender=row["offender"],
        affected=list(row["affected"]),
        evidence=list(row["evidence"]),
        occurred_at=row["occurred_at"],
        explanation=row["explanation"],
    )


class ViolationPage(msgspec.Struct, frozen=True):
    items: list[ViolationItem]
    next_cursor: str | None


class Filters(msgspec.Struct, frozen=True, kw_only=True):
    person: str | None = None  # offender or affected
    offender: str | None = None
    codes: list[str] | None = None
    severities: list[str] | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


# In valid-time order, like timelines; a person matches as offender or affected.
_LIST: Final = """
SELECT v.id, v.code, v.severity, v.offender, v.affected, v.evidence, v.occurred_at,
       v.position, v.explanation
FROM violations v
WHERE v.tenant_id = $1 AND v.generation = $2
  AND $3::text IS NULL  -- a person's violations: _FOR_PERSON
  AND ($4::text IS NULL OR v.offender = $4)
  AND ($5::text[] IS NULL OR v.code = ANY($5::text[]))
  AND ($6::text[] IS NULL OR v.severity = ANY($6::text[]))
  AND ($7::timestamptz IS NULL OR v.occurred_at >= $7)
  AND ($8::timestamptz IS NULL OR v.occurred_at < $8)
  AND (v.occurred_at, v.position, v.id) > ($9, $10, $11)
ORDER BY v.occurred_at, v.position, v.id
LIMIT $12
"""

# A person's violations (offender or affected): a walk of their
# violation_people rows in the list's order, stopping after the page, so a page
# costs its own rows however many violations the person has. The other filters
# are checked on the way; since and until bound the walk.
_FOR_PERSON: Final = """
SELECT v.id, v.code, v.severity, v.offender, v.affected, v.evidence, v.occurred_at,
       v.position, v.explanation
FROM violation_people vp
JOIN violations v ON v.tenant_id = vp.tenant_id AND v.generation = vp.generation AND v.id = vp.id
WHERE vp.tenant_id = $1 AND vp.generation = $2 AND vp.person = $3
  AND ($4::text IS NULL OR v.offender = $4)
  AND ($5::text[] IS NULL OR v.code = ANY($5::text[]))
  AND ($6::text[] IS NULL OR v.severity = ANY($6::text[]))
  AND vp.occurred_at >= coalesce($7::timestamptz, '-infinity')
  AND vp.occurred_at < coalesce($8::timestamptz, 'infinity')
  AND (vp.occurred_at, vp.position, vp.id) > ($9, $10, $11)
ORDER BY vp.occurred_at, vp.position, vp.id
LIMIT $12
"""

_PREFIX: Final = "w1"
_PACK: Final = struct.Struct(">qQ16s")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
START: Final = (datetime(1, 1, 1, tzinfo=UTC), 0, uuid.UUID(int=0))


def encode_cursor(occurred_at: datetime, position: int, violation: uuid.UUID) -> str:
    micros = (occurred_at - _EPOCH) // timedelta(microseconds=1)
    raw = _PACK.pack(micros, position, violation.bytes)
    return _PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(token: str) -> tuple[datetime, int, uuid.UUID]:
    body = token[len(_PREFIX) :]
    try:
        if not token.startswith(_PREFIX):
            raise ValueError(token)
        micros, position, raw = _PACK.unpack(
            base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        )
        return _EPOCH + timedelta(microseconds=micros), position, uuid.UUID(bytes=raw)
    except (ValueError, struct.error, OverflowError):
        raise InvalidInput(
            "cursor is not a violations cursor this ledger issued; use next_cursor from the "
            "previous page or omit it",
            field="cursor",
            in_body=False,
        ) from None


async def violations(
    conn: Connection,
    tenant_id: int,
    generation: int,
    filters: Filters,
    after: tuple[datetime, int, uuid.UUID],
    limit: int,
) -> ViolationPage:
    rows: list[Any] = await conn.fetch(
        _LIST if filters.person is None else _FOR_PERSON,
        tenant_id,
        generation,
        filters.person,
        filters.offender,
        filters.codes,
        filters.severities,
        filters.since,
        filters.until,
        *after,
        limit,
    )
    items = [item_of_row(row) for row in rows]
    following = None
    if len(rows) == limit:
        last = rows[-1]
        following = encode_cursor(last["occurred_at"], last["position"], last["id"])
    return ViolationPage(items, following)


def matches(filters: Filters, v: ViolationItem) -> bool:
    """The list's filters, for violations judged in memory (as_of replays)."""
    return (
        (filters.person is None or filters.person == v.offender or filters.person in v.affected)
        and (filters.offender is None or filters.offender == v.offender)
        and (filters.codes is None or v.code in filters.codes)
        and (filters.severities is None or v.severity in filters.severities)
        and (filters.since is None or v.occurred_at >= filters.since)
        and (filters.until is None or v.occurred_at < filters.until)
    )
