"""Verify: a healthy tenant re-derives to its live tables; tampering is named, row and column."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from ledger.audit.verify import verify
from ledger.store.cursor import Cursor
from ledger.store.database import Pool
from tests.conftest import Tenant, make_tenant
from tests.samples import event
from tests.test_api_events import assert_problem, post
from tests.test_cli import env_with, run
from tests.test_projections import _fixed_history, a_small_network, settle
from tests.test_violations import a_networking_story
from tests.test_violations import settle as settle_violations

Client = AsyncTestClient[Litestar]


async def projected(client: Client, pool: Pool, tenant: Tenant, events: list[Any]) -> str:
    """Append ``events`` and wait until the projections include them."""
    response = await post(client, tenant, events)
    assert response.status_code == 201, response.text
    cursor: str = response.json()["cursor"]
    async with pool.acquire() as conn:
        await settle(conn, tenant.id, Cursor.decode(cursor))
    return cursor


async def verified(client: Client, tenant: Tenant) -> dict[str, Any]:
    response = await client.post("/v1/audit/verify", headers=tenant.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_healthy_tenant_has_no_differences(
    client: Client, pool: Pool, tenant: Tenant
) -> None:
    history = _fixed_history() + a_small_network()
    cursor = await projected(client, pool, tenant, history)
    body = await verified(client, tenant)
    assert body["differences"] == []
    assert body["truncated"] is False
    assert body["checked_events"] == len(history)
    network, violations = body["projections"]
    assert network["projection"] == "network"
    assert network["checked_events"] == len(history)
    assert Cursor.decode(network["cursor"]) >= Cursor.decode(cursor)
    assert violations["projection"] == "violations" and violations["differences"] == 0


async def test_tampered_violations_and_rule_facts_are_named(
    client: Client, pool: Pool, tenant: Tenant
) -> None:
    story = a_networking_story()
    cursor = await projected(client, pool, tenant, story)
    async with pool.acquire() as conn:
        await settle_violations(conn, tenant.id, Cursor.decode(cursor))
    assert (await verified(client, tenant))["differences"] == []
    async with pool.acquire() as conn:  # as superuser, behind the application's back
        target = await conn.fetchrow(
            "SELECT id FROM violations WHERE tenant_id = $1 AND code = 'E104'", tenant.id
        )
        assert target is not None
        await conn.execute(
            "UPDATE violations SET offender = 'ben' WHERE tenant_id = $1 AND id = $2",
            tenant.id,
            target["id"],
        )
        await conn.execute(
            "DELETE FROM violations WHERE tenant_id = $1 AND code = 'E111'", tenant.id
        )
        dropped = await conn.fetchrow(
            "DELETE FROM rule_facts WHERE ctid = (SELECT ctid FROM rule_facts"
            " WHERE tenant_id = $1 AND kind = 'granted' LIMIT 1) RETURNING a, b, kind",
            tenant.id,
        )
        assert dropped is not None
    found = (await verified(client, tenant))["differences"]
    by_table: dict[str, list[dict[str, Any]]] = {}
    for d in found:
        assert d["projection"] == "violations"
        by_table.setdefault(d["table"], []).append(d)
    offender = next(d for d in by_table["violations"] if d["column"] == "offender")
    assert offender["key"] == {"id": str(target["id"])}
    assert (offender["live"], offender["expected"]) == ("ben", "eve")
    missing = [d for d in by_table["violations"] if d["column"] is None]
    assert [d["expected"]["code"] for d in missing] == ["E111"] and missing[0]["live"] is None
    (fact,) = by_table["rule_facts"]
    assert fact["live"] is None and fact["key"]["kind"] == dropped["kind"] == "granted"
    assert (fact["key"]["a"], fact["key"]["b"]) == (dropped["a"], dropped["b"])


async def test_an_empty_tenant_verifies_clean(client: Client, tenant: Tenant) -> None:
    body = await verified(client, tenant)
    assert body["differences"] == [] and body["checked_events"] == 0


async def test_a_corrupted_pair_is_named_with_live_and_expected_values(
    client: Client, pool: Pool, tenant: Tenant, other_tenant: Tenant
) -> None:
    await projected(client, pool, tenant, a_small_network())
    await projected(client, pool, other_tenant, a_small_network())
    async with pool.acquire() as conn:  # as superuser, behind the application's back
        await conn.execute(
            "UPDATE network_pairs SET given_ab = given_ab + 10, contacts = 99"
            " WHERE tenant_id = $1 AND a = 'ana' AND b = 'ben'",
            tenant.id,
        )
    body = await verified(client, tenant)
    differences = {d["column"]: d for d in body["differences"]}
    assert differences.keys() == {"given_ab", "contacts"}
    given = differences["given_ab"]
    assert given["table"] == "network_pairs" and given["projection"] == "network"
    assert given["key"] == {"a": "ana", "b": "ben"}
    assert (given["live"], given["expected"]) == (11.5, 1.5)  # ana gave ben advice worth 1.5
    assert (differences["contacts"]["live"], differences["contacts"]["expected"]) == (99, 3)
    assert (await verified(client, other_tenant))["differences"] == []  # tenants stay apart


async def test_deleted_rows_are_reported_missing(
    client: Client, pool: Pool, tenant: Tenant
) -> None:
    await projected(client, pool, tenant, a_small_network())
    async with pool.acquire() as conn:
        await conn.execute(
            "DELETE FROM network_pairs WHERE tenant_id = $1 AND a = 'ana' AND b = 'cleo'",
            tenant.id,
        )
        await conn.execute(
            "DELETE FROM timeline_person WHERE tenant_id = $1 AND person = 'dev'", tenant.id
        )
        await conn.execute(
            "INSERT INTO network_parties (tenant_id, generation, stream, parties)"
            " VALUES ($1, 1, 'favor-made-up', ARRAY['x', 'y'])",
            tenant.id,
        )
    body = await verified(client, tenant)
    by_table: dict[str, list[dict[str, Any]]] = {}
    for difference in body["differences"]:
        by_table.setdefault(difference["table"], []).append(difference)
    [pair] = by_table["network_pairs"]
    assert pair["key"] == {"a": "ana", "b": "cleo"} and pair["column"] is None
    assert pair["live"] is None and pair["expected"]["given_ba"] == 3.0  # cleo's referral
    [dev] = by_table["timeline_person"]
    assert dev["key"]["person"] == "dev" and dev["live"] is None
    [made_up] = by_table["network_parties"]
    assert made_up["key"] == {"stream": "favor-made-up"}
    assert made_up["live"] == {"parties": ["x", "y"]} and made_up["expected"] is None


async def test_a_wrong_checkpoint_count_is_reported(
    client: Client, pool: Pool, tenant: Tenant
) -> None:
    events = a_small_network()
    await projected(client, pool, tenant, events)
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE projection_state SET events_applied = 1"
            " WHERE tenant_id = $1 AND projection = 'network'",
            tenant.id,
        )
    [difference] = (await verified(client, tenant))["differences"]
    assert difference["table"] == "projection_state"
    assert (difference["column"], difference["live"], difference["expected"]) == (
        "events_applied",
        1,
        len(events),
    )


async def test_verify_does_not_race_the_live_projector(
    client: Client, pool: Pool, tenant: Tenant
) -> None:
    """Appends keep coming while verify runs: it checks up to the checkpoint it sees."""
    await projected(client, pool, tenant, _fixed_history())
    stop = asyncio.Event()

    async def keep_writing() -> int:
        written = 0
        while not stop.is_set():
            sent = event("message.sent", {"from": "p1", "to": "p2", "kind": "reply"}, at=written)
            assert (await post(client, tenant, [sent])).status_code == 201
            written += 1
            await asyncio.sleep(0.001)
        return written

    writer = asyncio.create_task(keep_writing())
    checked = []
    try:
        for _ in range(8):
            async with pool.acquire() as conn:
                report = await verify(conn, tenant.id)
            assert report.differences == []
            checked.append(report.checked_events)
    finally:
        stop.set()
        written = await writer
    assert written > 0
    assert checked == sorted(checked)  # each verify saw at least what the previous one did


async def test_verify_needs_the_audit_scope(client: Client, pool: Pool) -> None:
    reader = await make_tenant(pool, ["projections:read", "events:read"])
    body = assert_problem(await client.post("/v1/audit/verify", headers=reader.headers), 403)
    assert body["required_scope"] == "audit"
    assert_problem(await client.post("/v1/audit/verify"), 401, "Authorization")


def test_the_verify_command_exits_1_on_differences(database_url: str) -> None:
    env = env_with(LEDGER_DATABASE_URL=database_url)
    run(env, "keys", "create", "--tenant", "verified-co")
    healthy = run(env, "verify", "--tenant", "verified-co")
    assert "verified network for verified-co: 0 events" in healthy.stdout
    assert "0 difference(s)" in healthy.stdout
    assert "verify verified-co [" in healthy.stderr  # the progress bar

    async def tamper() -> None:
        import asyncpg

        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "INSERT INTO network_pairs (tenant_id, generation, a, b, given_ab, given_ba,"
                " favors_ab, favors_ba, contacts, strength_log2, counts)"
                " SELECT tenant_id, 1, 'eve', 'mal', 5, 0, 1, 0, 1, 0, '{}' FROM tenants"
                " WHERE name = 'verified-co'"
            )
        finally:
            await conn.close()

    asyncio.run(tamper())
    tampered = run(env, "verify", "--tenant", "verified-co", check=False)
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    assert 'DIFF verified-co network_pairs {"a":"eve","b":"mal"}: unexpected row' in tampered.stdout
    missing = run(env, "verify", "--tenant", "nobody-co", check=False)
    assert missing.returncode == 2 and "no tenant named 'nobody-co'" in missing.stderr
