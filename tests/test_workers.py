"""`ledger project` workers: several at once share the tenants, none double-applies.

In a module of its own: no in-process projector (the API client fixture's) runs
here, so the work is done by the worker processes.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from ledger.projections import projector
from ledger.projections.projector import refold, state_of
from ledger.scenario import Scenario
from ledger.store.append import append
from ledger.store.cursor import Cursor
from ledger.store.database import Connection, Pool
from tests.conftest import Tenant, make_tenant
from tests.test_cli import env_with
from tests.test_projections import _fixed_history, dump
from tests.test_store import message, new_events


def project_worker(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ledger.cli", "project", "--poll", "0.05"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


async def reaching(
    conn: Connection, tenant_id: int, head: Cursor, projection: str = "network"
) -> projector.State:
    """The projection's state once its checkpoint reaches ``head``, or after 30 s."""
    for _ in range(600):
        state = await state_of(conn, tenant_id, projection)
        if state.checkpoint >= head:
            break
        await asyncio.sleep(0.05)
    return state


def started(worker: subprocess.Popen[str]) -> str:
    """Wait for the worker's start line; return it."""
    assert worker.stderr is not None
    return worker.stderr.readline()


async def test_two_project_workers_share_the_work_without_double_applying(
    database_url: str, pool: Pool, tenant: Tenant
) -> None:
    env = env_with(LEDGER_DATABASE_URL=database_url)
    workers = [project_worker(env) for _ in range(2)]
    try:
        for worker in workers:
            line = await asyncio.to_thread(started, worker)
            assert "running" in line, line
        history = _fixed_history()
        async with pool.acquire() as conn:
            for i in range(0, len(history), 5):
                result, _ = await append(conn, tenant.id, new_events(*history[i : i + 5]))
            head = Cursor.decode(result.cursor)
            state = await reaching(conn, tenant.id, head)
            assert state.checkpoint >= head, "the workers never caught up"
            assert state.events_applied == len(history)
            assert state.generation == 1
            assert state.worker is not None
            assert state.worker.endswith(tuple(f":{w.pid}" for w in workers))
            live = await dump(conn, tenant.id, 1)
            async with conn.transaction():
                await refold(conn, tenant.id, 94, state.checkpoint)
                assert live == await dump(conn, tenant.id, 94)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            assert worker.wait(timeout=30) == 0


async def test_tenants_take_turns_so_one_backlog_does_not_hold_back_another(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The big tenant is first in line with three batches per projection; the small
    one's single batch must not wait for all of them."""
    big, small = await make_tenant(pool), await make_tenant(pool)
    generated = [g.wire for g in Scenario(people=30, seed=3).events(2500)]
    async with pool.acquire() as conn:
        for i in range(0, len(generated), 500):
            big_head, _ = await append(conn, big.id, new_events(*generated[i : i + 500]))
        small_head, _ = await append(conn, small.id, new_events(*_fixed_history()[:5]))
    assert len(generated) > 2 * projector.BATCH_SIZE, "a backlog of several batches"
    calls: list[tuple[int, str]] = []
    real_catch_up = projector.catch_up

    async def recorded(conn: Connection, tenant_id: int, **options: Any) -> int:
        applied = await real_catch_up(conn, tenant_id, **options)
        if applied and tenant_id in (big.id, small.id):
            calls.append((tenant_id, options["projection"].name))
        return applied

    monkeypatch.setattr(projector, "catch_up", recorded)
    stop = asyncio.Event()
    worker = asyncio.create_task(projector.run(pool, poll_interval=0.05, stop=stop))
    try:
        async with pool.acquire() as conn:
            for tenant, head in ((big, big_head), (small, small_head)):
                for name in ("network", "violations"):
                    wanted = Cursor.decode(head.cursor)
                    if (await reaching(conn, tenant.id, wanted, name)).checkpoint < wanted:
                        raise AssertionError(f"{name} never caught up for {tenant.name}")
    finally:
        stop.set()
        await worker

    for name in ("network", "violations"):
        order = [tenant_id for tenant_id, projection in calls if projection == name]
        last_big = len(order) - 1 - order[::-1].index(big.id)
        assert order.index(small.id) < last_big, f"{name}: the small tenant waited: {order}"


async def test_under_a_steady_stream_of_appends_passes_gather_instead_of_chasing_each_one(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append every 20 ms: with ``gather`` 0.2 s the projector folds them in a
    few passes at least that far apart, not in one pass per append; and it still
    ends caught up."""
    tenant = await make_tenant(pool)
    passes: list[float] = []
    real_catch_up = projector.catch_up

    async def recorded(conn: Connection, tenant_id: int, **options: Any) -> int:
        began = time.monotonic()
        applied = await real_catch_up(conn, tenant_id, **options)
        if applied and tenant_id == tenant.id and options["projection"].name == "network":
            passes.append(began)
        return applied

    monkeypatch.setattr(projector, "catch_up", recorded)
    stop = asyncio.Event()
    worker = asyncio.create_task(projector.run(pool, poll_interval=0.05, stop=stop, gather=0.2))
    try:
        async with pool.acquire() as conn:
            for n in range(60):
                result, _ = await append(conn, tenant.id, new_events(message(f"p{n % 5}")))
                await asyncio.sleep(0.02)
            head = Cursor.decode(result.cursor)
            state = await reaching(conn, tenant.id, head)
    finally:
        stop.set()
        await worker
    assert state.checkpoint >= head, "the projector never caught up"
    assert state.events_applied == 60
    gaps = [later - earlier for earlier, later in itertools.pairwise(passes)]
    assert min(gaps) >= 0.19, gaps
    assert len(passes) < 20, f"{len(passes)} passes for 60 appends"
