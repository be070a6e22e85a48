"""``python -m bench [--quick]``: the ledger's append paths beside raw asyncpg.

A scratch database ``ledger_bench_<random>`` is created on the server named by
``LEDGER_BENCH_DATABASE_URL`` (else ``LEDGER_DATABASE_URL``, else
postgresql://postgres@127.0.0.1:5432/postgres; an embedded PostgreSQL in a
temporary folder when none of those answers), migrated, measured, and dropped.
The figures are printed as a table and written to ``bench/results.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import logging
import os
import platform
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from time import perf_counter
from typing import IO, Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

from bench import rebuild as rebuild_bench
from bench.workloads import (
    CREATE_SCRATCH,
    EMPTY,
    BenchError,
    Run,
    Watch,
    batch_body,
    copy_rows,
    drive,
    http_append,
    raw_insert,
    rows_of,
    single_bodies,
    single_rows,
    store_append,
)
from ledger.store.database import Pool, create_pool, embedded_url
from ledger.store.migrate import upgrade
from ledger.tenants.keys import ensure_tenant

DEFAULT_SERVER_URL: Final = "postgresql://postgres@127.0.0.1:5432/postgres"
RESULTS: Final = Path(__file__).resolve().parent / "results.json"
LOOPBACK: Final = "127.0.0.1"
TENANT: Final = "bench"
CONCURRENCY: Final = 16
BATCH_SIZE: Final = 1000
BATCH_STREAMS: Final = 100
WARMUP_PER_WORKER: Final = 8
CONNECT_TIMEOUT_S: Final = 5.0
SUBPROCESS_TIMEOUT_S: Final = 120.0
SERVER_START_TIMEOUT_S: Final = 60.0
SERVER_STOP_TIMEOUT_S: Final = 15.0
CPU_PARTS: Final = ("bench", "server", "postgres", "rest", "machine")
MIN_CPU_WINDOW_S: Final = 1.0


@dataclass(frozen=True)
class Sizes:
    """How much each benchmark does; ``singles`` is split over rounds and workers."""

    singles: int
    rounds: int
    batches: int
    rebuild_events: int
    rebuild_people: int
    rebuild_label: str

    @property
    def per_worker(self) -> int:
        return max(1, self.singles // (self.rounds * CONCURRENCY))


QUICK: Final = Sizes(
    singles=2048,
    rounds=2,
    batches=5,
    rebuild_events=20_000,
    rebuild_people=2_000,
    rebuild_label="20k",
)
FULL: Final = Sizes(
    singles=20480,
    rounds=4,
    batches=20,
    rebuild_events=1_000_000,
    rebuild_people=20_000,
    rebuild_label="1m",
)


def main(argv: Sequence[str] | None = None) -> int:
    # The in-process reads would log every request; the numbers are the output.
    for noisy in ("ledger.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts (well under 2 min)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    began = perf_counter()
    try:
        import uvloop  # the event loop uvicorn picks for `ledger serve`
    except ImportError:
        run, loop = asyncio.run, "asyncio"
    else:
        run, loop = uvloop.run, f"uvloop {version('uvloop')}"
    try:
        results = run(bench(sizes, loop=loop))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    results["quick"] = 1 if args.quick else 0
    results["elapsed_s"] = round(perf_counter() - began, 1)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    shown = RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS
    print(f"\nwrote {shown} ({results['elapsed_s']:.0f} s in all)")
    return 0


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- the run --------------------------------------------------------------------


async def bench(sizes: Sizes, *, loop: str) -> dict[str, float]:
    server_url, source = await find_server()
    name = f"ledger_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_url, timeout=CONNECT_TIMEOUT_S)
    try:
        pg_version: str = await admin.fetchval("SHOW server_version")
        durability = await admin.fetchval(
            "SELECT 'fsync ' || current_setting('fsync') || ', synchronous_commit '"
            " || current_setting('synchronous_commit')"
        )
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = with_database(server_url, name)
    print(header(loop, f"{pg_version} ({durability})"))
    print(f"database: {source} {without_password(server_url)}, scratch database {name}")
    try:
        progress("migrating the scratch database")
        await asyncio.to_thread(upgrade, url)
        key = await create_api_key(url)
        pool = await create_pool(url, size=CONCURRENCY)
        try:
            async with pool.acquire() as conn:
                tenant_id = await ensure_tenant(conn, TENANT)
                await conn.execute(CREATE_SCRATCH)
            results = await measure(sizes, url, name, pool, tenant_id, key)
        finally:
            await pool.close()
        results.update(await projections(sizes, url))
        return results
    finally:
        await drop_database(server_url, name)


async def measure(
    sizes: Sizes, url: str, database: str, pool: Pool, tenant_id: int, key: str
) -> dict[str, float]:
    per_worker = sizes.per_worker
    watch = Watch(database)
    raw_versions: dict[str, int] = {}
    copy_versions: dict[str, int] = {}

    async def store_singles(prefix: str, count: int, first: int) -> Run:
        shards = single_bodies(prefix, CONCURRENCY, count, first)
        return await drive(shards, pool.acquire, store_append(tenant_id), watch=watch)

    async def raw_singles(count: int) -> Run:
        shards = single_rows(tenant_id, "raw", CONCURRENCY, count, raw_versions)
        return await drive(shards, pool.acquire, raw_insert, watch=watch)

    async def store_batch(first: int) -> Run:
        shards = [[batch_body("batch", BATCH_SIZE, BATCH_STREAMS, first)]]
        return await drive(shards, pool.acquire, store_append(tenant_id), BATCH_SIZE, watch)

    async def copy_batch(first: int) -> Run:
        payload = batch_body("batch", BATCH_SIZE, BATCH_STREAMS, first)
        shards = [[rows_of(tenant_id, payload, copy_versions)]]
        return await drive(shards, pool.acquire, copy_rows, BATCH_SIZE, watch)

    progress("warming up")
    await store_singles("warm", WARMUP_PER_WORKER, 0)
    await raw_singles(WARMUP_PER_WORKER)

    store, raw = await paired(
        "store append vs raw INSERT",
        sizes.rounds,
        lambda r: raw_singles(per_worker),
        lambda r: store_singles("store", per_worker, r * per_worker),
    )

    await store_batch(0)
    await copy_batch(0)
    batch, copy = await paired(
        "store batch vs COPY",
        sizes.batches,
        lambda b: copy_batch((b + 1) * BATCH_SIZE),
        lambda b: store_batch((b + 1) * BATCH_SIZE),
    )

    async with Serving(url) as server, http_client(server.base_url, key) as client:

        async def http_singles(prefix: str, count: int, first: int) -> Run:
            shards = single_bodies(prefix, CONCURRENCY, count, first)
            return await drive(
                shards, lambda: nullcontext(client), http_append, watch=Watch(database, server.pid)
            )

        await http_singles("warm-http", WARMUP_PER_WORKER, 0)
        http, http_raw = await paired(
            "HTTP append vs raw INSERT",
            sizes.rounds,
            lambda r: raw_singles(per_worker),
            lambda r: http_singles("http", per_worker, r * per_worker),
        )

    results = {
        "nproc": float(len(os.sched_getaffinity(0))),
        "concurrency": float(CONCURRENCY),
        "append_events": float(store.events),
        "batch_size": float(BATCH_SIZE),
        "batch_count": float(sizes.batches),
        **figures("append_store_c16", store),
        **figures("append_raw_c16", raw),
        "append_store_c16_ratio": ratio(store, raw),
        **figures("append_http_c16", http),
        **figures("append_http_raw_c16", http_raw),
        "append_http_c16_ratio": ratio(http, http_raw),
        **figures("batch_store_1000", batch),
        **figures("batch_copy", copy),
        "batch_ratio": ratio(batch, copy),
    }
    print_table(
        [
            (f"store append, 1 event/call, c{CONCURRENCY}", store, "raw INSERT", raw),
            (f"HTTP append, 1 event/request, c{CONCURRENCY}", http, "raw INSERT", http_raw),
            (f"store append, {BATCH_SIZE} events/call", batch, f"COPY {BATCH_SIZE} rows", copy),
        ]
    )
    return results


async def projections(sizes: Sizes, url: str) -> dict[str, float]:
    """Rebuild rate beside a raw scan of the same log, and read latencies, at one size."""
    n, label = sizes.rebuild_events, sizes.rebuild_label
    progress(f"loading {n:,} generated events (COPY) for the rebuild benchmark")
    tenant_id, key, _ = await rebuild_bench.load(url, "rebuild", n, sizes.rebuild_people)
    progress("raw scan of the log")
    scanned, scan_s = await rebuild_bench.scan(url, tenant_id)
    progress("rebuild (fold, write, catch up, swap)")
    folded, rebuild_s = await rebuild_bench.rebuild_once(url, tenant_id)
    progress("violations rebuild (judge in valid-time order, write, catch up, swap)")
    judged, judge_s = await rebuild_bench.rebuild_once(url, tenant_id, "violations")
    progress("balance, relationship, timeline and violations reads")
    reads = await rebuild_bench.read_latencies(url, key, sizes.rebuild_people, 300)
    scan_eps, rebuild_eps = scanned / scan_s, folded / rebuild_s
    violations_eps = judged / judge_s
    print(f"\nprojections at {n:,} events ({sizes.rebuild_people:,} people):")
    print(f"  raw scan of the log      {scan_eps:>12,.0f} events/s")
    share = rebuild_eps / scan_eps
    print(f"  rebuild                  {rebuild_eps:>12,.0f} events/s   ratio {share:.3f}")
    print(
        f"  violations rebuild       {violations_eps:>12,.0f} events/s   "
        f"ratio {violations_eps / scan_eps:.3f}"
    )
    for what in ("balance", "relationship", "timeline", "violations"):
        print(
            f"  {what + ' read':<24} p50 {reads[what + '_p50_ms']:>7.2f} ms   "
            f"p99 {reads[what + '_p99_ms']:>7.2f} ms"
        )
    return {
        "rebuild_events": float(n),
        "rebuild_eps": round(rebuild_eps, 1),
        "scan_eps": round(scan_eps, 1),
        "rebuild_ratio": round(rebuild_eps / scan_eps, 3),
        "violations_rebuild_eps": round(violations_eps, 1),
        "violations_rebuild_ratio": round(violations_eps / scan_eps, 3),
        **{f"{name.replace('_ms', '')}_ms_{label}": round(v, 3) for name, v in reads.items()},
    }


async def paired(
    what: str,
    rounds: int,
    baseline: Callable[[int], Awaitable[Run]],
    subject: Callable[[int], Awaitable[Run]],
) -> tuple[Run, Run]:
    """Run baseline and subject in alternating rounds (AB BA AB ...), so that
    drift and warm caches favour neither; return (subject, baseline) totals."""
    base = subj = EMPTY
    for r in range(rounds):
        progress(f"{what}: round {r + 1}/{rounds}")
        if r % 2 == 0:
            base += await baseline(r)
            subj += await subject(r)
        else:
            subj += await subject(r)
            base += await baseline(r)
    return subj, base


def figures(name: str, run: Run) -> dict[str, float]:
    found = {
        f"{name}_eps": round(run.eps, 1),
        f"{name}_p50_ms": round(run.percentile_ms(50), 3),
        f"{name}_p99_ms": round(run.percentile_ms(99), 3),
    }
    for part in CPU_PARTS:
        if counted(run, part):
            found[f"{name}_{part}_cores"] = round(run.cores(part), 2)
    return found


def counted(run: Run, part: str) -> bool:
    """Whether a CPU share means something: /proc counts in clock ticks (10 ms),
    so a share over a short timed total is mostly rounding."""
    return run.seconds >= MIN_CPU_WINDOW_S and (part != "server" or run.cpu.server > 0)


def ratio(subject: Run, baseline: Run) -> float:
    return round(subject.eps / baseline.eps, 3) if baseline.eps else 0.0


def print_table(rows: list[tuple[str, Run, str, Run]]) -> None:
    cells = "{:>10} {:>8} {:>8}"
    print()
    print(
        f"{'':<36} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8}   {'baseline':<15}"
        f" {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8}   {'ratio':>6}"
    )
    for label, subject, base_label, base in rows:
        print(
            f"{label:<36} "
            + cells.format(f"{subject.eps:,.0f}", *ms(subject))
            + f"   {base_label:<15} "
            + cells.format(f"{base.eps:,.0f}", *ms(base))
            + f"   {ratio(subject, base):>6.3f}"
        )
    print(
        "ratio = ledger events/s / baseline events/s; latencies are per call "
        f"(per request; per batch of {BATCH_SIZE} for the last row)"
    )
    print()
    print(f"{'cores busy while timed':<36}" + "".join(f" {part:>8}" for part in CPU_PARTS))
    for label, subject, base_label, base in rows:
        for name, run in ((label, subject), (f"  baseline: {base_label}", base)):
            shares = [f"{run.cores(part):.2f}" if counted(run, part) else "-" for part in CPU_PARTS]
            print(f"{name:<36}" + "".join(f" {share:>8}" for share in shares))
    print(
        "bench = this process; server = `ledger serve` (its projector included); postgres = "
        "the backends of the bench database;\nrest = everything else on the machine "
        f"(PostgreSQL's WAL writer, the kernel, any neighbour); machine = all {os.cpu_count()} "
        f"cores; '-' where not measured or the timed total is under {MIN_CPU_WINDOW_S:.0f} s"
    )


def ms(run: Run) -> tuple[str, str]:
    return f"{run.percentile_ms(50):.2f}", f"{run.percentile_ms(99):.2f}"


# -- the database ---------------------------------------------------------------


async def find_server() -> tuple[str, str]:
    """The first server that answers, and where its URL came from."""
    candidates = [
        (var, os.environ.get(var)) for var in ("LEDGER_BENCH_DATABASE_URL", "LEDGER_DATABASE_URL")
    ]
    candidates.append(("default", DEFAULT_SERVER_URL))
    for source, candidate in candidates:
        if not candidate:
            continue
        try:
            conn = await asyncpg.connect(candidate, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            progress(f"{source} ({without_password(candidate)}) does not answer: {exc}")
            continue
        await conn.close()
        return candidate, source
    data_dir = tempfile.mkdtemp(prefix="ledger-bench-")
    # Registered before the embedded server's own exit hook, so it runs after it.
    atexit.register(shutil.rmtree, data_dir, ignore_errors=True)
    progress(f"starting an embedded PostgreSQL in {data_dir}")
    return await asyncio.to_thread(embedded_url, Path(data_dir)), "embedded"


async def drop_database(server_url: str, name: str) -> None:
    admin = await asyncpg.connect(server_url, timeout=CONNECT_TIMEOUT_S)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    progress(f"dropped {name}")


def with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


def without_password(url: str) -> str:
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


# -- the HTTP server ------------------------------------------------------------


def ledger_command(*args: str) -> list[str]:
    """``ledger ARGS`` as this interpreter runs it (the venv's ``ledger`` script)."""
    return [sys.executable, "-m", "ledger.cli", *args]


def ledger_env(url: str) -> dict[str, str]:
    # No per-key rate limit: the benchmark's one key would be throttled, not measured.
    return {
        **os.environ,
        "LEDGER_DATABASE_URL": url,
        "LEDGER_DB_POOL_SIZE": str(CONCURRENCY),
        "LEDGER_RATE_LIMIT_PER_SECOND": "0",
    }


async def create_api_key(url: str) -> str:
    """``ledger keys create --tenant bench``: the key is alone on the last line."""
    process = await asyncio.create_subprocess_exec(
        *ledger_command("keys", "create", "--tenant", TENANT),
        env=ledger_env(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(SUBPROCESS_TIMEOUT_S):
        out, err = await process.communicate()
    lines = out.decode().strip().splitlines()
    if process.returncode != 0 or not lines:
        raise BenchError(f"`ledger keys create` failed ({process.returncode}): {err.decode()}")
    return lines[-1].strip()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def log_file() -> IO[bytes]:
    return tempfile.TemporaryFile(prefix="ledger-bench-serve-")


class Serving:
    """``ledger serve`` on a free loopback port, up until /health answers 200."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.port = free_port()
        self.base_url = f"http://{LOOPBACK}:{self.port}"
        self.log = log_file()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def __aenter__(self) -> Serving:
        progress(f"starting `ledger serve` on {self.base_url}")
        self.process = await asyncio.create_subprocess_exec(
            *ledger_command("serve", "--host", LOOPBACK, "--port", str(self.port)),
            env=ledger_env(self.url),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(SERVER_START_TIMEOUT_S):
                await self._healthy()
        except BaseException:
            await self._stop()
            raise
        return self

    async def _healthy(self) -> None:
        assert self.process is not None
        async with httpx.AsyncClient(base_url=self.base_url, trust_env=False) as client:
            while True:  # bounded by the caller's timeout
                if self.process.returncode is not None:
                    raise BenchError(f"`ledger serve` exited early:\n{self._log_tail()}")
                try:
                    if (await client.get("/health", timeout=2.0)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stop()

    async def _stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                async with asyncio.timeout(SERVER_STOP_TIMEOUT_S):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.log.close()

    def _log_tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]


def http_client(base_url: str, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"authorization": f"Bearer {key}"},
        limits=httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY),
        timeout=30.0,
        trust_env=False,  # loopback only, whatever proxy the environment names
    )


# -- the header -----------------------------------------------------------------


def header(loop: str, pg_version: str) -> str:
    return (
        f"hardware: nproc {len(os.sched_getaffinity(0))}, {cpu_model()}; "
        f"Python {platform.python_version()} ({loop}); PostgreSQL {pg_version}\n"
        f"command: {shlex.join(sys.orig_argv)}"
    )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
