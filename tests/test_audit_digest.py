"""The log digest: stable, checkpointed, and broken by any edit behind the app's back."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from ledger.audit import digest_store
from ledger.audit.digest import EMPTY
from ledger.audit.digest_store import CHECKPOINT_EVERY
from ledger.store.database import Connection, Pool
from tests.conftest import Tenant, make_tenant
from tests.samples import event, story
from tests.test_api_events import assert_problem, post

Client = AsyncTestClient[Litestar]


async def digest(client: Client, tenant: Tenant, *, events: int, **params: str) -> dict[str, Any]:
    """The digest once it covers ``events`` events (the commit horizon may lag a
    moment behind an append while other transactions run on the server)."""
    deadline = time.monotonic() + 30
    while True:
        response = await client.get("/v1/audit/digest", headers=tenant.headers, params=params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["events"] >= events or time.monotonic() > deadline:
            assert body["events"] == events, body
            return body
        await asyncio.sleep(0.05)


async def tamper(conn: Connection, tenant: Tenant, event_id: str, sql_set: str) -> None:
    """What a database superuser can do: bypass the append-only trigger."""
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        status = await conn.execute(
            f"UPDATE events SET {sql_set} WHERE tenant_id = $1 AND id = $2::uuid",
            tenant.id,
            event_id,
        )
    assert status == "UPDATE 1"


async def test_an_empty_log_has_the_seed_digest(client: Client, tenant: Tenant) -> None:
    body = await digest(client, tenant, events=0)
    assert body == {
        "cursor": None,
        "digest": EMPTY,
        "events": 0,
        "hashed": 0,
        "checkpoints_checked": 0,
        "mismatch": None,
    }


async def test_the_digest_is_stable_and_recomputes_to_the_same_value(
    client: Client, tenant: Tenant
) -> None:
    events = story()
    appended = (await post(client, tenant, events)).json()
    first = await digest(client, tenant, events=len(events))
    assert first["cursor"] == appended["cursor"]
    assert len(first["digest"]) == 64
    assert first["digest"] != EMPTY
    again = await digest(client, tenant, events=len(events))
    assert again["digest"] == first["digest"]
    full = await digest(client, tenant, events=len(events), cursor=first["cursor"])
    assert full["digest"] == first["digest"]
    assert full["hashed"] == len(events)

    more = [event("message.sent", {"from": "ben", "to": "ana", "kind": "reply"}, at=30)]
    await post(client, tenant, more)
    later = await digest(client, tenant, events=len(events) + 1)
    assert later["digest"] != first["digest"]
    # The past does not move: the digest up to the old cursor is what it was.
    past = await digest(client, tenant, events=len(events), cursor=first["cursor"])
    assert past["digest"] == first["digest"]


async def test_digests_are_per_tenant(client: Client, tenant: Tenant, other_tenant: Tenant) -> None:
    await post(client, tenant, story())
    await digest(client, tenant, events=len(story()))
    assert (await digest(client, other_tenant, events=0))["digest"] == EMPTY


async def test_a_superuser_edit_of_an_event_changes_the_digest(
    client: Client, tenant: Tenant, fresh_conn: Connection
) -> None:
    events = story()
    await post(client, tenant, events)
    before = await digest(client, tenant, events=len(events))
    # Ben granted 2, not 1: the kind of edit that would fix a balance.
    await tamper(
        fresh_conn, tenant, events[4]["id"], "data = jsonb_set(data, '{weight}', '2'::jsonb)"
    )
    after = await digest(client, tenant, events=len(events), cursor=before["cursor"])
    assert after["digest"] != before["digest"]
    # occurred_at and metadata are covered too.
    await tamper(fresh_conn, tenant, events[4]["id"], "data = data - 'weight'")
    await tamper(fresh_conn, tenant, events[5]["id"], "occurred_at = occurred_at + interval '1s'")
    moved = await digest(client, tenant, events=len(events), cursor=before["cursor"])
    assert moved["digest"] not in (before["digest"], after["digest"])


async def test_a_full_recompute_finds_an_edit_behind_a_checkpoint(
    client: Client, pool: Pool, fresh_conn: Connection
) -> None:
    tenant = await make_tenant(pool)
    messages = [
        event("message.sent", {"from": f"p{i % 7}", "to": f"q{i % 5}", "kind": "check_in"}, at=i)
        for i in range(CHECKPOINT_EVERY + 5)
    ]
    await post(client, tenant, messages[:CHECKPOINT_EVERY])
    await post(client, tenant, messages[CHECKPOINT_EVERY:])
    honest = await digest(client, tenant, events=len(messages))
    async with pool.acquire() as conn:
        saved = await conn.fetch(
            "SELECT events FROM digest_checkpoints WHERE tenant_id = $1", tenant.id
        )
    assert [row["events"] for row in saved] == [CHECKPOINT_EVERY]
    # Later answers hash only the tail after the checkpoint...
    fast = await digest(client, tenant, events=len(messages))
    assert fast["hashed"] == 5
    assert fast["digest"] == honest["digest"]
    checked = await digest(client, tenant, events=len(messages), cursor=honest["cursor"])
    assert checked["digest"] == honest["digest"]
    assert checked["checkpoints_checked"] == 1
    assert checked["mismatch"] is None

    await tamper(fresh_conn, tenant, messages[10]["id"], "data = jsonb_set(data, '{to}', '\"x\"')")
    # ...so the fast answer trusts the checkpoint and misses an old edit,
    assert (await digest(client, tenant, events=len(messages)))["digest"] == honest["digest"]
    # while the full recompute shows it, and where the log stopped matching.
    full = await digest(client, tenant, events=len(messages), cursor=honest["cursor"])
    assert full["digest"] != honest["digest"]
    assert full["checkpoints_checked"] == 1
    assert full["mismatch"] is not None
    log = await client.get("/v1/events", headers=tenant.headers, params={"limit": CHECKPOINT_EVERY})
    assert full["mismatch"] == log.json()["items"][-1]["cursor"]


async def test_forgetting_a_person_leaves_the_digest_valid(client: Client, tenant: Tenant) -> None:
    events = story()
    registered, forgotten = events[0], events[-1]
    assert registered["type"] == "person.registered"
    assert forgotten["type"] == "person.forgotten"
    await post(client, tenant, events[:-1])
    before = await digest(client, tenant, events=len(events) - 1)
    await post(client, tenant, [forgotten])
    await digest(client, tenant, events=len(events))
    after = await digest(client, tenant, events=len(events) - 1, cursor=before["cursor"])
    assert after["digest"] == before["digest"]


async def test_the_digest_needs_the_audit_scope(client: Client, pool: Pool) -> None:
    reader = await make_tenant(pool, ["events:read", "events:write", "projections:read", "admin"])
    body = assert_problem(await client.get("/v1/audit/digest", headers=reader.headers), 403)
    assert body["required_scope"] == "audit"
    assert_problem(await client.get("/v1/audit/digest"), 401, "Authorization")
    auditor = await make_tenant(pool, ["audit"])
    assert (await client.get("/v1/audit/digest", headers=auditor.headers)).status_code == 200


async def test_a_cursor_the_ledger_did_not_issue_is_refused(client: Client, tenant: Tenant) -> None:
    response = await client.get(
        "/v1/audit/digest", headers=tenant.headers, params={"cursor": "nope"}
    )
    assert_problem(response, 422, "cursor")


async def test_pages_and_many_checkpoints_give_the_same_chain(
    client: Client, pool: Pool, fresh_conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(digest_store, "PAGE", 7)
    monkeypatch.setattr(digest_store, "CHECKPOINT_EVERY", 5)
    tenant = await make_tenant(pool)
    events = story()
    await post(client, tenant, events[:9])
    await digest(client, tenant, events=9)  # checkpoint at 5
    await post(client, tenant, events[9:])
    fast = await digest(client, tenant, events=len(events))
    assert fast["hashed"] == len(events) - 5
    full = await digest(client, tenant, events=len(events), cursor=fast["cursor"])
    assert full["digest"] == fast["digest"]
    assert full["checkpoints_checked"] == 3  # 5, 10, 15
    async with pool.acquire() as conn:
        saved = await conn.fetch(
            "SELECT events FROM digest_checkpoints WHERE tenant_id = $1 ORDER BY 1", tenant.id
        )
    assert [row["events"] for row in saved] == [5, 10, 15]

    await tamper(fresh_conn, tenant, events[7]["id"], 'metadata = \'{"actor": "someone"}\'')
    found = await digest(client, tenant, events=len(events), cursor=fast["cursor"])
    assert found["digest"] != fast["digest"]
    log = (await client.get("/v1/events", headers=tenant.headers, params={"limit": 10})).json()
    assert found["mismatch"] == log["items"][9]["cursor"]  # the first checkpoint after the edit
