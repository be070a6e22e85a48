"""The store under concurrency: no lost events, no duplicates, no double grants."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import asyncpg
import msgspec
import pytest

from ledger.errors import LifecycleConflict, VersionConflict
from ledger.events.envelope import NewEvent, decode_batch, prepare
from ledger.store.append import _STATE, append
from ledger.store.cursor import Cursor
from ledger.store.database import Connection, Pool, connect
from ledger.store.read import horizon, read_log
from ledger.tenants.keys import ensure_tenant
from tests.conftest import Tenant, database_at
from tests.plans import blocks_on, explain, pages_of
from tests.samples import event


def new_events(*events: dict[str, Any]) -> list[NewEvent]:
    return prepare(decode_batch(msgspec.json.encode({"events": list(events)})))


def message(sender: str, to: str = "z", **envelope: Any) -> dict[str, Any]:
    return event("message.sent", {"from": sender, "to": to, "kind": "reply"}, **envelope)


async def read_all(
    conn: Connection, tenant: Tenant, after: Cursor | None = None
) -> list[uuid.UUID]:
    page = await read_log(conn, tenant.id, after=after, limit=1000)
    return [item.id for item in page.items]


async def test_a_reader_never_skips_an_event_whose_transaction_commits_late(
    conn: Connection, database_url: str, tenant: Tenant
) -> None:
    """The lost-event hole: A takes a position first, B commits first.

    A reader ordering by position alone would see B, move past it, and never
    see A. The horizon holds B back until A has committed.
    """
    slow = await connect(database_url)
    try:
        early, late = new_events(message("slow")), new_events(message("fast"))
        transaction = slow.transaction()
        await transaction.start()
        await append(slow, tenant.id, early)  # takes its position, not yet committed
        await append(conn, tenant.id, late)  # commits first

        assert await read_all(conn, tenant) == []
        held = await horizon(conn, tenant.id)
        assert held.pending_events == 1
        assert held.oldest_transaction_age_seconds is not None

        await transaction.commit()
        # Both now, in commit-horizon order; other transactions on a shared server
        # may hold the horizon a moment longer, so wait for them (bounded).
        seen: list[uuid.UUID] = []
        for _ in range(1500):
            if len(seen := await read_all(conn, tenant)) == 2:
                break
            await asyncio.sleep(0.02)
        assert seen == [early[0].id, late[0].id]
        assert (await horizon(conn, tenant.id)).pending_events == 0
    finally:
        await slow.close()


async def test_concurrent_writers_and_a_tailing_reader_see_every_event_exactly_once(
    pool: Pool, tenant: Tenant
) -> None:
    writers, per_writer = 16, 30
    rng = random.Random(7)
    done = asyncio.Event()
    appended: list[uuid.UUID] = []

    async def writer(n: int) -> None:
        async with pool.acquire() as conn:
            for i in range(per_writer):
                # Some on a shared stream (forcing version races), most on the writer's own.
                sender = "shared" if i % 5 == 0 else f"w{n}"
                batch = new_events(*[message(sender, at=i) for _ in range(rng.choice([1, 1, 3]))])
                async with conn.transaction():
                    await append(conn, tenant.id, batch)
                    # Hold the commit back a little so commits land out of position order.
                    await asyncio.sleep(rng.uniform(0, 0.01))
                appended.extend(e.id for e in batch)

    async def reader() -> list[uuid.UUID]:
        seen: list[uuid.UUID] = []
        cursor: Cursor | None = None
        async with pool.acquire() as conn:
            while True:
                # Done once the writers are and nothing they committed was held
                # back before this read: on a shared server, someone else's
                # transaction can hold the horizon a while after they end.
                finished = done.is_set() and (await horizon(conn, tenant.id)).pending_events == 0
                page = await read_log(conn, tenant.id, after=cursor, limit=37)
                seen.extend(item.id for item in page.items)
                if page.items:
                    cursor = Cursor.decode(page.items[-1].cursor)
                elif finished:
                    return seen
                else:
                    await asyncio.sleep(0.002)

    async def run() -> list[uuid.UUID]:
        tail = asyncio.create_task(reader())
        try:
            await asyncio.gather(*(writer(n) for n in range(writers)))
        finally:
            done.set()
        return await tail

    seen = await asyncio.wait_for(run(), timeout=120)
    assert len(seen) == len(set(seen)), "an event was delivered twice"
    assert set(seen) == set(appended), f"{len(set(appended) - set(seen))} events were missed"
    assert len(appended) >= writers * per_writer


async def test_concurrent_grants_of_one_favor_let_exactly_one_through(
    pool: Pool, tenant: Tenant
) -> None:
    async with pool.acquire() as conn:
        await append(
            conn,
            tenant.id,
            new_events(
                event(
                    "favor.requested",
                    {"favor_id": "f", "requester": "a", "asked_of": "b", "kind": "advice"},
                )
            ),
        )

    async def grant() -> str:
        grant = event(
            "favor.granted", {"favor_id": "f", "giver": "b", "receiver": "a", "kind": "advice"}
        )
        async with pool.acquire() as conn:
            try:
                await append(conn, tenant.id, new_events(grant))
            except LifecycleConflict:
                return "refused"
            return "granted"

    outcomes = await asyncio.gather(*(grant() for _ in range(12)))
    assert sorted(outcomes) == ["granted"] + ["refused"] * 11
    async with pool.acquire() as conn:
        versions = await conn.fetch(
            "SELECT version FROM events WHERE tenant_id = $1 AND stream = 'favor-f' ORDER BY 1",
            tenant.id,
        )
    assert [r["version"] for r in versions] == [1, 2]


async def test_concurrent_expected_version_zero_lets_exactly_one_through(
    pool: Pool, tenant: Tenant
) -> None:
    async def create() -> str:
        async with pool.acquire() as conn:
            try:
                await append(conn, tenant.id, new_events(message("a", expected_version=0)))
            except VersionConflict as conflict:
                return f"conflict at {conflict.extra['actual_version']}"
            return "created"

    outcomes = await asyncio.gather(*(create() for _ in range(12)))
    assert sorted(outcomes) == ["conflict at 1"] * 11 + ["created"]


async def test_concurrent_retries_of_one_batch_store_it_once(pool: Pool, tenant: Tenant) -> None:
    batch = new_events(message("a"), message("b"), message("a", at=1))

    async def send() -> tuple[Any, bool]:
        async with pool.acquire() as conn:
            return await append(conn, tenant.id, batch)

    results = await asyncio.gather(*(send() for _ in range(10)))
    assert len({msgspec.json.encode(result) for result, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant.id) == 3
        )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET data = '{}' WHERE tenant_id = $1",
        "DELETE FROM events WHERE tenant_id = $1",
        "TRUNCATE events",
    ],
)
async def test_events_are_append_only_in_the_database_itself(
    conn: Connection, tenant: Tenant, statement: str
) -> None:
    await append(conn, tenant.id, new_events(message("a")))
    args = [tenant.id] if "$1" in statement else []
    with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
        await conn.execute(statement, *args)
    assert await conn.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant.id) == 1


async def test_the_appends_state_read_stays_a_probe_with_a_plan_made_while_the_log_was_empty(
    server_url: str,
) -> None:
    """A connection keeps the plan it made for the append's state read; without
    statistics (autovacuum off, or not round yet) one made on an empty table
    walked the tenant's whole log on every later append."""
    async with database_at(server_url, "head") as url:
        conn = await connect(url)
        try:
            tenant_id = await ensure_tenant(conn, "young")
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            await conn.execute(f"PREPARE state(bigint, uuid[], text[], text[]) AS {_STATE}")
            execute = f"EXECUTE state({tenant_id}, '{{}}', '{{}}', ARRAY['messages-p0'])"
            await conn.execute(execute)  # the generic plan, made on the empty table
            for first in range(0, 6000, 1000):
                batch = [message(f"p{n % 50}", f"q{n % 7}") for n in range(first, first + 1000)]
                await append(conn, tenant_id, new_events(*batch))
            plan = await explain(conn, execute)
            pages = await pages_of(conn, "events")
        finally:
            await conn.close()
    assert pages > 100, "the log must be large enough for a walk of it to show"
    assert plan["Actual Rows"] == 1, "the head of the one stream asked for"
    assert blocks_on(plan, "events") <= 10
