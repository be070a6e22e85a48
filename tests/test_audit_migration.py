"""Migration 0005 seals registrations that earlier revisions stored in clear."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from ledger.store.database import connect
from ledger.store.migrate import upgrade
from ledger.store.read import get_event
from tests.conftest import database_at
from tests.test_audit_erasure import dump

_OLD_APPEND = """
INSERT INTO events (tenant_id, id, stream, version, type, occurred_at, data, people)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb)
"""


@pytest.fixture
async def database_at_0002(server_url: str) -> AsyncIterator[str]:
    async with database_at(server_url, "0002") as url:
        yield url


async def test_upgrading_seals_old_registrations_and_shreds_the_forgotten(
    database_at_0002: str,
) -> None:
    url = database_at_0002
    ana_email, ben_email = (f"{p}.{uuid.uuid4().hex}@example.org" for p in ("ana", "ben"))
    ids = {name: uuid.uuid4() for name in ("ana", "ana_forgotten", "ben", "cleo")}
    at = datetime(2025, 1, 1, tzinfo=UTC)
    old = await asyncpg.connect(url)
    try:
        tenant_id = await old.fetchval(
            "INSERT INTO tenants (name) VALUES ('old') RETURNING tenant_id"
        )
        rows = [
            (ids["ana"], "person-ana", 1, "person.registered",
             f'{{"person": "ana", "display_name": "Ana", "email": "{ana_email}"}}', '["ana"]'),
            (ids["ana_forgotten"], "person-ana", 2, "person.forgotten", '{"person": "ana"}',
             '["ana"]'),
            (ids["ben"], "person-ben", 1, "person.registered",
             f'{{"person": "ben", "email": "{ben_email}"}}', '["ben"]'),
            (ids["cleo"], "person-cleo", 1, "person.registered", '{"person": "cleo"}',
             '["cleo"]'),
        ]  # fmt: skip
        for event_id, stream, version, type_, data, people in rows:
            await old.execute(
                _OLD_APPEND, tenant_id, event_id, stream, version, type_, at, data, people
            )
    finally:
        await old.close()
    assert ana_email in dump(url)

    await asyncio.to_thread(upgrade, url)

    conn = await connect(url)
    try:
        stored = {
            row["id"]: row
            for row in await conn.fetch(
                "SELECT id, data, sealed FROM events WHERE tenant_id = $1", tenant_id
            )
        }
        keys = await conn.fetch("SELECT person FROM person_keys WHERE tenant_id = $1", tenant_id)
        ana = await get_event(conn, tenant_id, ids["ana"])
        ben = await get_event(conn, tenant_id, ids["ben"])
        cleo = await get_event(conn, tenant_id, ids["cleo"])
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            await conn.execute("UPDATE events SET data = '{}' WHERE tenant_id = $1", tenant_id)
    finally:
        await conn.close()
    assert stored[ids["ana"]]["data"] == {"person": "ana"}
    assert stored[ids["ben"]]["data"] == {"person": "ben"}
    assert stored[ids["ana"]]["sealed"] is not None
    assert stored[ids["cleo"]]["sealed"] is None  # nothing personal to seal
    assert [row["person"] for row in keys] == ["ben"]
    assert ana is not None and ben is not None and cleo is not None
    assert ana.data == {"person": "ana", "display_name": None, "email": None, "erased": True}
    assert ben.data == {"person": "ben", "email": ben_email}
    assert cleo.data == {"person": "cleo"}
    text = dump(url)
    assert ana_email not in text
    assert ben_email not in text
