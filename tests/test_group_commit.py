"""Group commit (ledger.store.group): concurrent appends of a tenant share a
transaction, and each request keeps its own all-or-nothing answer.

``asyncio.gather`` starts its coroutines in order before the writer task runs,
so every request of a gather is queued when the writer takes its first group:
which requests share a transaction is deterministic here.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from ledger.errors import IdConflict, LifecycleConflict, Unavailable, VersionConflict
from ledger.store.append import AppendResult, append
from ledger.store.cursor import Cursor
from ledger.store.database import Connection, Pool
from ledger.store.group import GroupCommit
from tests.conftest import Tenant
from tests.samples import event
from tests.test_store import message, new_events


def acquiring(pool: Pool) -> Callable[[int], AbstractAsyncContextManager[Connection]]:
    return lambda tenant_id: pool.acquire()


def tx_of(result: AppendResult) -> int:
    return Cursor.decode(result.cursor).tx_id


async def logged(pool: Pool, tenant: Tenant) -> list[uuid.UUID]:
    """The tenant's stored events in log order (straight from the table: the
    readable log may lag behind a commit for a moment, see ledger.store.read)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id FROM events WHERE tenant_id = $1 ORDER BY position", tenant.id
        )
    return [row["id"] for row in rows]


async def answers(
    group: GroupCommit, tenant: Tenant, *batches: list[dict[str, Any]]
) -> list[tuple[AppendResult, bool] | BaseException]:
    return await asyncio.gather(
        *(group.append(tenant.id, new_events(*batch)) for batch in batches),
        return_exceptions=True,
    )


def ok(answer: tuple[AppendResult, bool] | BaseException) -> AppendResult:
    assert not isinstance(answer, BaseException), answer
    result, created = answer
    assert created
    return result


async def test_concurrent_appends_share_one_transaction(pool: Pool, tenant: Tenant) -> None:
    group = GroupCommit(acquiring(pool))
    batches = [[message(f"s{i}")] for i in range(12)]
    results = [ok(a) for a in await answers(group, tenant, *batches)]
    assert len({tx_of(r) for r in results}) == 1
    positions = [r.events[0].position for r in results]
    assert positions == sorted(positions)  # placed in queue order
    assert await logged(pool, tenant) == [uuid.UUID(b[0]["id"]) for b in batches]


async def test_a_refused_request_writes_nothing_and_spares_the_rest_of_its_group(
    pool: Pool, tenant: Tenant
) -> None:
    stored = message("ana")
    async with pool.acquire() as conn:
        await append(conn, tenant.id, new_events(stored))
    requested = event(
        "favor.requested", {"favor_id": "f", "requester": "a", "asked_of": "b", "kind": "advice"}
    )
    async with pool.acquire() as conn:
        await append(conn, tenant.id, new_events(requested))

    def grant() -> dict[str, Any]:
        data = {"favor_id": "f", "giver": "b", "receiver": "a", "kind": "advice"}
        return event("favor.granted", data)

    first, second = message("ben"), message("cleo")
    wrong_version = [message("dan"), message("dan", expected_version=5)]
    other_content = [message("eve"), {**stored, "data": {**stored["data"], "kind": "thank_you"}}]
    granted, granted_again = [grant()], [grant()]
    group = GroupCommit(acquiring(pool))
    found = await answers(
        group, tenant, [first], wrong_version, granted, other_content, granted_again, [second]
    )
    assert isinstance(found[1], VersionConflict)
    assert found[1].field == "events[1].expected_version"
    assert isinstance(found[3], IdConflict)
    assert found[3].field == "events[1].id"
    # The first grant, earlier in the same group, is what the second one conflicts with.
    assert isinstance(found[4], LifecycleConflict)
    kept = [ok(found[i]) for i in (0, 2, 5)]
    assert len({tx_of(r) for r in kept}) == 1
    written = await logged(pool, tenant)
    for refused in (wrong_version, other_content[:1], granted_again):
        assert not {uuid.UUID(e["id"]) for e in refused} & set(written)
    assert written[-3:] == [uuid.UUID(e["id"]) for e in (first, granted[0], second)]


async def test_appends_to_one_stream_in_a_group_are_checked_one_after_another(
    pool: Pool, tenant: Tenant
) -> None:
    batches = [[message("fay", expected_version=v)] for v in range(5)]
    found = await answers(GroupCommit(acquiring(pool)), tenant, *batches)
    results = [ok(a) for a in found]
    assert [r.events[0].version for r in results] == [1, 2, 3, 4, 5]
    assert len({tx_of(r) for r in results}) == 1


async def test_a_concurrent_retry_with_the_same_ids_waits_for_the_next_group(
    pool: Pool, tenant: Tenant
) -> None:
    batch = [message("gus"), message("gus")]
    first, retry = await answers(GroupCommit(acquiring(pool)), tenant, batch, batch)
    assert not isinstance(first, BaseException) and not isinstance(retry, BaseException)
    assert first[1] is True and retry[1] is False
    assert first[0] == retry[0]  # the same positions, the same cursor
    assert await logged(pool, tenant) == [uuid.UUID(e["id"]) for e in batch]


async def test_forgetting_a_person_goes_alone(pool: Pool, tenant: Tenant) -> None:
    registered = event(
        "person.registered", {"person": "hal", "display_name": "Hal", "email": "h@example.org"}
    )
    forgotten = event("person.forgotten", {"person": "hal"})
    before, after = message("ivy"), message("jo")
    found = await answers(
        GroupCommit(acquiring(pool)), tenant, [before], [registered], [forgotten], [after]
    )
    txs = [tx_of(ok(a)) for a in found]
    assert txs[0] == txs[1]
    assert len({txs[1], txs[2], txs[3]}) == 3


async def test_a_group_stops_growing_at_its_event_limit(pool: Pool, tenant: Tenant) -> None:
    batches = [[message(f"k{i}")] for i in range(5)]
    found = await answers(GroupCommit(acquiring(pool), max_events=2), tenant, *batches)
    txs = [tx_of(ok(a)) for a in found]
    assert txs[0] == txs[1] != txs[2] == txs[3] != txs[4]


async def test_a_failed_connection_fails_every_request_of_its_group_and_no_more(
    pool: Pool, tenant: Tenant
) -> None:
    failing = True

    @asynccontextmanager
    async def flaky(tenant_id: int) -> AsyncIterator[Connection]:
        if failing:
            raise ConnectionRefusedError("the database went away")
        async with pool.acquire() as conn:
            yield conn

    group = GroupCommit(flaky)
    batches = [[message(f"l{i}")] for i in range(3)]
    found = await answers(group, tenant, *batches)
    assert all(isinstance(a, ConnectionRefusedError) for a in found)
    assert await logged(pool, tenant) == []
    failing = False
    again = await answers(group, tenant, *batches)
    assert len({tx_of(ok(a)) for a in again}) == 1


async def test_a_client_that_hangs_up_does_not_cancel_its_group(pool: Pool, tenant: Tenant) -> None:
    group = GroupCommit(acquiring(pool))
    leaving = asyncio.ensure_future(group.append(tenant.id, new_events(message("max"))))
    staying = asyncio.ensure_future(group.append(tenant.id, new_events(message("ned"))))
    await asyncio.sleep(0)  # both queued; the writer has not run yet
    leaving.cancel()
    result, created = await staying
    assert created
    with pytest.raises(asyncio.CancelledError):
        await leaving
    # The one who left was written all the same: its retry finds it stored.
    assert len(await logged(pool, tenant)) == 2
    assert result.events[0].version == 1


async def test_closing_answers_the_group_in_flight_and_the_queue_with_503(
    pool: Pool, tenant: Tenant
) -> None:
    started, never = asyncio.Event(), asyncio.Event()

    @asynccontextmanager
    async def stuck(tenant_id: int) -> AsyncIterator[Connection]:
        async with pool.acquire() as conn:
            started.set()
            await never.wait()  # the database hangs while the group is in flight
            yield conn

    group = GroupCommit(stuck)
    in_flight = asyncio.ensure_future(group.append(tenant.id, new_events(message("oz"))))
    await started.wait()
    queued = asyncio.ensure_future(group.append(tenant.id, new_events(message("pam"))))
    await asyncio.sleep(0)
    await group.close()
    for answer in (in_flight, queued):
        with pytest.raises(Unavailable, match="stopping"):
            await answer
    assert await logged(pool, tenant) == []
