"""Appending a batch of events: atomic, idempotent, versioned, lifecycle-checked.

One transaction per batch. Correctness under concurrency rests on the
database's unique constraints, not on locks held by this process:

- ``(id, tenant_id)``: a retried event is found and compared, never duplicated.
  The first attempt does not look for stored ids at all (1,000 index probes,
  about a tenth of a batch's time, for what is nearly always a new batch): the
  key refuses a stored one, and the attempt after that looks;
- ``(tenant_id, stream, version)``: two writers that read the same stream
  version cannot both append after it. The loser's transaction is retried from
  the start, and the retry sees the winner's event: it then either fits
  (another version), is refused by its ``expected_version`` (409 with the
  actual version), or is refused by the stream's lifecycle (409).

A transaction-scoped advisory lock per stream makes writers of one stream
take turns, so under contention they queue instead of failing and retrying.
Appends to different streams of one tenant never wait for each other; see
:mod:`ledger.store.read` for how readers still never miss an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import uuid
from typing import Any, Final

import asyncpg
import msgspec

from ledger.audit.keystore import comparable, seal_and_shred
from ledger.errors import IdConflict, LedgerError, LifecycleConflict, VersionConflict
from ledger.events.envelope import NewEvent, same_content
from ledger.events.lifecycle import has_lifecycle, refusal
from ledger.events.vocabulary import EVENT_TYPES, EventData
from ledger.store.cursor import Cursor
from ledger.store.database import Connection
from ledger.webhooks.store import EVENT_OUTBOX

MAX_ATTEMPTS: Final = 8
# The key that a retried event's id runs into (migration 0009).
_EVENT_KEY: Final = "events_pkey"


class Appended(msgspec.Struct, frozen=True):
    id: uuid.UUID
    stream: str
    version: int
    position: int


class AppendResult(msgspec.Struct, frozen=True):
    events: list[Appended]
    cursor: str


class _Stored(msgspec.Struct, frozen=True):
    stream: str
    version: int
    position: int
    tx_id: int


# Writers to one stream queue on a transaction-scoped advisory lock instead of
# racing for its next version; the unique constraint stays the proof, the lock
# only spares them failed attempts. Keys are sorted, so two batches never wait
# on each other in a cycle. The lock is taken in the statement that opens the
# transaction (one round trip), before any read: a statement's snapshot predates
# its own lock waits, so the reads must come in later statements.
_BEGIN_AND_LOCK: Final = "BEGIN; SELECT {locks}"

# One round trip for everything the batch must be checked against: events of
# the batch already stored (idempotent retries), the whole history of its
# lifecycle streams (short: a favor has a handful of events), and the current
# version of its other streams. Every part is driven by the batch's own ids
# and streams, one index probe each, whatever the planner believes of the
# table's size: stored events through the key that leads with the id
# (migration 0009), histories stream by stream in version order. (As
# ``stream = ANY($3)`` the history was planned, when the table was young and a
# connection cached the plan, as a walk of the tenant's whole log filtered by
# stream, even for a batch without lifecycle streams: 22 ms at 60,000 events.)
_STATE: Final = """
SELECT 'stored' AS kind, e.id, e.type, e.stream, e.version, e.position,
       e.tx_id::text::bigint AS tx_id, e.occurred_at, e.data, e.metadata
FROM unnest($2::uuid[]) AS k(id)
CROSS JOIN LATERAL (SELECT * FROM events WHERE id = k.id OFFSET 0) AS e
WHERE e.tenant_id = $1
UNION ALL
SELECT 'history', NULL::uuid, h.type, h.stream, h.version, NULL::bigint, NULL::bigint,
       NULL::timestamptz, h.data, NULL::jsonb
FROM unnest($3::text[]) AS l(stream)
CROSS JOIN LATERAL (
    SELECT type, stream, version, data FROM events
    WHERE tenant_id = $1 AND stream = l.stream
    ORDER BY version
    OFFSET 0
) AS h
UNION ALL
SELECT 'head', NULL::uuid, NULL::text, s.stream,
       (SELECT max(e.version) FROM events e WHERE e.tenant_id = $1 AND e.stream = s.stream),
       NULL::bigint, NULL::bigint, NULL::timestamptz, NULL::jsonb, NULL::jsonb
FROM unnest($4::text[]) AS s(stream)
ORDER BY 1, 4, 5
"""

# The notification (one per transaction: PostgreSQL folds duplicates) wakes the
# projectors and feeds when the append commits; it rides on the insert, no extra
# round trip. So do the webhook deliveries the events cause (the outbox CTE: for
# a tenant without subscriptions, one empty index probe).
#
# The JSON columns come as one JSON array each, the events' encodings joined:
# as jsonb[] every element cost a codec call here and a datum there, three
# times the work (10 ms against 3.6 for the three columns of 1,000 events).
NOTIFY_CHANNEL: Final = "ledger_events"
_INSERT: Final = f"""
WITH inserted AS (
    INSERT INTO events (tenant_id, id, stream, version, type, occurred_at, data, metadata, people,
                        sealed)
    SELECT $1, e.id, e.stream, e.version, e.type, e.occurred_at, e.data, e.metadata, e.people,
           e.sealed
    FROM ROWS FROM (unnest($2::uuid[]), unnest($3::text[]), unnest($4::int[]), unnest($5::text[]),
                    unnest($6::timestamptz[]), jsonb_array_elements($7::jsonb),
                    jsonb_array_elements($8::jsonb), jsonb_array_elements($9::jsonb),
                    unnest($10::bytea[]))
         WITH ORDINALITY AS e(id, stream, version, type, occurred_at, data, metadata, people,
                              sealed, n)
    ORDER BY e.n
    RETURNING id, position, tx_id::text::bigint AS tx_id, type, stream, version, occurred_at,
              recorded_at, data, metadata
),
outbox AS ({EVENT_OUTBOX})
SELECT id, position, tx_id, pg_notify('{NOTIFY_CHANNEL}', $1::text)
FROM inserted
"""


Outcome = tuple[AppendResult, bool] | LedgerError


async def append(
    conn: Connection, tenant_id: int, events: list[NewEvent]
) -> tuple[AppendResult, bool]:
    """Append ``events`` atomically; the flag is False when all were already stored.

    Inside a caller's transaction the batch runs in a savepoint; otherwise in a
    transaction of its own.
    """
    (outcome,) = await append_batches(conn, tenant_id, [events])
    if isinstance(outcome, LedgerError):
        raise outcome
    return outcome


async def append_batches(
    conn: Connection, tenant_id: int, batches: list[list[NewEvent]]
) -> list[Outcome]:
    """Append several batches in one transaction, as if one after another.

    Each batch stays all or nothing: a refused one (409, its error in its place
    in the answer) writes nothing and does not stop the others. Sharing the
    transaction shares its round trips and its commit, which is what lets many
    small concurrent appends go nearly as fast as a bulk insert (see
    :mod:`ledger.store.group`). The batches' event ids must be distinct.
    """
    everything = [event for batch in batches for event in batch]
    locks = _BEGIN_AND_LOCK.format(
        locks=", ".join(f"pg_advisory_xact_lock({k})" for k in _lock_keys(tenant_id, everything))
    )
    probe = False
    for attempt in range(MAX_ATTEMPTS):
        try:
            if conn.is_in_transaction():
                async with conn.transaction():
                    await conn.execute(locks.removeprefix("BEGIN; "))
                    return await _place(conn, tenant_id, batches, probe=probe)
            await conn.execute(locks)
            try:
                outcomes = await _place(conn, tenant_id, batches, probe=probe)
            except BaseException:
                if not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")
            return outcomes
        except asyncpg.UniqueViolationError as collided:
            # One of these ids is stored (a retry), or a concurrent writer won a
            # stream version; start again, looking for stored ids this time. Only
            # a race with another writer is worth a pause.
            probe = True
            if collided.constraint_name != _EVENT_KEY:
                await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # noqa: S311
    raise VersionConflict(
        f"the batch kept colliding with concurrent appends to the same streams "
        f"({MAX_ATTEMPTS} attempts); retry it, with expected_version if you need ordering",
    )


def _lock_keys(tenant_id: int, events: list[NewEvent]) -> list[int]:
    """A stable 64-bit key per (tenant, stream), sorted: computed here, so the lock
    rides on the BEGIN in one simple-protocol statement (integers only, no input)."""
    keys = {
        int.from_bytes(
            hashlib.blake2b(f"{tenant_id}/{stream}".encode(), digest_size=8).digest(),
            "big",
            signed=True,
        )
        for stream in {event.stream for event in events}
    }
    return sorted(keys)


class _Plan(msgspec.Struct):
    """One batch's place: what was already stored, and versions for the rest."""

    stored: dict[uuid.UUID, _Stored]
    fresh: list[NewEvent]
    versions: list[int]


async def _place(
    conn: Connection, tenant_id: int, batches: list[list[NewEvent]], *, probe: bool
) -> list[Outcome]:
    everything = [event for batch in batches for event in batch]
    streams = {event.stream for event in everything}
    rows = await conn.fetch(
        _STATE,
        tenant_id,
        [event.id for event in everything if event.id_given] if probe else [],
        sorted(s for s in streams if has_lifecycle(s)),
        sorted(s for s in streams if not has_lifecycle(s)),
    )
    stored_rows = [row for row in rows if row["kind"] == "stored"]
    opened = await comparable(conn, tenant_id, stored_rows, everything)
    versions, histories = _stream_state(streams, rows)
    plans: list[_Plan | LedgerError] = []
    for batch in batches:
        try:
            stored = _already_stored(batch, stored_rows, opened)
            fresh = [event for event in batch if event.id not in stored] if stored else batch
            plans.append(_Plan(stored, fresh, _versions_of(fresh, versions, histories)))
        except LedgerError as refused:
            plans.append(refused)
    if not probe and any(isinstance(plan, LedgerError) for plan in plans):
        # A retry looks refused (its stream moved on, its favor is granted)
        # until its events are found stored: look, then judge again.
        return await _place(conn, tenant_id, batches, probe=True)
    fresh = [e for plan in plans if isinstance(plan, _Plan) for e in plan.fresh]
    inserted: dict[int, _Stored] = {}
    if fresh:
        assigned = [v for plan in plans if isinstance(plan, _Plan) for v in plan.versions]
        inserted = await _insert(conn, tenant_id, fresh, assigned)
    outcomes: list[Outcome] = []
    for batch, plan in zip(batches, plans, strict=True):
        if isinstance(plan, LedgerError):
            outcomes.append(plan)
            continue
        placed = (
            [plan.stored[e.id] if e.id in plan.stored else inserted[e.id.int] for e in batch]
            if plan.stored
            else [inserted[e.id.int] for e in batch]
        )
        last = max(Cursor(s.tx_id, s.position) for s in placed)
        appended = [
            Appended(e.id, s.stream, s.version, s.position)
            for e, s in zip(batch, placed, strict=True)
        ]
        outcomes.append((AppendResult(events=appended, cursor=last.encode()), bool(plan.fresh)))
    return outcomes


def _already_stored(
    events: list[NewEvent], rows: list[Any], opened: dict[uuid.UUID, Any]
) -> dict[uuid.UUID, _Stored]:
    """Events of this batch stored by an earlier request; each must be identical
    (sealed personal data is compared opened)."""
    if not rows:
        return {}
    by_id = {row["id"]: row for row in rows}
    stored: dict[uuid.UUID, _Stored] = {}
    for event in events:
        row = by_id.get(event.id)
        if row is None:
            continue
        data = opened.get(event.id, row["data"])
        if not same_content(event, row["type"], row["occurred_at"], data, row["metadata"]):
            raise IdConflict(
                f"event {event.id} is already stored with other content (at {row['stream']} "
                f"version {row['version']}); a retry must resend the same event, a new event "
                "needs a new id",
                field=f"events[{event.index}].id",
            )
        stored[event.id] = _Stored(row["stream"], row["version"], row["position"], row["tx_id"])
    return stored


def _versions_of(
    fresh: list[NewEvent], versions: dict[str, int], histories: dict[str, list[EventData]]
) -> list[int]:
    """The version each fresh event takes, checked against its expected version
    and its stream's lifecycle. ``versions`` and ``histories`` move on only when
    the whole batch fits, so a refused batch leaves them for the next one."""
    touched = {event.stream for event in fresh}
    trial_versions = {s: versions.get(s, 0) for s in touched}
    trial_histories = {s: list(histories[s]) for s in touched if s in histories}
    assigned: list[int] = []
    for event in fresh:
        current = trial_versions[event.stream]
        if event.expected_version is not None and event.expected_version != current:
            raise VersionConflict(
                f"stream {event.stream!r} is at version {current}, not at the expected "
                f"version {event.expected_version}; read the stream and decide again",
                field=f"events[{event.index}].expected_version",
                stream=event.stream,
                expected_version=event.expected_version,
                actual_version=current,
            )
        history = trial_histories.get(event.stream)
        if history is not None:
            refused = refusal(history, event.data)
            if refused is not None:
                raise LifecycleConflict(
                    refused.message,
                    field=f"events[{event.index}].{refused.field}",
                    stream=event.stream,
                )
            history.append(event.data)
        trial_versions[event.stream] = current + 1
        assigned.append(current + 1)
    versions.update(trial_versions)
    histories.update(trial_histories)
    return assigned


async def _insert(
    conn: Connection, tenant_id: int, fresh: list[NewEvent], assigned: list[int]
) -> dict[int, _Stored]:
    """Where each event went, by its id's integer (uuid.UUID hashes in Python: a
    thousand of them cost more than the rest of this function)."""
    fresh = await seal_and_shred(conn, tenant_id, fresh)
    rows = await conn.fetch(
        _INSERT,
        tenant_id,
        [e.id for e in fresh],
        [e.stream for e in fresh],
        assigned,
        [e.type for e in fresh],
        [e.occurred_at for e in fresh],
        json_array([e.data_json for e in fresh]),
        json_array([e.metadata_json for e in fresh]),
        json_array([e.people_json for e in fresh]),
        [e.sealed for e in fresh],
    )
    placed = {row["id"].int: (row["position"], row["tx_id"]) for row in rows}
    return {
        e.id.int: _Stored(e.stream, version, *placed[e.id.int])
        for e, version in zip(fresh, assigned, strict=True)
    }


def json_array(encoded: list[bytes]) -> bytes:
    """Encoded JSON values as one encoded JSON array (for ``jsonb_array_elements``)."""
    return b"[" + b",".join(encoded) + b"]"


def _stream_state(
    streams: set[str], rows: list[Any]
) -> tuple[dict[str, int], dict[str, list[EventData]]]:
    """Current version of every stream the batch touches, and the histories
    of those with a lifecycle (rows come ordered by stream and version)."""
    versions: dict[str, int] = {}
    histories: dict[str, list[EventData]] = {s: [] for s in streams if has_lifecycle(s)}
    for row in rows:
        if row["kind"] == "stored" or row["version"] is None:
            continue
        versions[row["stream"]] = row["version"]
        if row["kind"] == "history":
            histories[row["stream"]].append(_as_event_data(row["type"], row["data"]))
    return versions, histories


def _as_event_data(type_name: str, data: Any) -> EventData:
    return msgspec.convert(data, EVENT_TYPES[type_name])
