"""Row-level security, the second wall between tenants: a request's connection
(``ledger_app``, bound to its tenant by ``pool_of``) sees and writes only that
tenant's rows, even through a query that forgot its ``tenant_id = $1``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from ledger.api.state import Bindings, TenantPool
from ledger.store.append import append
from ledger.store.database import APP_ROLE, WORKER_ROLE, Connection, Pool, create_pool
from ledger.store.read import read_log
from tests.conftest import Tenant
from tests.samples import story
from tests.test_store import new_events

UNGUARDED = ("tenants", "api_keys")  # read by authentication before any tenant is known

_TENANT_TABLES = """
SELECT r.relname, r.relrowsecurity
FROM pg_attribute a
JOIN pg_class r ON r.oid = a.attrelid AND r.relkind IN ('r', 'p')
JOIN pg_namespace n ON n.oid = r.relnamespace AND n.nspname = 'public'
WHERE a.attname = 'tenant_id' AND NOT a.attisdropped
ORDER BY r.relname
"""


@pytest.fixture
def bindings() -> Bindings:
    return Bindings()


@pytest.fixture
async def app_pool(database_url: str, bindings: Bindings) -> AsyncIterator[Pool]:
    """A pool like the API's request pool: as ledger_app, keeping its session
    between borrowers, with one connection (so each borrower gets the last
    one's connection)."""
    created = await create_pool(
        database_url, size=1, role=APP_ROLE, on_connect=bindings.on_connect, keep_session=True
    )
    yield created
    await created.close()


@pytest.fixture
async def two_histories(pool: Pool, tenant: Tenant, other_tenant: Tenant) -> int:
    """Both tenants have events; the answer is how many each has."""
    events = story()
    async with pool.acquire() as conn:
        await append(conn, tenant.id, new_events(*events))
        await append(conn, other_tenant.id, new_events(*story()))
    return len(events)


async def test_every_tenant_table_has_row_level_security(pool: Pool) -> None:
    """A table keyed by tenant_id without it is a gap in the wall (a table that a
    migration after 0006 adds needs ENABLE ROW LEVEL SECURITY and a tenant_rows policy)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(_TENANT_TABLES)
    guarded = {row["relname"] for row in rows if row["relrowsecurity"]}
    unguarded = {row["relname"] for row in rows if not row["relrowsecurity"]}
    assert {"events", "projection_state", "network_pairs"} <= guarded
    assert unguarded == set(UNGUARDED)


async def test_a_bound_connection_sees_only_its_tenant_even_without_a_where(
    app_pool: Pool, bindings: Bindings, tenant: Tenant, two_histories: int
) -> None:
    async with TenantPool(app_pool, tenant.id, bindings).acquire() as conn:
        rows = await conn.fetch("SELECT DISTINCT tenant_id FROM events")
        assert [row["tenant_id"] for row in rows] == [tenant.id]
        assert await conn.fetchval("SELECT count(*) FROM events") == two_histories


async def test_a_store_read_for_another_tenant_finds_nothing_through_a_bound_connection(
    app_pool: Pool, bindings: Bindings, tenant: Tenant, other_tenant: Tenant, two_histories: int
) -> None:
    """A bug that passed the wrong tenant id would still not leak."""
    async with TenantPool(app_pool, tenant.id, bindings).acquire() as conn:
        page = await read_log(conn, other_tenant.id, after=None, limit=1000)
    assert page.items == []


async def test_writing_another_tenants_rows_is_refused(
    app_pool: Pool, bindings: Bindings, tenant: Tenant, other_tenant: Tenant
) -> None:
    async with TenantPool(app_pool, tenant.id, bindings).acquire() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await append(conn, other_tenant.id, new_events(*story()))
        # Its own tenant: fine.
        _, created = await append(conn, tenant.id, new_events(*story()))
        assert created


async def test_an_unbound_connection_sees_no_tenant_rows(
    app_pool: Pool, bindings: Bindings, tenant: Tenant, two_histories: int
) -> None:
    async with TenantPool(app_pool, None, bindings).acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM events") == 0
        # Authentication still works: the keyring is outside the wall.
        assert await conn.fetchval("SELECT count(*) FROM api_keys WHERE tenant_id = $1", tenant.id)


async def test_the_next_borrower_never_sees_the_last_ones_tenant(
    app_pool: Pool, bindings: Bindings, tenant: Tenant, other_tenant: Tenant, two_histories: int
) -> None:
    """The pool keeps sessions between borrowers (no RESET ALL) and has one
    connection: each borrow re-binds it to its own tenant, or unbinds it."""
    async with TenantPool(app_pool, tenant.id, bindings).acquire() as conn:
        first_pid = conn.get_server_pid()
        assert await conn.fetchval("SELECT count(*) FROM events") == two_histories
    async with TenantPool(app_pool, other_tenant.id, bindings).acquire() as conn:
        assert conn.get_server_pid() == first_pid
        rows = await conn.fetch("SELECT DISTINCT tenant_id FROM events")
        assert [row["tenant_id"] for row in rows] == [other_tenant.id]
    async with TenantPool(app_pool, None, bindings).acquire() as conn:
        assert conn.get_server_pid() == first_pid
        assert await conn.fetchval("SELECT current_setting('ledger.tenant_id', true)") == ""
        assert await conn.fetchval("SELECT count(*) FROM events") == 0


async def test_a_borrower_that_left_a_transaction_open_does_not_pass_it_on(
    app_pool: Pool, bindings: Bindings, tenant: Tenant, two_histories: int
) -> None:
    async with TenantPool(app_pool, tenant.id, bindings).acquire() as conn:
        await conn.execute("BEGIN")
        await conn.execute("SELECT set_config('ledger.tenant_id', '0', true)")
    async with TenantPool(app_pool, tenant.id, bindings).acquire() as conn:
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT count(*) FROM events") == two_histories


async def test_a_new_connection_registers_as_unbound(
    app_pool: Pool, bindings: Bindings, tenant: Tenant, two_histories: int
) -> None:
    """Bindings are keyed by backend pid; a connection that replaces a closed one
    (the operating system may hand out the same pid) must not inherit its entry."""
    async with TenantPool(app_pool, tenant.id, bindings).acquire() as conn:
        assert bindings.bound_to(conn.get_server_pid()) == str(tenant.id)
    await app_pool.expire_connections()  # the next borrow gets a new connection
    async with app_pool.acquire() as conn:
        assert await conn.fetchval("SELECT current_setting('ledger.tenant_id', true)") in ("", None)
        assert bindings.bound_to(conn.get_server_pid()) == ""
    async with TenantPool(app_pool, tenant.id, bindings).acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM events") == two_histories


async def test_the_worker_role_sees_every_tenant(
    database_url: str, tenant: Tenant, other_tenant: Tenant, two_histories: int
) -> None:
    workers = await create_pool(database_url, size=1, role=WORKER_ROLE)
    try:
        conn: Connection
        async with workers.acquire() as conn:
            assert await conn.fetchval("SELECT current_user") == WORKER_ROLE
            rows = await conn.fetch(
                "SELECT DISTINCT tenant_id FROM events WHERE tenant_id = ANY($1::bigint[])",
                [tenant.id, other_tenant.id],
            )
        assert {row["tenant_id"] for row in rows} == {tenant.id, other_tenant.id}
    finally:
        await workers.close()
