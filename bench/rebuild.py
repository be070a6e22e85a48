"""Projection rebuild rate beside a raw scan of the same events, and read latencies.

The log is bulk-loaded (COPY) from the shared scenario generator; then, in the
same run on the same PostgreSQL:

- ``scan``: the tenant's log read in the projector's order and batch size,
  decoding nothing beyond what asyncpg does: the floor for any rebuild;
- ``fold``: the rebuild's own read and fold of the log, writing nothing: what
  the Python part of a rebuild costs at the least;
- ``rebuild``: ``ledger projections rebuild`` for the tenant (fold, write,
  catch up, swap);
- reads: p50/p99 of balance, relationship, timeline and violations requests
  to ``ledger serve`` over loopback, for people drawn by activity.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from itertools import islice
from typing import Any

import msgspec

from bench import http
from bench.workloads import BenchError, nearest_rank
from ledger.projections.core import Fold
from ledger.projections.projector import (
    EVENTS_AFTER,
    collector_paused,
    log_until,
    policies_until,
    rebuild,
)
from ledger.projections.registry import PROJECTIONS
from ledger.scenario import Generated
from ledger.store.cursor import Cursor
from ledger.store.database import connect
from ledger.tenants.keys import create_key

_COLUMNS = ("tenant_id", "id", "stream", "version", "type", "occurred_at", "data", "people")
# The projector's own read of the log, so the baseline differs only by the fold.
_SCAN = EVENTS_AFTER


async def create_tenant(url: str, tenant: str) -> tuple[int, str]:
    """A tenant and an API key for it: (tenant id, key)."""
    conn = await connect(url)
    try:
        _, key = await create_key(conn, tenant, [])
        tenant_id: int = await conn.fetchval(
            "SELECT tenant_id FROM tenants WHERE name = $1", tenant
        )
        return tenant_id, key
    finally:
        await conn.close()


async def load(
    url: str, tenant_id: int, generated: Iterator[Generated], count: int, versions: dict[str, int]
) -> float:
    """Bulk-load the next ``count`` generated events; seconds taken. ``versions``
    carries each stream's version from one load to the next."""
    conn = await connect(url)
    try:
        started = time.perf_counter()
        rows: list[tuple[Any, ...]] = []
        encode = msgspec.json.encode
        for generated_event in islice(generated, count):
            wire = generated_event.wire
            stream = generated_event.stream
            version = versions[stream] = versions.get(stream, 0) + 1
            rows.append(
                (
                    tenant_id,
                    uuid.UUID(wire["id"]),
                    stream,
                    version,
                    wire["type"],
                    datetime.fromisoformat(wire["occurred_at"]),
                    encode(wire["data"]),
                    encode(generated_event.people),
                )
            )
            if len(rows) == 50_000:
                await conn.copy_records_to_table("events", records=rows, columns=_COLUMNS)
                rows.clear()
        if rows:
            await conn.copy_records_to_table("events", records=rows, columns=_COLUMNS)
        # As autovacuum would soon: without statistics the planner guesses the keyset
        # scan matches a handful of rows and sorts instead of walking the index.
        await conn.execute("ANALYZE events")
        return time.perf_counter() - started
    finally:
        await conn.close()


async def scan(url: str, tenant_id: int, batch: int = 5000) -> tuple[int, float]:
    conn = await connect(url)
    try:
        started = time.perf_counter()
        seen, tx, position = 0, 0, 0
        while rows := await conn.fetch(_SCAN, tenant_id, str(tx), position, batch):
            seen += len(rows)
            tx, position = rows[-1]["tx_id"], rows[-1]["position"]
        return seen, time.perf_counter() - started
    finally:
        await conn.close()


@collector_paused  # as the rebuild's refold runs
async def fold_only(url: str, tenant_id: int, batch: int = 5000) -> tuple[int, float]:
    """The rebuild's read and fold of the network projection without its writes:
    what its Python alone costs (the rebuild's reads and fold are the same calls)."""
    conn = await connect(url)
    try:
        started = time.perf_counter()
        head = Cursor(2**63 - 1, 2**63 - 1)
        fold = Fold(await policies_until(conn, tenant_id, head))
        folded = 0
        async for events in log_until(conn, tenant_id, head, batch_size=batch):
            fold.apply_all(events)
            folded += len(events)
            fold.person_timeline.clear()  # as each batch's write takes them
            fold.pair_timeline.clear()
        return folded, time.perf_counter() - started
    finally:
        await conn.close()


async def rebuild_once(url: str, tenant_id: int, projection: str = "network") -> tuple[int, float]:
    """As ``ledger projections rebuild`` runs it: writes on one connection, reads on another."""
    conn, reader = await connect(url), await connect(url)
    try:
        started = time.perf_counter()
        folded = await rebuild(conn, tenant_id, projection=PROJECTIONS[projection], reader=reader)
        return folded, time.perf_counter() - started
    finally:
        await conn.close()
        await reader.close()


async def read_latencies(connect: http.Connect, people: int, reads: int) -> dict[str, float]:
    """p50/p99 (ms) of balance, relationship, timeline and violations reads for
    people drawn by activity (a relationship: two of them in turn), one request
    at a time over one keep-alive connection to ``ledger serve``."""
    rng = random.Random(3)
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(people)]
    chosen = rng.choices([f"u{n}" for n in range(people)], weights, k=reads)
    results: dict[str, float] = {}
    async with connect() as client:
        for name, path in (
            ("balance", "/v1/people/{}/balances"),
            ("relationship", "/v1/relationships/{}/{}"),
            ("timeline", "/v1/people/{}/timeline"),
            ("violations", "/v1/people/{}/violations"),
        ):
            timings: list[float] = []
            for person, other in zip(chosen, [*chosen[1:], chosen[0]], strict=True):
                if person == other:
                    continue
                started = time.perf_counter()
                status, answer = await client.get(path.format(person, other))
                timings.append((time.perf_counter() - started) * 1000)
                if status not in (200, 404):
                    raise BenchError(f"GET {path} answered {status}: {answer[:500]!r}")
            results[f"{name}_p50_ms"] = statistics.median(timings)
            results[f"{name}_p99_ms"] = nearest_rank(timings, 99)
    return results
