"""Rebuilds without downtime, status, and recovery after a killed server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from ledger.projections import projector
from ledger.projections.projector import rebuild, refold, state_of, status
from ledger.store.append import append
from ledger.store.cursor import Cursor
from ledger.store.database import Pool
from ledger.store.read import horizon
from tests.conftest import Tenant
from tests.samples import event
from tests.test_api_events import post
from tests.test_cli import env_with, free_port, run
from tests.test_projections import _fixed_history, dump, settle
from tests.test_store import new_events

Client = AsyncTestClient[Litestar]


async def test_rebuild_while_reading_and_writing_loses_nothing(
    client: Client, pool: Pool, tenant: Tenant
) -> None:
    history = _fixed_history()
    async with pool.acquire() as conn:
        result, _ = await append(conn, tenant.id, new_events(*history))
        await settle(conn, tenant.id, Cursor.decode(result.cursor))  # p0 is known before reads
    stop = asyncio.Event()
    failures: list[str] = []
    written: list[str] = []

    async def keep_reading() -> None:
        while not stop.is_set():
            response = await client.get("/v1/people/p0/balances", headers=tenant.headers)
            if response.status_code != 200:
                failures.append(response.text)
            await asyncio.sleep(0.005)

    async def keep_writing() -> None:
        for i in range(40):
            sent = event("message.sent", {"from": "p1", "to": "p2", "kind": "reply"}, at=i)
            response = await post(client, tenant, [sent])
            if response.status_code != 201:
                failures.append(response.text)
            written.append(response.json()["cursor"])
            await asyncio.sleep(0.002)

    readers = asyncio.create_task(keep_reading())
    async with pool.acquire() as conn:
        progress: list[tuple[int, int]] = []
        rebuilding = asyncio.create_task(
            rebuild(conn, tenant.id, batch_size=7, progress=lambda d, t: progress.append((d, t)))
        )
        await keep_writing()
        await rebuilding
    stop.set()
    await readers

    assert failures == []
    assert progress[-1][0] == progress[-1][1]  # the bar ended full
    async with pool.acquire() as conn:
        await settle(conn, tenant.id, Cursor.decode(written[-1]))
        state = await state_of(conn, tenant.id)
        assert state.generation == 2
        assert state.events_applied == len(history) + len(written)
        live = await dump(conn, tenant.id, 2)
        assert await dump(conn, tenant.id, 1) == []  # the old generation is gone
        async with conn.transaction():
            await refold(conn, tenant.id, 97, state.checkpoint)
            assert live == await dump(conn, tenant.id, 97)
        [mine] = [s for s in await status(conn, tenant.name)]
        assert mine.lag_events == 0
        assert mine.events_applied == state.events_applied


def test_projections_commands(database_url: str) -> None:
    env = env_with(LEDGER_DATABASE_URL=database_url)
    key = run(env, "keys", "create", "--tenant", "rebuilt-co").stdout.strip().splitlines()[-1]
    del key
    rebuilt = run(env, "projections", "rebuild", "--tenant", "rebuilt-co")
    assert "rebuilt network for rebuilt-co: 0 events" in rebuilt.stdout
    again = run(env, "projections", "rebuild", "violations", "--tenant", "rebuilt-co")
    assert "rebuilt violations for rebuilt-co: 0 events" in again.stdout
    shown = run(env, "projections", "status", "--tenant", "rebuilt-co").stdout
    assert "rebuilt-co" in shown and "network" in shown and "violations" in shown
    missing = run(env, "projections", "rebuild", "--tenant", "nobody-co", check=False)
    assert missing.returncode == 1 and "no tenant named" in missing.stderr
    wrong = run(env, "projections", "rebuild", "balances", check=False)
    assert wrong.returncode == 2 and "invalid choice" in wrong.stderr


async def test_a_killed_server_recovers_to_projections_equal_to_a_rebuild(
    database_url: str, pool: Pool, tenant: Tenant
) -> None:
    """SIGKILL in the middle of a stream of appends; on restart, nothing is half-applied."""
    env = env_with(LEDGER_DATABASE_URL=database_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {tenant.key}"}
    acknowledged: list[str] = []
    enough = threading.Event()

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_healthy() -> None:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            threading.Event().wait(0.05)
        raise AssertionError("server did not come up")

    def appender(until: threading.Event) -> None:
        for i in range(2000):
            if until.is_set():
                return
            one = event("message.sent", {"from": "k", "to": f"r{i % 9}", "kind": "reply"}, at=i)
            try:
                response = httpx.post(f"{base}/v1/events", json={"events": [one]}, headers=headers)
            except httpx.TransportError:
                return
            if response.status_code == 201:
                acknowledged.append(response.json()["cursor"])
                if len(acknowledged) >= 60:
                    enough.set()

    server = start()
    try:
        await asyncio.to_thread(wait_healthy)
        halt = threading.Event()
        writer = threading.Thread(target=appender, args=(halt,))
        writer.start()
        assert await asyncio.to_thread(enough.wait, 60), "the appends did not get going"
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        halt.set()
        writer.join(timeout=30)
        server = start()
        await asyncio.to_thread(wait_healthy)
    finally:
        server.terminate()
        server.wait(timeout=30)
    last = max(Cursor.decode(c) for c in acknowledged)
    async with pool.acquire() as conn:
        head = (await horizon(conn, tenant.id)).cursor  # acknowledged or not: all committed
        assert head is not None
        assert Cursor.decode(head) >= last
        await settle(conn, tenant.id, Cursor.decode(head))
        count = await conn.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant.id)
        assert count >= len(acknowledged)
        state = await state_of(conn, tenant.id)
        assert state.events_applied == count
        live: Any = await dump(conn, tenant.id, state.generation)
        async with conn.transaction():
            await refold(conn, tenant.id, 96, state.checkpoint)
            assert live == await dump(conn, tenant.id, 96)


async def test_a_refold_writes_timelines_in_sorted_flushes_and_keeps_every_row(
    pool: Pool, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refold holds timeline rows until it has FLUSH_ROWS, then writes them in
    the order of each table's key: several flushes, each sorted, and the
    rebuilt generation equals the live one."""
    monkeypatch.setattr(projector, "FLUSH_ROWS", 10)
    flushes: list[tuple[list[str], list[tuple[str, str]]]] = []
    copy_rows = projector._copy_rows

    async def watched(conn: Any, head: tuple[int, int], rows: Any) -> None:
        flushes.append(
            ([row[0] for row in rows.person_timeline], [row[:2] for row in rows.pair_timeline])
        )
        await copy_rows(conn, head, rows)

    monkeypatch.setattr(projector, "_copy_rows", watched)
    async with pool.acquire() as conn:
        result, _ = await append(conn, tenant.id, new_events(*_fixed_history()))
        await settle(conn, tenant.id, Cursor.decode(result.cursor))
        live = await state_of(conn, tenant.id)
        expected = await dump(conn, tenant.id, live.generation)
        flushes.clear()  # the live projector's writes

        await rebuild(conn, tenant.id, batch_size=1)

        fresh = await state_of(conn, tenant.id)
        assert await dump(conn, tenant.id, fresh.generation) == expected
    people_flushes = [people for people, _ in flushes if people]
    assert len(people_flushes) >= 3, "the refold wrote before its end, more than once"
    held = [len(people) + len(pairs) for people, pairs in flushes[:-1]]
    assert min(held) >= 10, f"a flush before the last held fewer than FLUSH_ROWS: {held}"
    for people, pairs in flushes:
        assert people == sorted(people)
        assert pairs == sorted(pairs)
    written = sum(len(people) for people in people_flushes)
    assert written == sum(1 for row in expected if len(row) == 3), "each person row once"


async def test_with_a_reader_a_refold_reads_on_while_a_flush_is_written(
    pool: Pool, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log is read again while a flush is being written (each takes a while
    here); without a reader, never. Both rebuilds equal the live generation."""
    monkeypatch.setattr(projector, "FLUSH_ROWS", 10)
    seen: list[str] = []
    events_after = projector.events_after
    copy_rows = projector._copy_rows

    async def reading(conn: Any, *args: Any) -> Any:
        seen.append("read")
        return await events_after(conn, *args)

    async def writing(conn: Any, head: tuple[int, int], rows: Any) -> None:
        seen.append("write")
        await asyncio.sleep(0.05)
        await copy_rows(conn, head, rows)
        seen.append("written")

    def reads_while_writing() -> int:
        writing_now, count = False, 0
        for step in seen:
            writing_now = step == "write" or (writing_now and step != "written")
            count += writing_now and step == "read"
        return count

    async with pool.acquire() as conn, pool.acquire() as reader:
        result, _ = await append(conn, tenant.id, new_events(*_fixed_history()))
        await settle(conn, tenant.id, Cursor.decode(result.cursor))
        live = await state_of(conn, tenant.id)
        expected = await dump(conn, tenant.id, live.generation)
        monkeypatch.setattr(projector, "events_after", reading)
        monkeypatch.setattr(projector, "_copy_rows", writing)

        await rebuild(conn, tenant.id, batch_size=1)
        assert seen.count("write") >= 3
        assert reads_while_writing() == 0
        assert await dump(conn, tenant.id, live.generation + 1) == expected

        seen.clear()
        await rebuild(conn, tenant.id, batch_size=1, reader=reader)
        assert reads_while_writing() >= 2, "the log was read on while flushes were written"
        fresh = await state_of(conn, tenant.id)
        assert fresh.generation == live.generation + 2
        assert await dump(conn, tenant.id, fresh.generation) == expected


async def test_a_flush_that_fails_while_the_refold_reads_on_fails_the_rebuild(
    pool: Pool, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(projector, "FLUSH_ROWS", 10)

    async def failing(conn: Any, head: tuple[int, int], rows: Any) -> None:
        raise RuntimeError("the disk is full")

    async with pool.acquire() as conn, pool.acquire() as reader:
        result, _ = await append(conn, tenant.id, new_events(*_fixed_history()))
        await settle(conn, tenant.id, Cursor.decode(result.cursor))
        live = await state_of(conn, tenant.id)
        monkeypatch.setattr(projector, "_copy_rows", failing)
        with pytest.raises(RuntimeError, match="the disk is full"):
            await rebuild(conn, tenant.id, batch_size=1, reader=reader)
        assert await state_of(conn, tenant.id) == live, "nothing was swapped in"
        assert await conn.fetchval("SELECT 1") == 1, "the writing connection is free"


async def test_a_rebuild_writes_and_drops_generations_in_chunks_and_keeps_every_row(
    pool: Pool, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks small enough that every table takes several: the rebuilt generation
    equals the live one, and nothing of the generation it replaced is left."""
    monkeypatch.setattr(projector, "CHUNK", 7)
    monkeypatch.setattr(projector, "DROP_CHUNK", 5)
    async with pool.acquire() as conn:
        result, _ = await append(conn, tenant.id, new_events(*_fixed_history()))
        await settle(conn, tenant.id, Cursor.decode(result.cursor))
        live = await state_of(conn, tenant.id)
        expected = await dump(conn, tenant.id, live.generation)
        assert len(expected) > 3 * 7, "enough rows for several chunks"

        await rebuild(conn, tenant.id)

        fresh = await state_of(conn, tenant.id)
        assert fresh.generation == live.generation + 1
        assert await dump(conn, tenant.id, fresh.generation) == expected
        for table in projector.NETWORK.tables:
            left = await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE tenant_id = $1 AND generation = $2",
                tenant.id,
                live.generation,
            )
            assert left == 0, f"{table} kept {left} rows of the replaced generation"
