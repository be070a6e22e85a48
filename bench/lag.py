"""A rebuild under sustained append load: its rate, the live lag, and memory.

While ``ledger projections rebuild`` runs as its own process, one client keeps
appending to the running server at a steady offered rate, and a watcher reads
the live projection's checkpoint. The lag of an acknowledged append is the
time from its answer until the live projection has applied it. The rebuild
process's peak resident set comes from the kernel's accounting of the child
(``wait4``), the server's from ``VmHWM``: both show whether memory follows the
log's size (it must not: a rebuild streams).
"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec

from bench import http
from bench.workloads import BenchError, batch_body, nearest_rank
from ledger.projections.projector import state_of
from ledger.store.cursor import Cursor
from ledger.store.database import connect

BATCH: Final = 10
WATCH_EVERY_S: Final = 0.05
REBUILD_TIMEOUT_S: Final = 1800.0
RSS_EVERY_S: Final = 0.1


@dataclass(frozen=True)
class Rebuilt:
    seconds: float
    peak_rss_mb: float
    output: str


@dataclass(frozen=True)
class Lag:
    """Appends acknowledged during the rebuild and how long each took to be projected."""

    appended: int
    seconds: float
    lags: tuple[float, ...]

    def percentile_s(self, q: float) -> float:
        return nearest_rank(self.lags, q)


def run_rebuild(command: Sequence[str], env: dict[str, str]) -> Rebuilt:
    """Run the rebuild command to its end; its wall time and peak RSS.

    The peak is the child's own ``VmHWM``, read while it runs (it only grows):
    the kernel's ``ru_maxrss`` for a child also counts the pages it shared
    with this process between fork and exec, which here were the bench's own.
    """
    started = time.perf_counter()
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(list(command), env=env, stdout=output, stderr=subprocess.STDOUT)
        peak = 0.0
        deadline = started + REBUILD_TIMEOUT_S
        while process.poll() is None:
            if time.perf_counter() > deadline:
                process.kill()
                process.wait()
                raise BenchError(f"the rebuild took over {REBUILD_TIMEOUT_S:.0f} s")
            peak = max(peak, peak_rss_mb(process.pid))
            time.sleep(RSS_EVERY_S)
        seconds = time.perf_counter() - started
        output.seek(0)
        said = output.read().decode(errors="replace")
    if process.returncode != 0:
        raise BenchError(f"the rebuild failed ({process.returncode}):\n{said[-2000:]}")
    return Rebuilt(seconds, peak, said)


def peak_rss_mb(pid: int) -> float:
    """A live process's peak resident set (``VmHWM`` in /proc), in MiB; 0 if unknown."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def under_load(
    url: str,
    tenant_id: int,
    connect_server: http.Connect,
    rebuild: asyncio.Future[Rebuilt],
    rate: float,
) -> Lag:
    """Append ``rate`` events/s (batches of ten) until ``rebuild`` is done, and
    measure each acknowledged batch's lag behind the live projection."""
    acked: list[tuple[float, Cursor]] = []
    lags: list[float] = []
    stop = asyncio.Event()

    async def append() -> None:
        interval = BATCH / rate
        async with connect_server() as conn:
            n = 0
            next_at = time.perf_counter()
            while not stop.is_set():
                payload = batch_body("lag", BATCH, BATCH, first=n * BATCH)
                status, answer = await conn.post("/v1/events", payload)
                if status != 201:
                    raise BenchError(f"POST /v1/events answered {status}: {answer[:300]!r}")
                acked.append((time.perf_counter(), Cursor.decode(_cursor_of(answer))))
                n += 1
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    async def watch() -> None:
        conn = await connect(url)
        try:
            seen = 0
            while not stop.is_set() or seen < len(acked):
                checkpoint = (await state_of(conn, tenant_id)).checkpoint
                now = time.perf_counter()
                while seen < len(acked) and acked[seen][1] <= checkpoint:
                    lags.append(now - acked[seen][0])
                    seen += 1
                await asyncio.sleep(WATCH_EVERY_S)
        finally:
            await conn.close()

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        group.create_task(append())
        watcher = group.create_task(watch())
        await asyncio.wait([rebuild])
        stop.set()
        async with asyncio.timeout(120):
            await watcher
    rebuild.result()  # raise the rebuild's failure, if any
    return Lag(len(acked) * BATCH, time.perf_counter() - started, tuple(lags))


def _cursor_of(answer: bytes) -> str:
    cursor: str = msgspec.json.decode(answer)["cursor"]
    return cursor


def own_peak_rss_mb() -> float:
    """This process's peak RSS (the in-process rebuilds and reads), in MiB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
