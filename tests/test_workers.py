"""`ledger project` workers: several at once share the tenants, none double-applies.

In a module of its own: no in-process projector (the API client fixture's) runs
here, so the work is done by the worker processes.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

from ledger.projections.projector import refold, state_of
from ledger.store.append import append
from ledger.store.cursor import Cursor
from ledger.store.database import Pool
from tests.conftest import Tenant
from tests.test_cli import env_with
from tests.test_projections import _fixed_history, dump
from tests.test_store import new_events


def project_worker(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ledger.cli", "project", "--poll", "0.05"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


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
            for _ in range(1000):
                if (await state_of(conn, tenant.id)).checkpoint >= head:
                    break
                await asyncio.sleep(0.02)
            state = await state_of(conn, tenant.id)
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
