"""Export a tenant's log to NDJSON and import it into another tenant.

Export reads one consistent snapshot (a repeatable-read, read-only
transaction): the event count, the keys and the events all agree.

Import appends through the store's ordinary :func:`~ledger.store.append.append`
(lifecycles, versions and idempotency checked as for any client), in batches
of :data:`BATCH` events, each its own transaction, in the file's order. The
file order is the source's reader order, and one importer appends one batch
after another, so the new tenant's reader order is the same: hence the same
digest. An interrupted import leaves a prefix of the file; running it again
checks that the tenant's log is that prefix, skips it and appends the rest,
so a rerun (or a truncated file then the full one) ends in the same log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, BinaryIO, Final

import msgspec

from ledger.audit.digest import Chain
from ledger.audit.digest_store import digested as digested_row
from ledger.audit.digest_store import recompute
from ledger.audit.export import (
    FORMAT,
    End,
    ExportedEvent,
    Header,
    PersonKey,
    decode_lines,
    digested,
    encode_line,
)
from ledger.errors import InvalidInput
from ledger.events.envelope import NewEvent
from ledger.events.vocabulary import EVENT_TYPES
from ledger.store.append import append
from ledger.store.cursor import Cursor
from ledger.store.database import Connection
from ledger.store.read import VISIBLE

BATCH: Final = 500
PAGE: Final = 2000
Progress = Callable[[int, int], None]

_COUNT: Final = f"SELECT count(*) FROM events WHERE tenant_id = $1 AND {VISIBLE}"

_KEYS: Final = "SELECT person, key FROM person_keys WHERE tenant_id = $1 ORDER BY person"

_PAGE: Final = f"""
SELECT id, type, stream, version, position, tx_id::text::bigint AS tx_id,
       occurred_at, recorded_at, data, metadata, sealed
FROM events e
WHERE tenant_id = $1 AND (tx_id, position) > ($2::text::xid8, $3::bigint) AND {VISIBLE}
ORDER BY e.tx_id, e.position  -- the column, not the bigint alias: keeps the index order
LIMIT $4
"""

# Every event of the tenant, committed or not yet below the horizon: an import
# must see all it wrote before.
_IMPORTED_IDS: Final = "SELECT id FROM events WHERE tenant_id = $1 ORDER BY tx_id, position"

_INSERT_KEYS: Final = """
INSERT INTO person_keys (tenant_id, person, key)
SELECT $1, k.person, k.key FROM unnest($2::text[], $3::bytea[]) AS k(person, key)
ON CONFLICT (tenant_id, person) DO NOTHING
"""

# One importer per tenant at a time: two would interleave their batches.
_IMPORT_KEY: Final = "hashtextextended('ledger-import/' || $1::bigint::text, 0)"
_LOCK: Final = f"SELECT pg_try_advisory_lock({_IMPORT_KEY})"
_UNLOCK: Final = f"SELECT pg_advisory_unlock({_IMPORT_KEY})"

_ENCODER: Final = msgspec.json.Encoder()


async def export(
    conn: Connection, tenant_id: int, tenant: str, out: BinaryIO, progress: Progress
) -> End:
    """Write the tenant's log to ``out``; return the closing line."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        total: int = await conn.fetchval(_COUNT, tenant_id)
        out.write(encode_line(Header(FORMAT, tenant, total, datetime.now(UTC))))
        for row in await conn.fetch(_KEYS, tenant_id):
            out.write(encode_line(PersonKey(row["person"], bytes(row["key"]))))
        chain, after = Chain(), Cursor(0, 0)
        progress(0, total)
        while True:
            rows = await conn.fetch(_PAGE, tenant_id, str(after.tx_id), after.position, PAGE)
            for row in rows:
                after = Cursor(row["tx_id"], row["position"])
                chain.add(digested_row(row))
                out.write(encode_line(_exported(row, after)))
            progress(chain.events, total)
            if len(rows) < PAGE:
                break
    end = End(chain.events, None if chain.events == 0 else after.encode(), chain.hex)
    out.write(encode_line(end))
    return end


def _exported(row: Any, at: Cursor) -> ExportedEvent:
    sealed = row["sealed"]
    return ExportedEvent(
        id=row["id"],
        type=row["type"],
        stream=row["stream"],
        version=row["version"],
        position=row["position"],
        cursor=at.encode(),
        occurred_at=row["occurred_at"],
        recorded_at=row["recorded_at"],
        data=row["data"],
        metadata=row["metadata"],
        sealed=None if sealed is None else bytes(sealed),
    )


class Imported(msgspec.Struct, frozen=True, kw_only=True):
    """What an import did, and whether the tenant now has the file's digest."""

    events: int
    skipped: int
    appended: int
    complete: bool
    digest: str
    file_digest: str | None


async def import_file(
    conn: Connection, tenant_id: int, lines: Iterable[bytes], progress: Progress
) -> Imported:
    """Replay an export into ``tenant_id`` (empty, or holding a prefix of this file)."""
    if not await conn.fetchval(_LOCK, tenant_id):
        raise InvalidInput(
            "another import into this tenant is running; wait for it to finish", field="tenant"
        )
    try:
        return await _import(conn, tenant_id, lines, progress)
    finally:
        await conn.fetchval(_UNLOCK, tenant_id)


async def _import(
    conn: Connection, tenant_id: int, lines: Iterable[bytes], progress: Progress
) -> Imported:
    existing = [row["id"] for row in await conn.fetch(_IMPORTED_IDS, tenant_id)]
    keys: dict[str, bytes] = {}
    total, seen, appended, end = 0, 0, 0, None
    batch: list[ExportedEvent] = []
    chain = Chain()
    for line in decode_lines(lines):
        if isinstance(line, Header):
            total = line.events
            if len(existing) > total:
                raise _not_a_prefix(len(existing), total)
            progress(0, total)
        elif isinstance(line, PersonKey):
            keys[line.person] = line.key
        elif isinstance(line, ExportedEvent):
            chain.add(digested(line))
            if seen < len(existing):
                if line.id != existing[seen]:
                    raise _not_a_prefix(len(existing), total, seen)
            else:
                batch.append(line)
            seen += 1
            if len(batch) >= BATCH:
                appended += await _append(conn, tenant_id, batch, keys, seen - len(batch))
                batch = []
                progress(seen, total)
        elif isinstance(line, End):
            end = line
    if batch:
        appended += await _append(conn, tenant_id, batch, keys, seen - len(batch))
    progress(seen, total)
    complete = end is not None and end.events == seen and end.digest == chain.hex
    if end is not None and not complete:
        raise InvalidInput(
            f"the file's end line says {end.events} events with digest {end.digest}, but its "
            f"events are {seen} hashing to {chain.hex}: the file was altered",
            field="end",
        )
    report = await _digest_once_visible(conn, tenant_id, seen)
    return Imported(
        events=seen,
        skipped=min(len(existing), seen),
        appended=appended,
        complete=complete,
        digest=report,
        file_digest=None if end is None else end.digest,
    )


def _not_a_prefix(held: int, total: int, at: int | None = None) -> InvalidInput:
    where = f" (event {at + 1} differs)" if at is not None else ""
    return InvalidInput(
        f"the tenant already holds {held} events that are not the start of this export "
        f"({total} events){where}; import into a new, empty tenant",
        field="tenant",
    )


async def _append(
    conn: Connection,
    tenant_id: int,
    batch: list[ExportedEvent],
    keys: dict[str, bytes],
    first: int,
) -> int:
    """Append a batch as stored; keys of the people it registers go in the same
    transaction (so a rerun never brings back a key the tenant has since shredded)."""
    events = [_new_event(line, first + i) for i, line in enumerate(batch)]
    registering = sorted(
        {str(line.data.get("person")) for line in batch if line.sealed is not None} & keys.keys()
    )
    async with conn.transaction():
        if registering:
            await conn.execute(_INSERT_KEYS, tenant_id, registering, [keys[p] for p in registering])
        _, created = await append(conn, tenant_id, events)
    return len(events) if created else 0


def _new_event(line: ExportedEvent, index: int) -> NewEvent:
    field = f"events[{index}]"
    data_type = EVENT_TYPES.get(line.type)
    if data_type is None:
        raise InvalidInput(f"{field}: unknown event type {line.type!r}", field=f"{field}.type")
    try:
        data = msgspec.convert(line.data, data_type)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"{field}.data: {exc}", field=f"{field}.data") from None
    if data.stream() != line.stream:
        raise InvalidInput(
            f"{field}: stream {line.stream!r} is not its data's stream {data.stream()!r}",
            field=f"{field}.stream",
        )
    return NewEvent(
        index=index,
        id=line.id,
        id_given=True,
        type=line.type,
        stream=line.stream,
        occurred_at=line.occurred_at,
        data=data,
        data_json=_ENCODER.encode(line.data),
        metadata=line.metadata,
        metadata_json=_ENCODER.encode(line.metadata),
        people_json=_ENCODER.encode(sorted(set(data.people()))),
        expected_version=line.version - 1,
        sealed=line.sealed,
    )


async def _digest_once_visible(conn: Connection, tenant_id: int, events: int) -> str:
    """The tenant's digest over its first ``events`` events, once the commit
    horizon has passed them (other transactions on the server may hold it back)."""
    deadline = time.monotonic() + 60
    while True:
        report = await recompute(conn, tenant_id, events=events)
        if report.events >= events or time.monotonic() > deadline:
            return report.digest
        await asyncio.sleep(0.1)
