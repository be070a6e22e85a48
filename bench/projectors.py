"""Each projection's live catch-up and rebuild, beside a raw scan of the same log.

``python -m bench.projectors [EVENTS]`` (default 30,000): a scratch database on
the bench's PostgreSQL (``LEDGER_BENCH_DATABASE_URL``, else
``LEDGER_DATABASE_URL``, else the local server), the scenario generator's
history appended through the store in batches of 1,000 (back-filled dates
included, so late arrivals are re-judged as in life), then for each projection:

- live: the projector catching up from nothing, 1,000 events per batch, as a
  server that was down would;
- rebuild: a fresh generation folded from the log and swapped in.

Prints events/s for each beside the raw scan, the floor of any fold.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from typing import Final

import asyncpg
import msgspec

from ledger.events.envelope import decode_batch, prepare
from ledger.projections.projector import EVENTS_AFTER, catch_up, rebuild
from ledger.projections.registry import PROJECTIONS
from ledger.scenario import Scenario
from ledger.store.append import append
from ledger.store.database import Connection, connect
from ledger.store.migrate import upgrade
from ledger.tenants.keys import ensure_tenant

DEFAULT_EVENTS: Final = 30_000
SERVER: Final = "postgresql://postgres@127.0.0.1:5432/postgres"


async def scan(conn: Connection, tenant_id: int) -> int:
    after, count = (0, 0), 0
    while rows := await conn.fetch(EVENTS_AFTER, tenant_id, str(after[0]), after[1], 1000):
        count += len(rows)
        after = (rows[-1]["tx_id"], rows[-1]["position"])
    return count


async def run(events: int) -> None:
    server = os.environ.get("LEDGER_BENCH_DATABASE_URL") or os.environ.get(
        "LEDGER_DATABASE_URL", SERVER
    )
    name = f"ledger_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = server.rsplit("/", 1)[0] + f"/{name}"
    try:
        await asyncio.to_thread(upgrade, url)
        conn = await connect(url)
        tenant_id = await ensure_tenant(conn, "bench")
        history = [g.wire for g in Scenario(people=1000, seed=1).events(events)]
        started = time.perf_counter()
        for i in range(0, events, 1000):
            batch = {"events": history[i : i + 1000]}
            await append(conn, tenant_id, prepare(decode_batch(msgspec.json.encode(batch))))
        print(f"appended {events:,} events in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        scanned = await scan(conn, tenant_id)
        scan_rate = scanned / (time.perf_counter() - started)
        print(f"{'raw scan of the log':<28} {scan_rate:>10,.0f} events/s")
        for projection in PROJECTIONS.values():
            started, applied = time.perf_counter(), 0
            while applied < events:
                done = await catch_up(conn, tenant_id, projection=projection)
                if not done:  # the commit horizon may hold the tail back a moment
                    await asyncio.sleep(0.05)
                applied += done
            live = applied / (time.perf_counter() - started)
            started = time.perf_counter()
            rebuilt = await rebuild(conn, tenant_id, projection=projection)
            rate = rebuilt / (time.perf_counter() - started)
            print(
                f"{projection.name + ' live catch-up':<28} {live:>10,.0f} events/s"
                f"   ratio to scan {live / scan_rate:.3f}"
            )
            print(
                f"{projection.name + ' rebuild':<28} {rate:>10,.0f} events/s"
                f"   ratio to scan {rate / scan_rate:.3f}"
            )
        await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(run(int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_EVENTS))
