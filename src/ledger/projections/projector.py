"""The projector: follows each tenant's log and keeps the network tables.

Storage adapter around :class:`ledger.projections.core.Fold`. For each batch:
read the log after the checkpoint (gap-free, the same reader as the API), fold
it, merge the pair deltas into the stored rows, append timeline rows, and move
the checkpoint, all in one transaction. A crash therefore never applies an
event twice or skips one.

Workers coordinate through PostgreSQL alone: each batch runs under a
transaction-scoped ``pg_try_advisory_xact_lock`` for (projection, tenant). A
worker that does not get the lock leaves that tenant to the one that has it;
a killed worker's lock dies with its transaction, and the next poll of any
other worker takes over. Any number of ``ledger serve`` or ``ledger project``
processes can run side by side.

A ``policy.changed`` event re-derives the tenant from the start of its log
(weights depend on the policy in force when each favor happened, strength on
the latest half-life): rare, and then exactly right.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import operator
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, ParamSpec, Protocol, TypeVar

import msgspec

from ledger.events.vocabulary import EVENT_TYPES, PolicyChanged
from ledger.projections.core import EMPTY, Fold, Pair, PolicyTimeline, ProjectedEvent, merge
from ledger.projections.core import streams_needing_parties as _streams_needing_parties
from ledger.store.append import NOTIFY_CHANNEL
from ledger.store.cursor import Cursor
from ledger.store.database import Connection, Pool
from ledger.store.read import VISIBLE

PROJECTION: Final = "network"
BATCH_SIZE: Final = 1000
_log = logging.getLogger("ledger.projector")

_TRY_LOCK: Final = (
    "SELECT pg_try_advisory_xact_lock(hashtextextended($1::bigint::text || '/' || $2, 1))"
)
_LOCK: Final = "SELECT pg_advisory_xact_lock(hashtextextended($1::bigint::text || '/' || $2, 1))"

_STATE: Final = """
INSERT INTO projection_state (tenant_id, projection) VALUES ($1, $2)
ON CONFLICT (tenant_id, projection) DO UPDATE SET projection = EXCLUDED.projection
RETURNING generation, checkpoint_tx, checkpoint_position, events_applied, worker
"""

_MOVE_CHECKPOINT: Final = """
UPDATE projection_state
SET checkpoint_tx = $3, checkpoint_position = $4, events_applied = events_applied + $5,
    updated_at = now(), worker = $6
WHERE tenant_id = $1 AND projection = $2
"""

# The log after a cursor, up to the commit horizon (see ledger.store.read).
EVENTS_AFTER: Final = f"""
SELECT e.id, e.type, e.occurred_at, e.tx_id::text::bigint AS tx_id, e.position, e.data
FROM events e
WHERE e.tenant_id = $1
  AND (e.tx_id, e.position) > ($2::text::xid8, $3::bigint)
  AND e.{VISIBLE}
ORDER BY e.tx_id, e.position  -- the column, not the bigint alias: keeps the index order
LIMIT $4
"""

_POLICY_EVENTS: Final = """
SELECT id, type, occurred_at, tx_id::text::bigint AS tx_id, position, data
FROM events
WHERE tenant_id = $1 AND type = 'policy.changed'
  AND (tx_id, position) <= ($2::text::xid8, $3::bigint)
"""

_PARTIES: Final = """
SELECT stream, parties FROM network_parties
WHERE tenant_id = $1 AND generation = $2 AND stream = ANY($3::text[])
"""

PAIR_COLUMNS: Final = """p.a, p.b, p.given_ab, p.given_ba, p.favors_ab, p.favors_ba, p.contacts,
       p.first_contact, p.last_contact, p.strength_log2, p.counts"""

# One primary-key lookup per pair (LATERAL ... OFFSET 0): joined plainly, a
# planner without statistics hashed the whole generation for every batch.
_PAIRS: Final = f"""
SELECT {PAIR_COLUMNS}
FROM unnest($3::text[], $4::text[]) AS k(a, b)
CROSS JOIN LATERAL (
    SELECT * FROM network_pairs p
    WHERE p.tenant_id = $1 AND p.generation = $2 AND p.a = k.a AND p.b = k.b
    OFFSET 0
) AS p
"""

_UPSERT_PAIRS: Final = """
INSERT INTO network_pairs (tenant_id, generation, a, b, given_ab, given_ba, favors_ab,
                           favors_ba, contacts, first_contact, last_contact, strength_log2, counts)
SELECT $1, $2, * FROM unnest($3::text[], $4::text[], $5::float8[], $6::float8[], $7::int[],
                             $8::int[], $9::int[], $10::timestamptz[], $11::timestamptz[],
                             $12::float8[], $13::jsonb[])
ON CONFLICT (tenant_id, generation, a, b) DO UPDATE SET
    given_ab = EXCLUDED.given_ab, given_ba = EXCLUDED.given_ba,
    favors_ab = EXCLUDED.favors_ab, favors_ba = EXCLUDED.favors_ba,
    contacts = EXCLUDED.contacts, first_contact = EXCLUDED.first_contact,
    last_contact = EXCLUDED.last_contact, strength_log2 = EXCLUDED.strength_log2,
    counts = EXCLUDED.counts
"""

_INSERT_PARTIES: Final = """
INSERT INTO network_parties (tenant_id, generation, stream, parties)
SELECT $1, $2, s, string_to_array(p, chr(31))
FROM unnest($3::text[], $4::text[]) AS x(s, p)
ON CONFLICT DO NOTHING
"""


class State(msgspec.Struct, frozen=True):
    generation: int
    checkpoint: Cursor
    events_applied: int
    worker: str | None


def to_projected(row: Any) -> ProjectedEvent:
    return ProjectedEvent(
        id=row["id"],
        type=row["type"],
        occurred_at=row["occurred_at"],
        tx_id=row["tx_id"],
        position=row["position"],
        data=msgspec.convert(row["data"], EVENT_TYPES[row["type"]]),
    )


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def state_of(conn: Connection, tenant_id: int, projection: str = PROJECTION) -> State:
    row = await conn.fetchrow(_STATE, tenant_id, projection)
    assert row is not None
    return State(
        row["generation"],
        Cursor(row["checkpoint_tx"], row["checkpoint_position"]),
        row["events_applied"],
        row["worker"],
    )


async def events_after(
    conn: Connection, tenant_id: int, after: Cursor, limit: int
) -> list[ProjectedEvent]:
    rows = await conn.fetch(EVENTS_AFTER, tenant_id, str(after.tx_id), after.position, limit)
    return [to_projected(row) for row in rows]


async def log_until(
    conn: Connection, tenant_id: int, until: Cursor, *, batch_size: int = 5000
) -> AsyncIterator[list[ProjectedEvent]]:
    """The log from its start up to ``until``, in batches, as the projector reads it
    (rebuilds, verify and replays stream it this way, never all at once)."""
    cursor = Cursor(0, 0)
    while cursor < until:
        events = [
            e
            for e in await events_after(conn, tenant_id, cursor, batch_size)
            if Cursor(e.tx_id, e.position) <= until
        ]
        if not events:
            return
        yield events
        cursor = Cursor(events[-1].tx_id, events[-1].position)


async def policies_until(conn: Connection, tenant_id: int, until: Cursor) -> PolicyTimeline:
    rows = await conn.fetch(_POLICY_EVENTS, tenant_id, str(until.tx_id), until.position)
    return PolicyTimeline(to_projected(row) for row in rows)


# Rows written (COPY) or deleted per statement when a generation is written in
# bulk or dropped. Readers follow the log up to the oldest transaction still
# running on the server (the commit horizon, see ledger.store.read): a refold's
# final COPY of every pair, or the DELETE of the generation it replaced, ran for
# 15 s at a million events, and every live projector on the server stood still
# meanwhile. A chunk takes a fraction of a second. (Deleting finds each chunk
# again through the index, past the rows deleted before it: fewer, larger
# chunks there.)
CHUNK: Final = 20_000
DROP_CHUNK: Final = 200_000

# Timeline rows a refold keeps before it writes them, sorted by key. Each
# timeline's index is keyed by person (or pair) first, so rows in log order
# land all over it: once the index outgrows PostgreSQL's buffers, every few
# rows cost a page read and a page write. Sorted, a flush walks the index once.
# Measured on 2.2 million rows of that shape (20,000 people, 128 MB of shared
# buffers), plain SQL: 73.6 s inserted in log order 11,000 rows a statement,
# 17.5 s sorted 220,000 a statement. A held row is a tuple and an entry, about
# 120 bytes: some 30 MB at this size.
FLUSH_ROWS: Final = 250_000
# Person or pair first; a stable sort keeps each one's rows in log order.
_BY_KEY: Final = operator.itemgetter(0)

Advance = Callable[[Connection, int, int, list[ProjectedEvent]], Awaitable["int | None"]]


class Refold(Protocol):
    """Re-derive a generation from the log up to ``until``, writing on ``conn``;
    given a ``reader`` (another connection, outside any transaction), read the
    log on it, so that reading and folding go on while PostgreSQL writes."""

    def __call__(
        self,
        conn: Connection,
        tenant_id: int,
        generation: int,
        until: Cursor,
        *,
        progress: Callable[[int], None] | None = None,
        batch_size: int = 5000,
        reader: Connection | None = None,
    ) -> Awaitable[int]: ...


@dataclass(frozen=True)
class Projection:
    """What the generic machinery (checkpoints, workers, rebuilds) needs of a projection.

    ``advance`` applies a batch of new events to a generation (returning the
    events the generation reflects if it re-derived instead); ``refold``
    re-derives a generation from the start of the log; ``tables`` hold the
    generation's rows.
    """

    name: str
    tables: tuple[str, ...]
    advance: Advance
    refold: Refold

    async def drop(self, conn: Connection, tenant_id: int, generation: int) -> None:
        """Delete a generation's rows, a chunk per statement: outside a transaction
        each chunk commits on its own, as one DELETE of millions of rows would not
        (see :data:`DROP_CHUNK`)."""
        for table in self.tables:
            while (
                await conn.execute(
                    f"""DELETE FROM {table} WHERE ctid = ANY(ARRAY(
                        SELECT ctid FROM {table}
                        WHERE tenant_id = $1 AND generation = $2 LIMIT $3))""",
                    tenant_id,
                    generation,
                    DROP_CHUNK,
                )
                != "DELETE 0"
            ):
                pass


async def catch_up(
    conn: Connection,
    tenant_id: int,
    *,
    batch_size: int = BATCH_SIZE,
    worker: str | None = None,
    max_batches: int | None = None,
    projection: Projection | None = None,
) -> int:
    """Apply the tenant's unprojected events; return how many were applied.

    Returns early (0) when another worker holds the tenant.
    """
    projection = projection or NETWORK
    applied = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        async with conn.transaction():
            if not await conn.fetchval(_TRY_LOCK, tenant_id, projection.name):
                return applied
            state = await state_of(conn, tenant_id, projection.name)
            events = await events_after(conn, tenant_id, state.checkpoint, batch_size)
            if not events:
                return applied
            head = Cursor(events[-1].tx_id, events[-1].position)
            total = await projection.advance(conn, tenant_id, state.generation, events)
            counted = len(events) if total is None else total - state.events_applied
            await _move(conn, projection.name, tenant_id, head, counted, worker)
        applied += len(events)
        batches += 1
    return applied


async def _move(
    conn: Connection, projection: str, tenant_id: int, to: Cursor, applied: int, worker: str | None
) -> None:
    await conn.execute(
        _MOVE_CHECKPOINT,
        tenant_id,
        projection,
        to.tx_id,
        to.position,
        applied,
        worker or worker_name(),
    )


async def advance(
    conn: Connection, tenant_id: int, generation: int, events: list[ProjectedEvent]
) -> int | None:
    """Apply a batch; a policy change among it re-derives the generation instead.

    Returns the number of events the generation now reflects when it was
    re-derived, None when the batch was merged in.
    """
    if any(isinstance(e.data, PolicyChanged) for e in events):
        until = Cursor(events[-1].tx_id, events[-1].position)
        return await refold(conn, tenant_id, generation, until)
    await apply_batch(conn, tenant_id, generation, events)
    return None


async def apply_batch(
    conn: Connection, tenant_id: int, generation: int, events: list[ProjectedEvent]
) -> None:
    """Fold ``events`` and merge the result into the stored rows of ``generation``."""
    last = events[-1]
    policies = await policies_until(conn, tenant_id, Cursor(last.tx_id, last.position))
    needed = sorted(set(_streams_needing_parties(events)))
    known = {
        row["stream"]: tuple(row["parties"])
        for row in (await conn.fetch(_PARTIES, tenant_id, generation, needed) if needed else [])
    }
    fold = Fold(policies, known)
    fold.apply_all(events)
    keys = sorted(fold.pairs)
    stored = {
        (row["a"], row["b"]): pair_of(row)
        for row in await conn.fetch(
            _PAIRS, tenant_id, generation, [k[0] for k in keys], [k[1] for k in keys]
        )
    }
    merged = {k: merge(stored.get(k, EMPTY), delta) for k, delta in fold.pairs.items()}
    await write(conn, tenant_id, generation, fold, merged)


class _Rows(msgspec.Struct, frozen=True):
    """A fold's output as table rows (without tenant and generation): one shape
    for both ways of writing them."""

    pairs: list[tuple[Any, ...]]
    parties: list[tuple[str, tuple[str, ...]]]
    person_timeline: list[tuple[Any, ...]]
    pair_timeline: list[tuple[Any, ...]]


def _take_rows(fold: Fold, pairs: dict[tuple[str, str], Pair]) -> _Rows:
    """The rows of ``pairs`` and of what the fold added since it was last written,
    each table's in the order of its key (see :data:`FLUSH_ROWS`)."""
    fold.person_timeline.sort(key=_BY_KEY)
    fold.pair_timeline.sort(key=_BY_KEY)
    rows = _Rows(
        pairs=[
            (
                a,
                b,
                p.given_ab,
                p.given_ba,
                p.favors_ab,
                p.favors_ba,
                p.contacts,
                p.first_contact,
                p.last_contact,
                p.strength_log2,
                msgspec.json.encode(p.counts),
            )
            for (a, b), p in sorted(pairs.items(), key=_BY_KEY)
        ],
        parties=list(fold.new_parties.items()),
        person_timeline=[
            (person, e.occurred_at, e.position, e.event_id) for person, e in fold.person_timeline
        ],
        pair_timeline=[
            (a, b, e.occurred_at, e.position, e.event_id) for (a, b), e in fold.pair_timeline
        ],
    )
    fold.person_timeline.clear()
    fold.pair_timeline.clear()
    fold.new_parties.clear()
    return rows


async def write(
    conn: Connection,
    tenant_id: int,
    generation: int,
    fold: Fold,
    pairs: dict[tuple[str, str], Pair],
) -> None:
    """Store pairs (replacing), new parties and timeline rows of a live batch.

    Timeline rows go in with COPY, as a refold writes everything (its generation
    had none of these rows): a row is keyed by its event's position, and a
    generation takes each event once, under its checkpoint, so nothing stored
    can collide with them. An INSERT ... ON CONFLICT DO NOTHING of the timelines
    cost half as much again as a plain INSERT, and COPY less than that.
    """
    rows = _take_rows(fold, pairs)
    head = (tenant_id, generation)
    if rows.pairs:
        await conn.execute(_UPSERT_PAIRS, *head, *_columns(rows.pairs))
    if rows.parties:
        # unnest cannot take ragged text[][]: parties travel joined by a unit separator.
        joined = [(stream, "\x1f".join(who)) for stream, who in rows.parties]
        await conn.execute(_INSERT_PARTIES, *head, *_columns(joined))
    await _copy_rows(conn, head, _Rows([], [], rows.person_timeline, rows.pair_timeline))


async def _copy_rows(conn: Connection, head: tuple[int, int], rows: _Rows) -> None:
    tables = (
        ("network_pairs", _PAIR_TABLE_COLUMNS, rows.pairs),
        ("network_parties", ("stream", "parties"), [(s, list(w)) for s, w in rows.parties]),
        (
            "timeline_person",
            ("person", "occurred_at", "position", "event_id"),
            rows.person_timeline,
        ),
        ("timeline_pair", ("a", "b", "occurred_at", "position", "event_id"), rows.pair_timeline),
    )
    for table, columns, records in tables:
        for start in range(0, len(records), CHUNK):
            await conn.copy_records_to_table(
                table,
                columns=("tenant_id", "generation", *columns),
                records=[(*head, *record) for record in records[start : start + CHUNK]],
            )


_PAIR_TABLE_COLUMNS: Final = (
    "a",
    "b",
    "given_ab",
    "given_ba",
    "favors_ab",
    "favors_ba",
    "contacts",
    "first_contact",
    "last_contact",
    "strength_log2",
    "counts",
)


def _columns(rows: Iterable[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


def pair_of(row: Any) -> Pair:
    return Pair(
        given_ab=row["given_ab"],
        given_ba=row["given_ba"],
        favors_ab=row["favors_ab"],
        favors_ba=row["favors_ba"],
        contacts=row["contacts"],
        first_contact=row["first_contact"],
        last_contact=row["last_contact"],
        strength_log2=row["strength_log2"],
        counts=row["counts"],
    )


class _CollectorPause:
    """How many refolds in this process hold the cycle collector off, and
    whether to turn it back on after the last (see :func:`collector_paused`)."""

    depth = 0
    resume = False


_P = ParamSpec("_P")
_R = TypeVar("_R")


def collector_paused(
    refold: Callable[_P, Awaitable[_R]],
) -> Callable[_P, Coroutine[Any, Any, _R]]:
    """Hold CPython's cycle collector off while ``refold`` re-derives a generation.

    A refold keeps a large state (pairs, pair histories) alive across thousands
    of batches, and each batch promotes enough objects to start a full
    collection, which walks all of that state again: collection time grew with
    the square of the tenant's log (at 200k events, half the rebuild's CPU).
    Nothing a fold makes can form a cycle, so reference counting frees it all.
    The collector resumes once the last refold in the process has returned and
    its state is gone, so nothing is left for it to walk.
    """

    @functools.wraps(refold)
    async def paused(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        if _CollectorPause.depth == 0:
            _CollectorPause.resume = gc.isenabled()
            gc.disable()
        _CollectorPause.depth += 1
        try:
            return await refold(*args, **kwargs)
        finally:
            _CollectorPause.depth -= 1
            if _CollectorPause.depth == 0 and _CollectorPause.resume:
                gc.enable()

    return paused


@collector_paused
async def refold(
    conn: Connection,
    tenant_id: int,
    generation: int,
    until: Cursor,
    *,
    progress: Callable[[int], None] | None = None,
    batch_size: int = 5000,
    reader: Connection | None = None,
) -> int:
    """Re-derive ``generation`` of a tenant from the start of its log up to ``until``.

    State is held in memory per pair (not the log: events stream through in
    batches), timeline rows are written every :data:`FLUSH_ROWS`, sorted. With a
    ``reader``, each flush is written while the next rows are read and folded:
    at a million events the writes took as long as the fold, one after the other.
    Returns events folded.
    """
    await NETWORK.drop(conn, tenant_id, generation)
    log = conn if reader is None else reader
    fold = Fold(await policies_until(log, tenant_id, until))
    head = (tenant_id, generation)
    folded = 0
    async with Flushes(overlap=reader is not None) as flushes:
        async for events in log_until(log, tenant_id, until, batch_size=batch_size):
            fold.apply_all(events)
            if len(fold.person_timeline) + len(fold.pair_timeline) >= FLUSH_ROWS:
                await flushes.write(_copy_rows(conn, head, _take_rows(fold, {})))
            folded += len(events)
            if progress is not None:
                progress(len(events))
        await flushes.write(_copy_rows(conn, head, _take_rows(fold, fold.pairs)))
    return folded


class Flushes:
    """A refold's writes: awaited in turn, or, with ``overlap``, each left to run
    while the refold reads and folds on, at most one at a time. Leaving waits for
    the last; a failure cancels the one running."""

    def __init__(self, *, overlap: bool) -> None:
        self._overlap = overlap
        self._running: asyncio.Task[None] | None = None

    async def write(self, writing: Coroutine[Any, Any, None]) -> None:
        try:
            await self._finish()
        except BaseException:
            writing.close()  # never to run: the one before it failed
            raise
        if self._overlap:
            self._running = asyncio.ensure_future(writing)
        else:
            await writing

    async def _finish(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            await running

    async def __aenter__(self) -> Flushes:
        return self

    async def __aexit__(self, failed: type[BaseException] | None, *_: object) -> None:
        if failed is None:
            await self._finish()
        elif self._running is not None:
            self._running.cancel()
            with contextlib.suppress(BaseException):
                await self._running


# Every pass of the projector asks this, so it must cost a probe per tenant, not
# a read of the log. As ``WHERE EXISTS`` the planner turned it into a hash semi
# join over every visible event (34 ms at 70,000 events, half a core of
# PostgreSQL under load); the ordered ``LIMIT 1`` in a lateral subquery cannot
# be flattened, and takes the log-order index from each tenant's checkpoint.
_TENANTS_BEHIND: Final = f"""
SELECT t.tenant_id FROM tenants t
LEFT JOIN projection_state s ON s.tenant_id = t.tenant_id AND s.projection = $1
CROSS JOIN LATERAL (
    SELECT 1 FROM events e
    WHERE e.tenant_id = t.tenant_id
      AND (e.tx_id, e.position) >
          (coalesce(s.checkpoint_tx, 0)::text::xid8, coalesce(s.checkpoint_position, 0))
      AND e.{VISIBLE}
    ORDER BY e.tx_id, e.position
    LIMIT 1
) AS ahead
ORDER BY t.tenant_id
"""


async def tenants_behind(conn: Connection, projection: str = PROJECTION) -> list[int]:
    """Tenants whose log has events beyond their checkpoint."""
    rows = await conn.fetch(_TENANTS_BEHIND, projection)
    return [row["tenant_id"] for row in rows]


# Under a steady stream of appends every pass finds a few new events, and a
# pass costs the same statements and commit whether it folds 5 events or 500
# (in a bench of single appends, passes of about 26 events made the projector
# cost 170 us of CPU per event, three times what a rebuild spends). So passes
# that follow one another start at least this far apart: a busy log is folded
# in batches of this much time's worth, while an append after a quiet spell is
# still folded at once.
GATHER_S: Final = 0.05


async def run(
    pool: Pool,
    *,
    poll_interval: float = 1.0,
    stop: asyncio.Event | None = None,
    projections: Sequence[Projection] | None = None,
    gather: float = GATHER_S,
) -> None:
    """Keep every tenant's projections caught up until ``stop`` is set.

    Woken by LISTEN/NOTIFY after appends; polls as well, so a missed
    notification (or one from another worker's crash) delays nothing for long.
    Tenants and projections take turns, one batch each per pass, until none is
    behind: a tenant with a backlog of a million events (or a slow projection)
    does not hold back everyone else's next batch. A pass that follows another
    waits until ``gather`` seconds after the previous one began.
    """
    if projections is None:
        from ledger.projections.registry import PROJECTIONS  # the registry imports this module

        projections = list(PROJECTIONS.values())
    stop = stop or asyncio.Event()
    wake = asyncio.Event()
    worker = worker_name()
    loop = asyncio.get_running_loop()
    async with _listening(pool, wake):
        while not stop.is_set():
            wake.clear()
            try:
                async with pool.acquire() as conn:
                    while not stop.is_set():
                        began = loop.time()
                        if not await _one_pass(conn, projections, worker):
                            break
                        await _pause(stop, began + gather - loop.time())
            except Exception:
                _log.exception("projector pass failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_first(wake, stop), timeout=poll_interval)


async def _one_pass(conn: Connection, projections: Sequence[Projection], worker: str) -> bool:
    """One batch for every tenant behind in every projection; whether any was applied."""
    applied = 0
    for projection in projections:
        for tenant_id in await tenants_behind(conn, projection.name):
            applied += await catch_up(
                conn, tenant_id, worker=worker, projection=projection, max_batches=1
            )
    return applied > 0


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


@contextlib.asynccontextmanager
async def _listening(pool: Pool, wake: asyncio.Event) -> AsyncIterator[None]:
    def notified(*_: object) -> None:
        wake.set()

    conn = await pool.acquire()
    try:
        await conn.add_listener(NOTIFY_CHANNEL, notified)
    except Exception:
        await pool.release(conn)
        raise
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            await conn.remove_listener(NOTIFY_CHANNEL, notified)
        await pool.release(conn)


class Status(msgspec.Struct, frozen=True, kw_only=True):
    tenant: str
    projection: str
    generation: int
    checkpoint: str
    events_applied: int
    lag_events: int
    lag_seconds: float | None
    worker: str | None
    updated_at: datetime | None


_STATUS: Final = """
SELECT t.tenant_id, t.name, s.generation, s.checkpoint_tx, s.checkpoint_position,
       s.events_applied, s.worker, s.updated_at,
       lag.events AS lag_events,
       extract(epoch FROM clock_timestamp() - lag.oldest)::float8 AS lag_seconds
FROM tenants t
LEFT JOIN projection_state s ON s.tenant_id = t.tenant_id AND s.projection = $1
CROSS JOIN LATERAL (
    SELECT count(*) AS events, min(e.recorded_at) AS oldest
    FROM events e
    WHERE e.tenant_id = t.tenant_id
      AND (e.tx_id, e.position) >
          (coalesce(s.checkpoint_tx, 0)::text::xid8, coalesce(s.checkpoint_position, 0))
) AS lag
WHERE $2::text IS NULL OR t.name = $2
ORDER BY t.name
"""


async def status(
    conn: Connection, tenant: str | None = None, projection: str = PROJECTION
) -> list[Status]:
    """Each tenant's checkpoint and how far behind its log it is (events, seconds)."""
    return [
        Status(
            tenant=row["name"],
            projection=projection,
            generation=row["generation"] or 1,
            checkpoint=Cursor(row["checkpoint_tx"] or 0, row["checkpoint_position"] or 0).encode(),
            events_applied=row["events_applied"] or 0,
            lag_events=row["lag_events"],
            lag_seconds=row["lag_seconds"] if row["lag_events"] else 0.0,
            worker=row["worker"],
            updated_at=row["updated_at"],
        )
        for row in await conn.fetch(_STATUS, projection, tenant)
    ]


_HEAD: Final = f"""
SELECT e.tx_id::text::bigint AS tx_id, e.position FROM events e
WHERE e.tenant_id = $1 AND e.{VISIBLE}
ORDER BY e.tx_id DESC, e.position DESC LIMIT 1
"""

_COUNT_UNTIL: Final = """
SELECT count(*) FROM events
WHERE tenant_id = $1 AND (tx_id, position) <= ($2::text::xid8, $3::bigint)
"""

_SWAP: Final = """
UPDATE projection_state
SET generation = $3, checkpoint_tx = $4, checkpoint_position = $5, events_applied = $6,
    updated_at = now(), worker = $7
WHERE tenant_id = $1 AND projection = $2
"""


async def rebuild(
    conn: Connection,
    tenant_id: int,
    *,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 5000,
    projection: Projection | None = None,
    reader: Connection | None = None,
) -> int:
    """Re-derive a tenant into a fresh generation while reads use the live one, then swap.

    1. fold the log from the start into generation g+1, committing as it goes
       (no long transaction: that would hold back the commit horizon for everyone);
    2. catch the new generation up with what was appended meanwhile;
    3. under the tenant's projector lock, apply the last events and switch reads
       to g+1 in one transaction; then drop generation g and refresh the
       tables' statistics.

    ``progress(done, total)`` is called after each batch. A ``reader``, a second
    connection, lets the fold read the log while its writes go on (see
    :class:`Refold`). Returns events folded.
    """
    projection = projection or NETWORK
    async with conn.transaction():
        current = (await state_of(conn, tenant_id, projection.name)).generation
    fresh = current + 1
    await projection.drop(conn, tenant_id, fresh)
    head_row = await conn.fetchrow(_HEAD, tenant_id)
    head = Cursor(0, 0) if head_row is None else Cursor(head_row["tx_id"], head_row["position"])
    total = await conn.fetchval(_COUNT_UNTIL, tenant_id, str(head.tx_id), head.position)
    done = 0

    def step(n: int) -> None:
        nonlocal done, total
        done += n
        total = max(total, done)
        if progress is not None:
            progress(done, total)

    await projection.refold(
        conn, tenant_id, fresh, head, progress=step, batch_size=batch_size, reader=reader
    )
    cursor = head
    while True:  # catch up with appends made during the fold
        async with conn.transaction():
            events = await events_after(conn, tenant_id, cursor, batch_size)
            if events:
                await projection.advance(conn, tenant_id, fresh, events)
        if events:
            cursor = Cursor(events[-1].tx_id, events[-1].position)
            total += len(events)
            step(len(events))
        if len(events) < batch_size:
            break
    async with conn.transaction():
        await conn.execute(_LOCK, tenant_id, projection.name)
        while events := await events_after(conn, tenant_id, cursor, batch_size):
            await projection.advance(conn, tenant_id, fresh, events)
            cursor = Cursor(events[-1].tx_id, events[-1].position)
            total += len(events)
            step(len(events))
        applied = await conn.fetchval(_COUNT_UNTIL, tenant_id, str(cursor.tx_id), cursor.position)
        await conn.execute(
            _SWAP,
            tenant_id,
            projection.name,
            fresh,
            cursor.tx_id,
            cursor.position,
            applied,
            worker_name(),
        )
    await projection.drop(conn, tenant_id, current)
    # A generation written in bulk leaves the planner's statistics far behind
    # (it took a million violations for a handful and read them all for one
    # person's list): refresh them now rather than when autovacuum gets to it.
    # (PostgreSQL skips it with a warning where the role does not own the tables.)
    for table in projection.tables:
        await conn.execute(f"ANALYZE {table}")
    return done


NETWORK: Final = Projection(
    name=PROJECTION,
    tables=("network_pairs", "network_parties", "timeline_person", "timeline_pair"),
    advance=advance,
    refold=refold,
)
