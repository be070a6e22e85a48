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
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version
from pathlib import Path
from time import perf_counter
from typing import IO, Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

from bench import http, lag
from bench import rebuild as rebuild_bench
from bench.workloads import (
    CREATE_SCRATCH,
    EMPTY,
    BenchError,
    Run,
    Watch,
    batch_body,
    children_of,
    copy_rows,
    drive,
    http_append,
    raw_insert,
    rows_of,
    single_bodies,
    single_rows,
    store_append,
)
from ledger.projections import projector
from ledger.projections.registry import PROJECTIONS
from ledger.scenario import Scenario
from ledger.store.database import Pool, create_pool, embedded_url
from ledger.store.migrate import upgrade
from ledger.tenants.keys import ensure_tenant

DEFAULT_SERVER_URL: Final = "postgresql://postgres@127.0.0.1:5432/postgres"
ROOT: Final = Path(__file__).resolve().parent.parent
RESULTS: Final = ROOT / "bench" / "results.json"
LOOPBACK: Final = "127.0.0.1"
TENANT: Final = "bench"
CONCURRENCY: Final = 16
READS: Final = 300
READ_KINDS: Final = ("balance", "relationship", "timeline", "violations")
# What `ledger projections rebuild` prints when done.
REBUILT: Final = re.compile(
    r"rebuilt \S+ for \S+: (?P<events>[\d,]+) events in (?P<seconds>[\d.]+) s"
)
PARTS: Final = ("append", "projections")
REBUILD_TENANT: Final = "rebuild"
LEVELS: Final = (1, 16, 64)
BATCH_SIZES: Final = (100, 1000)
BATCH_STREAMS: Final = 100
WARMUP_PER_WORKER: Final = 8
CONNECT_TIMEOUT_S: Final = 5.0
SUBPROCESS_TIMEOUT_S: Final = 120.0
SERVER_START_TIMEOUT_S: Final = 60.0
SERVER_STOP_TIMEOUT_S: Final = 15.0
SETTLE_TIMEOUT_S: Final = 300.0
SETTLE_POLL_S: Final = 0.05
CPU_PARTS: Final = ("bench", "server", "projector", "postgres", "rest", "machine")
MIN_CPU_WINDOW_S: Final = 1.0


@dataclass(frozen=True)
class Sizes:
    """How much each benchmark does; ``singles`` (events per concurrency level)
    is split over rounds and clients, a lone client doing an eighth of it."""

    singles: int
    rounds: int
    batches: int
    rebuild_events: int
    rebuild_people: int
    rebuild_label: str
    small_events: int
    small_label: str
    load_rate: int

    def per_worker(self, clients: int) -> int:
        events = self.singles if clients > 1 else self.singles // 8
        return max(1, events // (self.rounds * clients))


QUICK: Final = Sizes(
    singles=2048,
    rounds=2,
    batches=4,
    rebuild_events=20_000,
    rebuild_people=2_000,
    rebuild_label="20k",
    small_events=2_000,
    small_label="2k",
    load_rate=200,
)
FULL: Final = Sizes(
    singles=16384,
    rounds=4,
    batches=20,
    rebuild_events=1_000_000,
    rebuild_people=20_000,
    rebuild_label="1m",
    small_events=100_000,
    small_label="100k",
    load_rate=1000,
)


def main(argv: Sequence[str] | None = None) -> int:
    # httpx would log every health probe of a starting server; the numbers are the output.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts (well under 2 min)")
    parser.add_argument(
        "--only",
        choices=PARTS,
        help="run one part: the append paths, or the projections (rebuild, lag, reads)",
    )
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
        results = run(bench(sizes, loop=loop, parts=(args.only,) if args.only else PARTS))
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


async def bench(sizes: Sizes, *, loop: str, parts: Sequence[str]) -> dict[str, float]:
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
        pool = await create_pool(url, size=max(LEVELS))
        try:
            async with pool.acquire() as conn:
                tenant_id = await ensure_tenant(conn, TENANT)
                await conn.execute(CREATE_SCRATCH)
            results = (
                await measure(sizes, url, name, pool, tenant_id, key) if "append" in parts else {}
            )
        finally:
            await pool.close()
        if "projections" in parts:
            during_load = results.get("server_rss_mb_peak", 0.0)
            results.update(await projections(sizes, url))
            results["server_rss_mb_peak"] = max(during_load, results["server_rss_mb_rebuild"])
        return results
    finally:
        await drop_database(server_url, name)


async def measure(
    sizes: Sizes, url: str, database: str, pool: Pool, tenant_id: int, key: str
) -> dict[str, float]:
    watch = Watch(database)
    versions: dict[str, int] = {}

    async def store_singles(prefix: str, count: int, first: int) -> Run:
        shards = single_bodies(prefix, CONCURRENCY, count, first)
        return await drive(shards, pool.acquire, store_append(tenant_id), watch=watch)

    async def raw_singles(clients: int, count: int) -> Run:
        shards = single_rows(tenant_id, f"raw-c{clients}", clients, count, versions)
        return await drive(shards, pool.acquire, raw_insert, watch=watch)

    async def copy_batches(size: int, count: int) -> Run:
        shards = [
            [
                rows_of(
                    tenant_id, batch_body(f"copy{size}", size, BATCH_STREAMS, b * size), versions
                )
                for b in range(count)
            ]
        ]
        return await drive(shards, pool.acquire, copy_rows, size, watch)

    progress("warming up")
    await store_singles("warm", WARMUP_PER_WORKER, 0)
    await raw_singles(CONCURRENCY, WARMUP_PER_WORKER)
    store, raw = await paired(
        f"store append vs raw INSERT, c{CONCURRENCY}",
        sizes.rounds,
        lambda r: raw_singles(CONCURRENCY, sizes.per_worker(CONCURRENCY)),
        lambda r: store_singles("store", sizes.per_worker(CONCURRENCY), r * sizes.singles),
    )
    results = {
        "nproc": float(len(os.sched_getaffinity(0))),
        **figures(f"append_store_c{CONCURRENCY}", store),
        **figures(f"append_store_raw_c{CONCURRENCY}", raw),
        f"append_store_c{CONCURRENCY}_ratio": ratio(store, raw),
    }
    rows = [(f"store append, 1 event/call, c{CONCURRENCY}", store, "raw INSERT", raw)]

    def record(name: str, subject: Run, base_name: str, base: Run, ratio_of: str = "") -> None:
        """Both runs' figures, and the ratio as ``{ratio_of or name}_ratio``."""
        results.update(figures(name, subject))
        results.update(figures(base_name, base))
        results[f"{ratio_of or name}_ratio"] = ratio(subject, base)

    async with Serving(url, key) as server:
        server_watch = Watch(database, server.pid)

        async def http_singles(clients: int, count: int, first: int) -> Run:
            shards = single_bodies(f"http-c{clients}", clients, count, first)
            return await drive(shards, server.connect, http_append, watch=server_watch)

        async def http_batches(size: int, count: int, first: int) -> Run:
            shards = [
                [
                    batch_body(f"http{size}", size, BATCH_STREAMS, first + b * size)
                    for b in range(count)
                ]
            ]
            return await drive(shards, server.connect, http_append, size, server_watch)

        async def raw_round(clients: int, r: int) -> Run:
            return await raw_singles(clients, sizes.per_worker(clients))

        async def http_round(clients: int, r: int) -> Run:
            count = sizes.per_worker(clients)
            return await http_singles(clients, count, WARMUP_PER_WORKER + r * count)

        def batches_per_round(size: int) -> int:
            return sizes.batches * (BATCH_SIZES[-1] // size) // sizes.rounds

        async def copy_round(size: int, r: int) -> Run:
            return await copy_batches(size, batches_per_round(size))

        async def batch_round(size: int, r: int) -> Run:
            count = batches_per_round(size)
            return await http_batches(size, count, r * count * size)

        async def settle() -> None:
            await caught_up(pool, TENANT)

        await http_singles(CONCURRENCY, WARMUP_PER_WORKER, 0)
        for clients in LEVELS:
            http, base = await paired(
                f"HTTP append vs raw INSERT, c{clients}",
                sizes.rounds,
                partial(raw_round, clients),
                partial(http_round, clients),
                settle,
            )
            record(f"append_http_c{clients}", http, f"append_raw_c{clients}", base)
            rows.append((f"HTTP append, 1 event/request, c{clients}", http, "raw INSERT", base))
        for size in BATCH_SIZES:
            batch, copy = await paired(
                f"HTTP batches of {size} vs COPY",
                sizes.rounds,
                partial(copy_round, size),
                partial(batch_round, size),
                settle,
            )
            record(f"batch_http_{size}", batch, f"batch_copy_{size}", copy, f"batch_{size}")
            rows.append((f"HTTP append, {size} events/request", batch, f"COPY {size} rows", copy))
        results["server_rss_mb_peak"] = server.peak_rss_mb()
        results["projector_rss_mb_peak"] = server.projector_rss_mb()
    async with Serving(url, key, floor=True) as floor:
        floor_watch = Watch(database, floor.pid)
        clients = LEVELS[-1]

        async def floor_round(r: int) -> Run:
            count = sizes.per_worker(clients)
            shards = single_bodies("floor", clients, count, r * count)
            return await drive(shards, floor.connect, http_append, watch=floor_watch)

        await floor_round(0)  # warm-up, untimed (the floor stores nothing)
        empty, base = await paired(
            f"HTTP floor (an empty Litestar route) vs raw INSERT, c{clients}",
            sizes.rounds,
            partial(raw_round, clients),
            floor_round,
        )
    record(f"append_floor_c{clients}", empty, f"append_floor_raw_c{clients}", base)
    rows.append((f"HTTP floor: empty route, c{clients}", empty, "raw INSERT", base))
    # The names issue 5 reads: the figures at 64 clients and batches of 1,000.
    results["batch_copy_eps"] = results[f"batch_copy_{BATCH_SIZES[-1]}_eps"]
    results["batch_ratio"] = results[f"batch_{BATCH_SIZES[-1]}_ratio"]
    print_table(rows)
    return results


async def projections(sizes: Sizes, url: str) -> dict[str, float]:
    """Reads at two sizes of one log; the rebuild beside a raw scan; a rebuild
    under sustained append load with the live lag; peak memory throughout."""
    n, small, people = sizes.rebuild_events, sizes.small_events, sizes.rebuild_people
    tenant_id, key = await rebuild_bench.create_tenant(url, REBUILD_TENANT)
    generated = Scenario(people=people, seed=7).events(n)
    versions: dict[str, int] = {}
    progress(f"loading the first {small:,} of {n:,} generated events (COPY), {people:,} people")
    await rebuild_bench.load(url, tenant_id, generated, small, versions)
    progress(f"rebuilds at {small:,} events (network in its own process, for its peak RSS)")
    rebuilt_small = await asyncio.to_thread(lag.run_rebuild, REBUILD_COMMAND, ledger_env(url))
    await rebuild_bench.rebuild_once(url, tenant_id, "violations")
    progress(f"balance, relationship, timeline and violations reads at {small:,} events")
    async with Serving(url, key) as server:
        reads_small = await rebuild_bench.read_latencies(server.connect, people, READS)
    progress(f"loading the other {n - small:,} events (COPY)")
    await rebuild_bench.load(url, tenant_id, generated, n - small, versions)
    progress("raw scan of the log")
    scanned, scan_s = await rebuild_bench.scan(url, tenant_id)
    progress("the rebuild's read and fold alone (nothing written)")
    fold_count, fold_s = await rebuild_bench.fold_only(url, tenant_id)
    progress("rebuild (fold, write, catch up, swap)")
    folded, rebuild_s = await rebuild_bench.rebuild_once(url, tenant_id)
    progress("violations rebuild (judge in valid-time order, write, catch up, swap)")
    judged, judge_s = await rebuild_bench.rebuild_once(url, tenant_id, "violations")
    progress(f"reads at {n:,} events")
    async with Serving(url, key) as server:
        reads = await rebuild_bench.read_latencies(server.connect, people, READS)
    scan_eps, rebuild_eps, violations_eps = scanned / scan_s, folded / rebuild_s, judged / judge_s
    results: dict[str, float] = {
        "rebuild_events": float(n),
        "rebuild_eps": round(rebuild_eps, 1),
        "scan_eps": round(scan_eps, 1),
        "rebuild_ratio": round(rebuild_eps / scan_eps, 3),
        "fold_eps": round(fold_count / fold_s, 1),
        "fold_ratio": round(fold_count / fold_s / scan_eps, 3),
        "violations_rebuild_eps": round(violations_eps, 1),
        "violations_rebuild_ratio": round(violations_eps / scan_eps, 3),
    }
    for label, found in ((sizes.small_label, reads_small), (sizes.rebuild_label, reads)):
        for name, value in found.items():
            results[f"{name.removesuffix('_ms')}_ms_{label}"] = round(value, 3)
    for what in READ_KINDS:
        growth = reads[f"{what}_p99_ms"] / max(reads_small[f"{what}_p99_ms"], 1e-9)
        results[f"{what}_p99_growth"] = round(growth, 2)
    results[f"rebuild_rss_mb_{sizes.small_label}"] = rebuilt_small.peak_rss_mb
    results.update(await rebuild_under_load(sizes, url, tenant_id, key))
    results[f"rebuild_rss_mb_{sizes.rebuild_label}"] = results["rebuild_rss_mb_peak"]
    results["bench_rss_mb_peak"] = lag.own_peak_rss_mb()

    print(f"\nprojections at {n:,} events ({people:,} people):")
    print(f"  raw scan of the log      {scan_eps:>12,.0f} events/s")
    print(
        f"  read and fold, no writes {results['fold_eps']:>12,.0f} events/s   "
        f"ratio {results['fold_ratio']:.3f}"
    )
    print(
        f"  rebuild                  {rebuild_eps:>12,.0f} events/s   "
        f"ratio {results['rebuild_ratio']:.3f}"
    )
    print(
        f"  violations rebuild       {violations_eps:>12,.0f} events/s   "
        f"ratio {results['violations_rebuild_ratio']:.3f}"
    )
    labels = f"{sizes.small_label:>18} {sizes.rebuild_label:>18}"
    print(f"\nreads, ms (p50 / p99)      {labels}   p99 growth")
    for what in READ_KINDS:
        cells = [
            f"{found[what + '_p50_ms']:7.2f} / {found[what + '_p99_ms']:7.2f}"
            for found in (reads_small, reads)
        ]
        print(
            f"  {what:<24} {cells[0]:>18} {cells[1]:>18}   {results[what + '_p99_growth']:>6.2f}x"
        )
    print(
        f"\nrebuild under load: {results['rebuild_under_load_eps']:,.0f} events/s while "
        f"{results['load_offered_eps']:,.0f} events/s were appended; live projection lag "
        f"p50 {results['lag_p50_s']:.2f} s, p99 {results['lag_p99_s']:.2f} s, "
        f"max {results['lag_max_s']:.2f} s"
    )
    print(
        f"peak RSS: server {results['server_rss_mb_rebuild']:.0f} MiB, its projector "
        f"{results['projector_rss_mb_rebuild']:.0f} MiB; rebuild process "
        f"{rebuilt_small.peak_rss_mb:.0f} MiB at {small:,} events, "
        f"{results['rebuild_rss_mb_peak']:.0f} MiB at {n:,}; bench process (in-process "
        f"rebuilds) {results['bench_rss_mb_peak']:.0f} MiB"
    )
    return results


async def rebuild_under_load(sizes: Sizes, url: str, tenant_id: int, key: str) -> dict[str, float]:
    """``ledger projections rebuild network`` in its own process while the server
    takes a steady stream of appends and its live projector keeps up."""
    async with Serving(url, key) as server:
        progress(
            f"rebuild (its own process) under {sizes.load_rate:,} appended events/s, "
            "watching the live projection's lag"
        )
        rebuild = asyncio.get_running_loop().run_in_executor(
            None, lag.run_rebuild, REBUILD_COMMAND, ledger_env(url)
        )
        behind = await lag.under_load(url, tenant_id, server.connect, rebuild, sizes.load_rate)
        rebuilt = rebuild.result()
        server_rss = server.peak_rss_mb()
        projector_rss = server.projector_rss_mb()
    found = REBUILT.search(rebuilt.output)
    if found is None:
        raise BenchError(f"the rebuild did not say what it did:\n{rebuilt.output[-2000:]}")
    folded = int(found["events"].replace(",", ""))
    return {
        "rebuild_under_load_eps": round(folded / float(found["seconds"]), 1),
        "load_offered_eps": float(sizes.load_rate),
        "load_appended_eps": round(behind.appended / behind.seconds, 1),
        "lag_p50_s": round(behind.percentile_s(50), 3),
        "lag_p99_s": round(behind.percentile_s(99), 3),
        "lag_max_s": round(behind.percentile_s(100), 3),
        "rebuild_rss_mb_peak": rebuilt.peak_rss_mb,
        "server_rss_mb_rebuild": server_rss,
        "projector_rss_mb_rebuild": projector_rss,
    }


async def paired(
    what: str,
    rounds: int,
    baseline: Callable[[int], Awaitable[Run]],
    subject: Callable[[int], Awaitable[Run]],
    settle: Callable[[], Awaitable[None]] | None = None,
) -> tuple[Run, Run]:
    """Run baseline and subject in alternating rounds (AB BA AB ...), so that
    drift and warm caches favour neither; return (subject, baseline) totals.
    ``settle`` runs before every round, off the clock."""
    base = subj = EMPTY
    for r in range(rounds):
        progress(f"{what}: round {r + 1}/{rounds}")
        order = (baseline, subject) if r % 2 == 0 else (subject, baseline)
        for timed in order:
            if settle is not None:
                await settle()
            run = await timed(r)
            if timed is baseline:
                base += run
            else:
                subj += run
    return subj, base


async def caught_up(pool: Pool, tenant: str) -> None:
    """Wait until the server's projector has applied the tenant's whole log, so
    that the projection work one round caused is not done on the next round's
    clock (the projector runs in its own process, beside whatever is timed)."""
    async with asyncio.timeout(SETTLE_TIMEOUT_S), pool.acquire() as conn:
        while True:
            behind = [
                state.lag_events
                for name in PROJECTIONS
                for state in await projector.status(conn, tenant, name)
            ]
            if not any(behind):
                return
            await asyncio.sleep(SETTLE_POLL_S)


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
    served = part not in ("server", "projector") or run.cpu.server > 0
    return run.seconds >= MIN_CPU_WINDOW_S and served


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
        "(per request or per batch)"
    )
    print()
    print(f"{'cores busy while timed':<36}" + "".join(f" {part:>8}" for part in CPU_PARTS))
    for label, subject, base_label, base in rows:
        for name, run in ((label, subject), (f"  baseline: {base_label}", base)):
            shares = [f"{run.cores(part):.2f}" if counted(run, part) else "-" for part in CPU_PARTS]
            print(f"{name:<36}" + "".join(f" {share:>8}" for share in shares))
    print(
        "bench = this process; server = `ledger serve` (on the floor's row, the floor's "
        "process); projector = its projector process; "
        "postgres = the backends of the bench database;\nrest = everything else on the machine "
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


REBUILD_COMMAND: Final = ledger_command(
    "projections", "rebuild", "network", "--tenant", REBUILD_TENANT
)


def ledger_env(url: str) -> dict[str, str]:
    # No per-key rate limit: the benchmark's one key would be throttled, not measured.
    return {
        **os.environ,
        "LEDGER_DATABASE_URL": url,
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
    """``ledger serve`` (or, with ``floor``, :mod:`bench.floor`) on a free
    loopback port, up until /health answers 200."""

    def __init__(self, url: str, key: str, *, floor: bool = False) -> None:
        self.url = url
        self.key = key
        self.port = free_port()
        self.base_url = f"http://{LOOPBACK}:{self.port}"
        self.log = log_file()
        self.process: asyncio.subprocess.Process | None = None
        where = ("--host", LOOPBACK, "--port", str(self.port))
        self.name = "python -m bench.floor" if floor else "ledger serve"
        self.command = (
            [sys.executable, "-m", "bench.floor", *where]
            if floor
            else ledger_command("serve", *where)
        )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def connect(self) -> AbstractAsyncContextManager[http.Connection]:
        """A keep-alive connection with the bench's key (one per load worker)."""
        return http.connection(LOOPBACK, self.port, self.key)

    def peak_rss_mb(self) -> float:
        """The server process's peak resident set so far (VmHWM), in MiB."""
        return lag.peak_rss_mb(self.pid)

    def projector_rss_mb(self) -> float:
        """The same for the server's projector process (0 if there is none)."""
        return max((lag.peak_rss_mb(child) for child in children_of(self.pid)), default=0.0)

    async def __aenter__(self) -> Serving:
        progress(f"starting `{self.name}` on {self.base_url}")
        self.process = await asyncio.create_subprocess_exec(
            *self.command,
            cwd=ROOT,
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
                    raise BenchError(f"`{self.name}` exited early:\n{self._log_tail()}")
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
