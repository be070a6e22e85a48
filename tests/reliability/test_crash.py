"""SIGKILL the API in the middle of a stream of appends from a client that retries
with the same event ids: after a restart every acknowledged event is in the log
exactly once, and the projections equal a rebuild from the log."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import httpx

from ledger.projections.projector import refold, state_of
from ledger.store.cursor import Cursor
from ledger.store.database import Pool
from ledger.store.read import horizon
from tests.conftest import Tenant
from tests.reliability.conftest import Server
from tests.samples import event
from tests.test_cli import env_with
from tests.test_projections import dump, settle

REQUESTS = 90
KILL_AFTER = 30
RETRY_FOR_SECONDS = 90


def request_number(i: int) -> list[dict[str, Any]]:
    """Every third request a favor asked and granted in one batch, else a message."""
    if i % 3 == 0:
        favor = f"f-{uuid.uuid4().hex[:8]}"
        giver, receiver = f"p{i % 5}", f"p{(i + 1) % 5}"
        return [
            event(
                "favor.requested",
                {"favor_id": favor, "requester": receiver, "asked_of": giver, "kind": "advice"},
                at=i,
            ),
            event(
                "favor.granted",
                {"favor_id": favor, "giver": giver, "receiver": receiver, "kind": "advice"},
                at=i + 1,
            ),
        ]
    return [event("message.sent", {"from": f"p{i % 5}", "to": f"p{(i + 2) % 5}", "kind": "reply"})]


class RetryingClient:
    """Sends each batch until it is acknowledged, always with the same ids."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base = base
        self.headers = headers
        self.acknowledged: list[str] = []
        self.statuses: list[int] = []
        self.transport_errors = 0
        self.errors: list[str] = []
        self.progress = threading.Condition()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, headers=self.headers, timeout=10) as http:
            for i in range(REQUESTS):
                batch = request_number(i)
                deadline = time.monotonic() + RETRY_FOR_SECONDS
                while True:
                    if time.monotonic() > deadline:
                        self.errors.append(f"request {i} never acknowledged")
                        return
                    try:
                        response = http.post("/v1/events", json={"events": batch})
                    except httpx.TransportError:
                        self.transport_errors += 1
                        time.sleep(0.05)
                        continue
                    self.statuses.append(response.status_code)
                    if response.status_code in (200, 201):
                        break
                    if response.status_code != 503:
                        self.errors.append(f"request {i}: {response.status_code} {response.text}")
                        return
                    time.sleep(0.05)
                with self.progress:
                    self.acknowledged.extend(e["id"] for e in batch)
                    self.progress.notify_all()

    def wait_for(self, events: int, seconds: float) -> bool:
        with self.progress:
            return self.progress.wait_for(lambda: len(self.acknowledged) >= events, seconds)


async def test_a_killed_server_loses_no_acknowledged_event_and_duplicates_none(
    database_url: str, pool: Pool, tenant: Tenant
) -> None:
    server = Server(env_with(LEDGER_DATABASE_URL=database_url))
    await asyncio.to_thread(server.start)
    client = RetryingClient(server.base, tenant.headers)
    sender = threading.Thread(target=client.run)
    try:
        sender.start()
        assert await asyncio.to_thread(client.wait_for, KILL_AFTER, 60), client.errors
        server.kill()  # mid-stream: the client is sending continuously
        await asyncio.to_thread(server.start)  # same port; the client keeps retrying
        await asyncio.to_thread(sender.join, RETRY_FOR_SECONDS * 2)
        assert not sender.is_alive()
    finally:
        server.stop()

    assert client.errors == []
    assert client.transport_errors > 0, "the kill never interrupted the client"
    sent = sum(len(request_number(i)) for i in range(REQUESTS))  # same shape each call
    assert len(client.acknowledged) == sent
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id::text AS id, count(*) AS n FROM events WHERE tenant_id = $1 GROUP BY id",
            tenant.id,
        )
        stored = {row["id"]: row["n"] for row in rows}
        assert set(stored) == set(client.acknowledged)  # every acknowledged event, no other
        assert set(stored.values()) == {1}  # exactly once each
        versions = await conn.fetch(
            "SELECT stream, array_agg(version ORDER BY version) AS v FROM events "
            "WHERE tenant_id = $1 GROUP BY stream",
            tenant.id,
        )
        for row in versions:  # no gaps or doubles in any stream
            assert list(row["v"]) == list(range(1, len(row["v"]) + 1)), row["stream"]

        head = (await horizon(conn, tenant.id)).cursor
        assert head is not None
        await settle(conn, tenant.id, Cursor.decode(head))
        state = await state_of(conn, tenant.id)
        assert state.events_applied == len(stored)
        live = await dump(conn, tenant.id, state.generation)
        assert live, "the projections hold nothing"
        async with conn.transaction():
            await refold(conn, tenant.id, 95, state.checkpoint)
            assert live == await dump(conn, tenant.id, 95)
