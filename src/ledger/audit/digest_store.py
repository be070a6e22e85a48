"""The digest over PostgreSQL: a fast checkpointed answer and a full recompute.

What each costs, for a log of ``n`` events:

- :func:`current` (``GET /v1/audit/digest``) starts from the newest stored
  checkpoint and hashes only the tail after it: fewer than
  :data:`CHECKPOINT_EVERY` events plus whatever arrived since, one indexed
  range scan. It trusts the checkpoints, so it does not notice an old event
  altered behind the application's back.
- :func:`recompute` (``?cursor=``, ``ledger verify-digest --tenant``) hashes
  the log from its first event: O(n) reads and hashes (a scan of the tenant's
  log in pages), and checks every stored checkpoint it passes, so an altered,
  inserted or deleted event anywhere before a checkpoint shows as a mismatch
  even when the auditor kept no digest of their own.

Both write a checkpoint every :data:`CHECKPOINT_EVERY` events of the chain
(never overwriting one), so the chain advances as it is asked for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Final

import msgspec
from msgspec import Meta

from ledger.audit.digest import Chain, Digested
from ledger.store.cursor import Cursor
from ledger.store.database import Connection
from ledger.store.read import VISIBLE

CHECKPOINT_EVERY: Final = 1000
PAGE: Final = 2000
_END: Final = Cursor(2**63 - 1, 2**63 - 1)


class DigestReport(msgspec.Struct, frozen=True, kw_only=True):
    """The digest of the log up to ``cursor`` (the last event it covers)."""

    cursor: Annotated[
        str | None, Meta(description="The last event the digest covers (null: empty log).")
    ]
    digest: Annotated[str, Meta(description="SHA-256 chain head, hex.")]
    events: Annotated[int, Meta(description="How many events the digest covers.")]
    hashed: Annotated[
        int, Meta(description="Events hashed for this answer (the rest: checkpoints).")
    ]
    checkpoints_checked: Annotated[
        int, Meta(description="Stored checkpoints compared on the way (full recompute only).")
    ] = 0
    mismatch: Annotated[
        str | None,
        Meta(
            description="Cursor of the first checkpoint the log no longer hashes to: an event "
            "at or before it was altered, inserted or removed."
        ),
    ] = None


# No upper bound in SQL (callers stop reading): the plan stays one ordered
# index range scan, a millisecond a page.
_PAGE_OF_LOG: Final = f"""
SELECT id, type, stream, version, occurred_at, data, metadata, sealed,
       tx_id::text::bigint AS tx_id, position
FROM events e
WHERE tenant_id = $1
  AND (tx_id, position) > ($2::text::xid8, $3::bigint)
  AND {VISIBLE}
ORDER BY e.tx_id, e.position  -- the column, not the bigint alias: keeps the index order
LIMIT $4
"""

_NEWEST_CHECKPOINT: Final = """
SELECT events, tx_id, position, digest FROM digest_checkpoints
WHERE tenant_id = $1 ORDER BY events DESC LIMIT 1
"""

_CHECKPOINTS: Final = """
SELECT events, tx_id, position, digest FROM digest_checkpoints
WHERE tenant_id = $1 ORDER BY events
"""

_SAVE_CHECKPOINTS: Final = """
INSERT INTO digest_checkpoints (tenant_id, events, tx_id, position, digest)
SELECT $1, c.events, c.tx_id, c.position, c.digest
FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::bytea[])
     AS c(events, tx_id, position, digest)
ON CONFLICT (tenant_id, events) DO NOTHING
"""


def digested(row: Any) -> Digested:
    return Digested(
        id=row["id"],
        type=row["type"],
        stream=row["stream"],
        version=row["version"],
        occurred_at=row["occurred_at"],
        data=row["data"],
        metadata=row["metadata"],
        sealed=row["sealed"],
    )


async def _log(
    conn: Connection, tenant_id: int, after: Cursor, until: Cursor
) -> AsyncIterator[tuple[Cursor, Digested]]:
    """The readable log in (after, until], in pages."""
    while True:
        rows = await conn.fetch(_PAGE_OF_LOG, tenant_id, str(after.tx_id), after.position, PAGE)
        for row in rows:
            at = Cursor(row["tx_id"], row["position"])
            if at > until:
                return
            yield at, digested(row)
        if len(rows) < PAGE:
            return
        after = Cursor(rows[-1]["tx_id"], rows[-1]["position"])


class _Checkpoints:
    """Checkpoints to write as a chain passes multiples of CHECKPOINT_EVERY."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, int, bytes]] = []

    def passed(self, chain: Chain, at: Cursor) -> None:
        if chain.events % CHECKPOINT_EVERY == 0:
            self.rows.append((chain.events, at.tx_id, at.position, chain.digest))

    async def save(self, conn: Connection, tenant_id: int) -> None:
        if self.rows:
            columns = list(zip(*self.rows, strict=True))
            await conn.execute(_SAVE_CHECKPOINTS, tenant_id, *map(list, columns))


async def current(conn: Connection, tenant_id: int) -> DigestReport:
    """The digest of the whole readable log, from the newest checkpoint on."""
    row = await conn.fetchrow(_NEWEST_CHECKPOINT, tenant_id)
    chain, last = Chain(), None
    if row is not None:
        chain = Chain(bytes(row["digest"]), row["events"])
        last = Cursor(row["tx_id"], row["position"])
    start = chain.events
    checkpoints = _Checkpoints()
    async for at, event in _log(conn, tenant_id, last or Cursor(0, 0), _END):
        chain.add(event)
        last = at
        checkpoints.passed(chain, at)
    await checkpoints.save(conn, tenant_id)
    return DigestReport(
        cursor=None if last is None else last.encode(),
        digest=chain.hex,
        events=chain.events,
        hashed=chain.events - start,
    )


async def recompute(
    conn: Connection, tenant_id: int, *, until: Cursor | None = None, events: int | None = None
) -> DigestReport:
    """The digest from the log's first event up to ``until`` (inclusive) or
    over its first ``events`` events, checked against every stored checkpoint."""
    stored = {row["events"]: row for row in await conn.fetch(_CHECKPOINTS, tenant_id)}
    chain, last, checked, mismatch = Chain(), None, 0, None
    checkpoints = _Checkpoints()
    async for at, event in _log(conn, tenant_id, Cursor(0, 0), until or _END):
        if events is not None and chain.events >= events:
            break
        chain.add(event)
        last = at
        kept = stored.get(chain.events)
        if kept is None:
            checkpoints.passed(chain, at)
            continue
        checked += 1
        same = bytes(kept["digest"]) == chain.digest and (kept["tx_id"], kept["position"]) == (
            at.tx_id,
            at.position,
        )
        if not same and mismatch is None:
            mismatch = at.encode()
    if mismatch is None:
        await checkpoints.save(conn, tenant_id)
    return DigestReport(
        cursor=None if last is None else last.encode(),
        digest=chain.hex,
        events=chain.events,
        hashed=chain.events,
        checkpoints_checked=checked,
        mismatch=mismatch,
    )
