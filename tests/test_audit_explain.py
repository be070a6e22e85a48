"""Explain: the events behind a balance, each weight and where it came from, running totals."""

from __future__ import annotations

import math
import random
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from litestar import Litestar
from litestar.testing import AsyncTestClient

from ledger.scenario import Scenario
from ledger.store.database import Pool
from tests.conftest import Tenant, make_tenant
from tests.samples import event
from tests.test_api_events import assert_problem
from tests.test_audit_verify import projected
from tests.test_projections import RECENT, grant

Client = AsyncTestClient[Litestar]


async def get_json(client: Client, tenant: Tenant, path: str) -> tuple[dict[str, Any], str]:
    response = await client.get(path, headers=tenant.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body, response.headers["Ledger-Cursor"]


async def test_each_favor_with_its_weight_policy_and_running_totals(
    client: Client, pool: Pool, tenant: Tenant
) -> None:
    policy = event("policy.changed", {"weights": {"advice": 5}}, at=30, start=RECENT)
    events = [
        grant("ben", "ana", "introduction", at=0),  # the policy's default: 3
        event(
            "message.sent", {"from": "ana", "to": "ben", "kind": "thank_you"}, at=1, start=RECENT
        ),
        grant("ana", "ben", "advice", at=24, weight=1.5),  # its own weight
        policy,
        grant("ana", "ben", "advice", at=48),  # the changed policy: 5
        grant("ana", "cleo", "money", at=50),  # someone else's balance
    ]
    random.Random(7).shuffle(events)  # arrival order must not matter
    await projected(client, pool, tenant, events)

    body, cursor = await get_json(client, tenant, "/v1/audit/relationships/ana/ben/explain")
    steps = [
        (s["giver"], s["receiver"], s["kind"], s["weight"], s["weight_from"], s["policy_version"])
        for s in body["items"]
    ]
    assert steps == [
        ("ben", "ana", "introduction", 3.0, "policy", 0),
        ("ana", "ben", "advice", 1.5, "event", 0),
        ("ana", "ben", "advice", 5.0, "policy", 1),
    ]
    totals = [(s["given"], s["received"], s["net"]) for s in body["items"]]
    assert totals == [(0.0, 3.0, -3.0), (1.5, 3.0, -1.5), (6.5, 3.0, 3.5)]
    assert body["items"][2]["policy_change_id"] == policy["id"]
    assert body["items"][0]["policy_change_id"] is None
    assert body["next_cursor"] is None
    occurred = [s["occurred_at"] for s in body["items"]]
    assert occurred == sorted(occurred)

    live, live_cursor = await get_json(client, tenant, "/v1/relationships/ana/ben")
    assert (live["given"], live["received"], live["net"]) == totals[-1]
    assert cursor == live_cursor
    from_ben, _ = await get_json(client, tenant, "/v1/audit/relationships/ben/ana/explain")
    assert [(s["given"], s["received"]) for s in from_ben["items"]][-1] == (3.0, 6.5)


async def test_final_totals_equal_the_live_balance_on_a_generated_network(
    client: Client, pool: Pool, tenant: Tenant
) -> None:
    generated = [g.wire for g in Scenario(people=25, seed=9).events(700)]
    for i in range(0, len(generated), 350):
        await projected(client, pool, tenant, generated[i : i + 350])
    balances, _ = await get_json(client, tenant, "/v1/people/u0/balances?limit=1000")
    assert balances["items"], "the most active person has balances"
    for balance in balances["items"][:8]:
        other = balance["counterparty"]
        body, _ = await get_json(
            client, tenant, f"/v1/audit/relationships/u0/{other}/explain?limit=1000"
        )
        last = body["items"][-1]
        for field in ("given", "received", "net"):
            assert math.isclose(last[field], balance[field], rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(
            sum(s["weight"] for s in body["items"]), balance["given"] + balance["received"]
        )


async def test_pages_follow_the_running_totals(client: Client, pool: Pool, tenant: Tenant) -> None:
    await projected(client, pool, tenant, [grant("ana", "ben", "advice", at=h) for h in range(5)])
    seen: list[dict[str, Any]] = []
    path = "/v1/audit/relationships/ana/ben/explain?limit=2"
    while True:
        body, _ = await get_json(client, tenant, path)
        seen += body["items"]
        if body["next_cursor"] is None:
            break
        path = f"/v1/audit/relationships/ana/ben/explain?limit=2&cursor={body['next_cursor']}"
    assert [s["given"] for s in seen] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert len({s["event_id"] for s in seen}) == 5


async def test_explain_errors(client: Client, pool: Pool, tenant: Tenant) -> None:
    await projected(client, pool, tenant, [grant("ana", "ben", "advice", at=0)])
    base = "/v1/audit/relationships"
    for path, status, field in [
        (f"{base}/ana/nobody/explain", 404, "b"),
        (f"{base}/nobody/ana/explain", 404, "a"),
        (f"{base}/ana/ana/explain", 422, "b"),
        (f"{base}/ana/ben/explain?cursor=zz", 422, "cursor"),
        (f"{base}/ana/ben/explain?limit=0", 422, "limit"),
        (f"{base}/ana/ben/explain?limit=1001", 422, "limit"),
        (f"{base}/ana/ben/explain?as_of=yesterday", 422, "as_of"),
    ]:
        assert_problem(await client.get(path, headers=tenant.headers), status, field)
    reader = await make_tenant(pool, ["projections:read"])
    body = assert_problem(await client.get(f"{base}/ana/ben/explain", headers=reader.headers), 403)
    assert body["required_scope"] == "audit"
    stranger = await get_json(client, tenant, f"{base}/ana/ben/explain")
    assert len(stranger[0]["items"]) == 1


async def test_explain_as_of_stops_where_the_ledger_stood(
    client: Client, pool: Pool, tenant: Tenant
) -> None:
    first = await projected(
        client, pool, tenant, [grant("ben", "ana", "advice", at=0), grant("ana", "ben", "money", 2)]
    )
    then, _ = await get_json(client, tenant, "/v1/relationships/ana/ben")
    await projected(client, pool, tenant, [grant("ben", "ana", "review", at=1)])  # back-filled
    base = "/v1/audit/relationships/ana/ben/explain"
    by_cursor, reflected = await get_json(client, tenant, f"{base}?as_of={first}")
    assert reflected == first
    last = by_cursor["items"][-1]
    assert len(by_cursor["items"]) == 2
    assert (last["given"], last["received"], last["net"]) == (
        then["given"],
        then["received"],
        then["net"],
    )
    now, _ = await get_json(client, tenant, base)
    assert [s["kind"] for s in now["items"]] == ["advice", "review", "money"]  # as it happened
    when = quote((RECENT + timedelta(minutes=90)).isoformat())
    by_time, _ = await get_json(client, tenant, f"{base}?as_of={when}")
    assert [s["kind"] for s in by_time["items"]] == ["advice", "review"]
