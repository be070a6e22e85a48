"""Announcing violations as they are found: the violations feed and webhooks.

The projector calls :func:`announce` inside the transaction that stores the
violations, so an announcement and its violation commit together. "New" means
a violation id the live generation did not have before: re-judging after a
late event keeps ids stable, so it only announces what changed. Violations a
late event takes back are not announced (the list endpoint is the truth), and
neither are those a rebuild finds in its fresh generation (they were announced
when the live generation found them).

Numbering: ``seq`` counts a tenant's announcements. Only the holder of the
tenant's violations-projector lock writes them, one transaction after another,
so seqs commit in order and a follower reading "after n" never misses one.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Final

import msgspec

from ledger.errors import InvalidInput
from ledger.rules.catalogue import Violation
from ledger.rules.read import ViolationItem
from ledger.store.database import Connection
from ledger.webhooks.store import enqueue_violations

CHANNEL: Final = "ledger_violations"
_ENCODER: Final = msgspec.json.Encoder()

_ANNOUNCE: Final = f"""
WITH found AS (
    INSERT INTO violation_feed (tenant_id, seq, violation_id, code, offender, affected, body)
    SELECT $1, coalesce((SELECT max(seq) FROM violation_feed WHERE tenant_id = $1), 0) + v.n,
           v.id, v.code, v.offender, string_to_array(v.affected, chr(31)), v.body::jsonb
    FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[])
         WITH ORDINALITY AS v(id, code, offender, affected, body, n)
    RETURNING 1
)
SELECT pg_notify('{CHANNEL}', $1::text) FROM (SELECT count(*) FROM found) AS done
"""

_FOLLOW: Final = """
SELECT seq, body::text AS body FROM violation_feed
WHERE tenant_id = $1 AND seq > $2
  AND ($3::text[] IS NULL OR code = ANY($3::text[]))
  AND ($4::text IS NULL OR offender = $4 OR affected @> ARRAY[$4::text])
ORDER BY seq
LIMIT $5
"""


def item_of(v: Violation) -> ViolationItem:
    return ViolationItem(
        id=v.id,
        code=v.code,
        severity=v.severity,
        offender=v.offender,
        affected=list(v.affected),
        evidence=list(v.evidence),
        occurred_at=v.occurred_at,
        explanation=v.explanation,
    )


async def announce(conn: Connection, tenant_id: int, found: Sequence[ViolationItem]) -> None:
    """Number new violations for the feed and queue their webhook deliveries."""
    if not found:
        return
    await conn.execute(
        _ANNOUNCE,
        tenant_id,
        [v.id for v in found],
        [v.code for v in found],
        [v.offender for v in found],
        ["\x1f".join(v.affected) for v in found],
        [_ENCODER.encode(v).decode() for v in found],
    )
    await enqueue_violations(conn, tenant_id, found)


def encode_cursor(seq: int) -> str:
    return "n1" + base64.urlsafe_b64encode(seq.to_bytes(8, "big")).rstrip(b"=").decode()


def decode_cursor(token: str, *, field: str = "cursor") -> int:
    body = token[2:]
    try:
        if not token.startswith("n1"):
            raise ValueError(token)
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        if len(raw) != 8:
            raise ValueError(token)
        return int.from_bytes(raw, "big")
    except ValueError:
        raise InvalidInput(
            "not a violations feed cursor; use the id: of a message from this feed",
            field=field,
            in_body=False,
        ) from None


async def announced_after(
    conn: Connection,
    tenant_id: int,
    after: int,
    *,
    codes: list[str] | None,
    person: str | None,
    limit: int,
) -> list[tuple[str, msgspec.Raw]]:
    """(cursor, violation as JSON) of announcements after ``after``."""
    rows = await conn.fetch(_FOLLOW, tenant_id, after, codes, person, limit)
    return [(encode_cursor(row["seq"]), msgspec.Raw(row["body"].encode())) for row in rows]
