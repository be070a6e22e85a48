"""Shared key lookups (ledger.api.auth.KeyLookups): concurrent requests look
their keys up in one query, each gets its own answer, and nothing is cached.

``asyncio.gather`` starts its coroutines in order before the reader task runs,
so every lookup of a gather is queued when the reader takes its first round:
which lookups share a query is deterministic here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from ledger.api.auth import KeyLookups
from ledger.errors import Unavailable
from ledger.store.database import Connection, Pool
from ledger.tenants.keys import Principal, revoke_key
from tests.conftest import Tenant, make_tenant


class Counted:
    """``pool.acquire`` that counts borrows (one per query of the lookups)."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.borrows = 0

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Connection]:
        self.borrows += 1
        async with self.pool.acquire() as conn:
            yield conn


def key_id_of(tenant: Tenant) -> str:
    return tenant.key.split("_")[1]


async def test_concurrent_lookups_share_a_query_and_each_gets_its_own_answer(
    pool: Pool, tenant: Tenant, other_tenant: Tenant
) -> None:
    counted = Counted(pool)
    lookups = KeyLookups(counted.acquire)
    keys = [tenant.key, other_tenant.key, "ldg_nope_nope", tenant.key] * 5
    found = await asyncio.gather(*(lookups.principal(key) for key in keys))
    assert counted.borrows == 1
    expected: dict[str, int | None] = {
        tenant.key: tenant.id,
        other_tenant.key: other_tenant.id,
        "ldg_nope_nope": None,
    }
    assert [p.tenant_id if p else None for p in found] == [expected[k] for k in keys]
    principal = found[0]
    assert isinstance(principal, Principal)
    assert (principal.tenant, principal.key_id) == (tenant.name, key_id_of(tenant))


async def test_a_revoked_key_is_refused_at_the_next_lookup(pool: Pool) -> None:
    tenant = await make_tenant(pool)
    lookups = KeyLookups(pool.acquire)
    assert await lookups.principal(tenant.key) is not None
    async with pool.acquire() as conn:
        await revoke_key(conn, key_id_of(tenant))
    assert await lookups.principal(tenant.key) is None


async def test_a_failed_query_fails_its_round_and_the_next_round_works(
    pool: Pool, tenant: Tenant
) -> None:
    failures = [OSError("connection refused")]

    @asynccontextmanager
    async def flaky() -> AsyncIterator[Connection]:
        if failures:
            raise failures.pop()
        async with pool.acquire() as conn:
            yield conn

    lookups = KeyLookups(flaky)
    first = await asyncio.gather(
        *(lookups.principal(tenant.key) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(answer, OSError) for answer in first)
    assert lookups._reader is None  # nothing left waiting: the reader is gone
    found = await lookups.principal(tenant.key)
    assert found is not None and found.tenant_id == tenant.id


async def test_a_client_that_leaves_does_not_disturb_the_others(pool: Pool, tenant: Tenant) -> None:
    gate = asyncio.Event()

    def gated(pool: Pool) -> Callable[[], AbstractAsyncContextManager[Connection]]:
        @asynccontextmanager
        async def acquire() -> AsyncIterator[Connection]:
            await gate.wait()
            async with pool.acquire() as conn:
                yield conn

        return acquire

    lookups = KeyLookups(gated(pool))
    leaving = asyncio.create_task(lookups.principal(tenant.key))
    staying = asyncio.create_task(lookups.principal(tenant.key))
    await asyncio.sleep(0)
    leaving.cancel()
    gate.set()
    found = await staying
    assert found is not None and found.tenant_id == tenant.id
    with pytest.raises(asyncio.CancelledError):
        await leaving


async def test_a_stopped_reader_answers_unavailable(pool: Pool, tenant: Tenant) -> None:
    never = asyncio.Event()

    @asynccontextmanager
    async def stuck() -> AsyncIterator[Connection]:
        await never.wait()
        async with pool.acquire() as conn:  # pragma: no cover - never reached
            yield conn

    lookups = KeyLookups(stuck)
    waiting = [asyncio.create_task(lookups.principal(tenant.key)) for _ in range(2)]
    await asyncio.sleep(0.01)
    reader = lookups._reader
    assert reader is not None
    reader.cancel()
    for task in waiting:
        with pytest.raises(Unavailable):
            await task
    assert lookups._reader is None


async def test_a_lookup_arriving_during_a_query_waits_for_a_query_of_its_own(
    pool: Pool, tenant: Tenant
) -> None:
    """What keeps revocation immediate: no request is answered by a query that
    started before it arrived."""
    gate = asyncio.Event()
    counted = Counted(pool)

    @asynccontextmanager
    async def first_gated() -> AsyncIterator[Connection]:
        async with counted.acquire() as conn:
            await gate.wait()
            yield conn

    lookups = KeyLookups(first_gated)
    early = asyncio.create_task(lookups.principal(tenant.key))
    await asyncio.sleep(0.01)  # the reader has taken `early` and holds a connection
    late = asyncio.create_task(lookups.principal(tenant.key))
    await asyncio.sleep(0)
    gate.set()
    assert (await early) is not None and (await late) is not None
    assert counted.borrows == 2
