"""What the benchmarks time: the ledger's append paths and their raw baselines.

Inputs (request bodies, baseline rows) are built before the clock starts; each
timed call then does what the real path does with them:

- store append: ``prepare(decode_batch(body))`` then ``append`` on a pooled
  connection, as the ``POST /v1/events`` handler does after authentication;
- raw INSERT: one single-row ``INSERT`` (autocommit) of the same row into
  ``bench_raw``, a copy of the events table with the same columns, defaults,
  constraints and indexes but no trigger and no foreign key;
- HTTP append: ``POST /v1/events`` with an API key over loopback;
- COPY: ``copy_records_to_table`` of the same rows into ``bench_raw``.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import perf_counter
from typing import Any, Final, TypeVar

import msgspec

from bench import http
from ledger.events.envelope import decode_batch, prepare
from ledger.store.append import append
from ledger.store.database import Connection

S = TypeVar("S")
T = TypeVar("T")

START: Final = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
SCRATCH_TABLE: Final = "bench_raw"
# Same columns, defaults, CHECKs, primary key, unique constraints and indexes
# as the events table; LIKE copies neither triggers nor foreign keys.
CREATE_SCRATCH: Final = f"CREATE TABLE {SCRATCH_TABLE} (LIKE events INCLUDING ALL)"
COLUMNS: Final = (
    "tenant_id",
    "id",
    "stream",
    "version",
    "type",
    "occurred_at",
    "data",
    "metadata",
    "people",
)
_RAW_INSERT: Final = (
    f"INSERT INTO {SCRATCH_TABLE} ({', '.join(COLUMNS)}) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
)
# Everything a worker does waits at most this long to start (bounded setup).
START_TIMEOUT_S: Final = 60.0

Row = tuple[int, uuid.UUID, str, int, str, datetime, bytes, bytes, bytes]

_ENCODER: Final = msgspec.json.Encoder()


class BenchError(RuntimeError):
    """A benchmark could not run as intended (a refused append, a server that
    did not start); its figures would be meaningless, so the run stops."""


@dataclass(frozen=True)
class Run:
    """Events written, wall-clock seconds, the latency of each timed call, and
    the CPU seconds spent meanwhile (see :class:`Cpu`)."""

    events: int
    seconds: float
    latencies: tuple[float, ...]
    cpu: Cpu

    def __add__(self, other: Run) -> Run:
        return Run(
            self.events + other.events,
            self.seconds + other.seconds,
            self.latencies + other.latencies,
            self.cpu + other.cpu,
        )

    def cores(self, part: str) -> float:
        """Average cores busy during the run: ``bench``, ``server``, ``projector``
        (the server's child), ``postgres``, ``machine``, or ``rest`` (the machine
        less the others)."""
        cpu = self.cpu
        used = {
            "bench": cpu.bench,
            "server": cpu.server,
            "projector": cpu.projector,
            "postgres": cpu.postgres,
            "machine": cpu.machine,
            "rest": cpu.machine - cpu.bench - cpu.server - cpu.projector - cpu.postgres,
        }
        return max(0.0, used[part]) / self.seconds if self.seconds > 0 else 0.0

    @property
    def eps(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile of the call latencies, in milliseconds."""
        return nearest_rank(self.latencies, q) * 1000


def nearest_rank(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by nearest rank; 0 for no samples. Every
    percentile the bench prints comes from here."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


@dataclass(frozen=True)
class Watch:
    """Whose CPU to count besides this process: the PostgreSQL backends serving
    ``database`` (when the server runs on this machine) and the HTTP server."""

    database: str | None = None
    server_pid: int | None = None


@dataclass(frozen=True)
class Cpu:
    """CPU seconds (Linux /proc; zeros elsewhere): this process, the HTTP
    server, its projector process, the PostgreSQL backends of the bench
    database, and all cores of the machine (every process: a busy neighbour
    shows up here)."""

    bench: float = 0.0
    server: float = 0.0
    postgres: float = 0.0
    machine: float = 0.0
    projector: float = 0.0

    def __add__(self, other: Cpu) -> Cpu:
        return Cpu(
            self.bench + other.bench,
            self.server + other.server,
            self.postgres + other.postgres,
            self.machine + other.machine,
            self.projector + other.projector,
        )

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(
            self.bench - other.bench,
            self.server - other.server,
            self.postgres - other.postgres,
            self.machine - other.machine,
            self.projector - other.projector,
        )

    @classmethod
    def now(cls, watch: Watch, bench: float | None = None) -> Cpu:
        """A snapshot; this process's time is read last unless given, so that
        reading /proc is counted in neither window of :func:`drive`."""
        server = _process_cpu(watch.server_pid) if watch.server_pid is not None else 0.0
        projector = _children_cpu(watch.server_pid) if watch.server_pid is not None else 0.0
        postgres = _backends_cpu(watch.database) if watch.database is not None else 0.0
        machine = _machine_busy()
        return cls(
            time.process_time() if bench is None else bench, server, postgres, machine, projector
        )


_TICK: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_cpu(pid: int | str) -> float:
    """User + system CPU seconds of ``pid``; 0 when it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def children_of(pid: int) -> list[int]:
    """The live child processes of ``pid`` (the server's projector)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _children_cpu(pid: int) -> float:
    return sum(_process_cpu(child) for child in children_of(pid))


def _backends_cpu(database: str) -> float:
    """CPU seconds of the PostgreSQL backends connected to ``database``, found by
    their process titles (``postgres: ... user database host(port) state``)."""
    name = f" {database} ".encode()
    total = 0.0
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return 0.0
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            title = Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(b"postgres:") and name in title:
            total += _process_cpu(entry.name)
    return total


def _machine_busy() -> float:
    """CPU seconds all cores spent on anything but idling; 0 when unknown."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return 0.0
    ticks = [int(field) for field in first[1:9]]  # user .. steal
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks) - idle) / _TICK


EMPTY: Final = Run(0, 0.0, (), Cpu())


# -- inputs ---------------------------------------------------------------------


def message(sender: str, seq: int) -> dict[str, Any]:
    """A ``message.sent`` event with a client-chosen id, as tests/samples.py makes them."""
    return {
        "id": str(uuid.uuid4()),
        "type": "message.sent",
        "occurred_at": (START + timedelta(seconds=seq)).isoformat(),
        "data": {"from": sender, "to": f"{sender}-peer", "kind": "check_in"},
    }


def body(events: list[dict[str, Any]]) -> bytes:
    return _ENCODER.encode({"events": events})


def single_bodies(prefix: str, workers: int, per_worker: int, first: int = 0) -> list[list[bytes]]:
    """One body of one event per call; each worker writes its own stream."""
    return [
        [body([message(f"{prefix}-w{w:02d}", first + i)]) for i in range(per_worker)]
        for w in range(workers)
    ]


def batch_body(prefix: str, size: int, senders: int, first: int = 0) -> bytes:
    """``size`` events spread round-robin over ``senders`` streams."""
    return body([message(f"{prefix}-s{i % senders:03d}", first + i) for i in range(size)])


def rows_of(tenant_id: int, payload: bytes, versions: dict[str, int]) -> list[Row]:
    """The rows the store would write for ``payload``, versions counted in ``versions``."""
    rows: list[Row] = []
    for event in prepare(decode_batch(payload)):
        version = versions.get(event.stream, 0) + 1
        versions[event.stream] = version
        rows.append(
            (
                tenant_id,
                event.id,
                event.stream,
                version,
                event.type,
                event.occurred_at,
                event.data_json,
                event.metadata_json,
                event.people_json,
            )
        )
    return rows


def single_rows(
    tenant_id: int, prefix: str, workers: int, per_worker: int, versions: dict[str, int]
) -> list[list[Row]]:
    return [
        [row for payload in shard for row in rows_of(tenant_id, payload, versions)]
        for shard in single_bodies(prefix, workers, per_worker, first=sum(versions.values()))
    ]


# -- timed calls ----------------------------------------------------------------


def store_append(tenant_id: int) -> Callable[[Connection, bytes], Awaitable[None]]:
    async def call(conn: Connection, payload: bytes) -> None:
        _result, created = await append(conn, tenant_id, prepare(decode_batch(payload)))
        if not created:
            raise BenchError("the store found the benchmark's events already stored")

    return call


async def raw_insert(conn: Connection, row: Row) -> None:
    await conn.execute(_RAW_INSERT, *row)


async def copy_rows(conn: Connection, rows: list[Row]) -> None:
    await conn.copy_records_to_table(SCRATCH_TABLE, records=rows, columns=COLUMNS)


async def http_append(conn: http.Connection, payload: bytes) -> None:
    status, answer = await conn.post("/v1/events", payload)
    if status != 201:
        raise BenchError(f"POST /v1/events answered {status}: {answer.decode(errors='replace')}")


# -- driving --------------------------------------------------------------------


async def drive(
    shards: Sequence[Sequence[T]],
    session: Callable[[], AbstractAsyncContextManager[S]],
    call: Callable[[S, T], Awaitable[None]],
    events_per_call: int = 1,
    watch: Watch | None = None,
) -> Run:
    """Run one worker per shard, each in its own session (a pooled connection,
    an HTTP client), all starting together; time each call and the whole."""
    watch = watch or Watch()
    barrier = asyncio.Barrier(len(shards) + 1)

    async def worker(items: Sequence[T]) -> list[float]:
        latencies: list[float] = []
        async with session() as opened:
            await barrier.wait()
            for item in items:
                began = perf_counter()
                await call(opened, item)
                latencies.append(perf_counter() - began)
        return latencies

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(worker(items)) for items in shards]
            async with asyncio.timeout(START_TIMEOUT_S):
                await barrier.wait()
            cpu = Cpu.now(watch)
            started = perf_counter()
            done, _pending = await asyncio.wait(tasks)
            seconds = perf_counter() - started
            cpu = Cpu.now(watch, bench=time.process_time()) - cpu
    except ExceptionGroup as failed:
        # The first worker's failure says what went wrong; the rest were cancelled.
        raise failed.exceptions[0] from None
    latencies = tuple(latency for task in done for latency in task.result())
    return Run(len(latencies) * events_per_call, seconds, latencies, cpu)
