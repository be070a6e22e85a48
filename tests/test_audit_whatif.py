"""What-if: the balances another policy would give, without touching the live tables."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from ledger.projections.projector import state_of
from ledger.store.database import Pool
from tests.conftest import Tenant, make_tenant
from tests.samples import event
from tests.test_api_events import assert_problem, count_events
from tests.test_audit_verify import projected, verified
from tests.test_projections import RECENT, dump, grant

Client = AsyncTestClient[Litestar]


async def what_if(client: Client, tenant: Tenant, policy: Any, query: str = "") -> Any:
    response = await client.post(f"/v1/audit/what-if{query}", json=policy, headers=tenant.headers)
    assert response.status_code == 200, response.text
    assert response.headers["Ledger-Cursor"].startswith("c1")
    return response.json()


async def test_only_the_balances_the_policy_touches_differ(
    client: Client, pool: Pool, tenant: Tenant
) -> None:
    await projected(
        client,
        pool,
        tenant,
        [
            grant("ben", "ana", "advice", at=0),  # the policy's 1
            grant("ana", "cleo", "money", at=1),  # the policy's 3: money is not changed
            grant("dev", "ana", "advice", at=2, weight=2),  # its own weight: no policy applies
            event("message.sent", {"from": "ana", "to": "eve", "kind": "reply"}, at=3),
        ],
    )
    body = await what_if(client, tenant, {"weights": {"advice": 4}})
    assert body["items"] == [
        {
            "a": "ana",
            "b": "ben",
            "current": {"given": 0.0, "received": 1.0, "net": -1.0},
            "what_if": {"given": 0.0, "received": 4.0, "net": -4.0},
        }
    ]
    assert body["checked_events"] == 3  # the granted favors: nothing else carries weight
    assert body["next_cursor"] is None
    same = await what_if(client, tenant, {"weights": {"advice": 1}, "dormancy_days": 30})
    assert same["items"] == []


async def test_the_tenants_own_changes_hold_where_the_what_if_is_silent(
    client: Client, pool: Pool, tenant: Tenant
) -> None:
    await projected(
        client,
        pool,
        tenant,
        [
            grant("ben", "ana", "advice", at=0),
            event("policy.changed", {"weights": {"advice": 2}}, at=10, start=RECENT),
            grant("ben", "ana", "advice", at=20),
            grant("ben", "ana", "money", at=30),
        ],
    )
    live = (await client.get("/v1/relationships/ben/ana", headers=tenant.headers)).json()
    assert live["given"] == 1 + 2 + 3
    money = await what_if(client, tenant, {"weights": {"money": 9}})
    [change] = money["items"]
    assert change["current"] == {"given": 0.0, "received": 6.0, "net": -6.0}  # a = ana
    assert change["what_if"] == {"given": 0.0, "received": 12.0, "net": -12.0}  # 1 + 2 + 9
    advice = await what_if(client, tenant, {"weights": {"advice": 5}})
    assert advice["items"][0]["what_if"]["received"] == 5 + 5 + 3


async def test_live_tables_are_unchanged_after_a_what_if(
    client: Client, pool: Pool, tenant: Tenant
) -> None:
    await projected(
        client,
        pool,
        tenant,
        [grant("ben", "ana", "advice", at=h) for h in range(4)] + [grant("ana", "ben", "money", 9)],
    )
    async with pool.acquire() as conn:
        state = await state_of(conn, tenant.id)
        before = await dump(conn, tenant.id, state.generation)
    events_before = await count_events(pool, tenant)
    body = await what_if(client, tenant, {"weights": {"advice": 10, "money": 0}})
    assert body["items"][0]["what_if"] == {"given": 0.0, "received": 40.0, "net": -40.0}
    async with pool.acquire() as conn:
        assert await state_of(conn, tenant.id) == state
        assert await dump(conn, tenant.id, state.generation) == before
    assert await count_events(pool, tenant) == events_before
    assert (await verified(client, tenant))["differences"] == []


async def test_pages_of_changes(client: Client, pool: Pool, tenant: Tenant) -> None:
    givers = ["b1", "b2", "b3", "b4", "b5"]
    await projected(
        client, pool, tenant, [grant(g, "ana", "review", at=i) for i, g in enumerate(givers)]
    )
    seen: list[str] = []
    query = "?limit=2"
    for _ in range(5):
        body = await what_if(client, tenant, {"weights": {"review": 7}}, query)
        seen += [item["b"] if item["a"] == "ana" else item["a"] for item in body["items"]]
        if body["next_cursor"] is None:
            break
        query = f"?limit=2&cursor={body['next_cursor']}"
    assert seen == givers


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"weights": {"advice": -1}}, "weights"),
        ({"weights": {"gold": 1}}, "weights"),
        ({"dormancy_days": 0}, "dormancy_days"),
        ({"conduit_min_asks": "three"}, "conduit_min_asks"),
        ({"dormancy": 30}, "dormancy"),
        ([1, 2], None),
    ],
)
async def test_a_policy_that_could_not_be_an_event_is_refused(
    client: Client, tenant: Tenant, policy: Any, field: str | None
) -> None:
    response = await client.post("/v1/audit/what-if", json=policy, headers=tenant.headers)
    body = assert_problem(response, 422, field)
    if field is not None:
        assert body["pointer"] == f"/{field}"


async def test_what_if_errors(client: Client, pool: Pool, tenant: Tenant) -> None:
    not_json = await client.post(
        "/v1/audit/what-if",
        content=b"{weights",
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert "not valid JSON" in assert_problem(not_json, 422)["detail"]
    bad_cursor = await client.post("/v1/audit/what-if?cursor=zz", json={}, headers=tenant.headers)
    assert_problem(bad_cursor, 422, "cursor")
    reader = await make_tenant(pool, ["projections:read", "events:write"])
    refused = await client.post("/v1/audit/what-if", json={}, headers=reader.headers)
    assert assert_problem(refused, 403)["required_scope"] == "audit"


async def test_an_unknown_weight_kind_is_named_in_an_appended_policy_too(
    client: Client, tenant: Tenant
) -> None:
    """The same decoding names a mapping's bad key by the mapping (fixed for both)."""
    bad = event("policy.changed", {"weights": {"gold": 1}})
    response = await client.post("/v1/events", json={"events": [bad]}, headers=tenant.headers)
    body = assert_problem(response, 422, "events[0].data.weights")
    assert body["pointer"] == "/events/0/data/weights"


async def test_violations_another_policy_would_add_or_clear(
    client: Client, pool: Pool, tenant: Tenant
) -> None:
    from tests.test_rules import favor_requested, history, meeting

    cursor = await projected(
        client,
        pool,
        tenant,
        history(
            (0, meeting("ana", "ben", purpose="get_to_know")),
            (30, favor_requested("ana", "ben", "referral")),  # 30 h after: no E106 at 24 h
            (100, meeting("cleo", "dev", purpose="catch_up")),
            (110, favor_requested("cleo", "dev", "review")),  # 10 h after: E106 at 24 h
        ),
    )
    wider = await what_if(client, tenant, {"big_ask_window_hours": 48})
    added = wider["violations"]["only_what_if"]
    assert [(v["code"], v["offender"]) for v in added] == [("E106", "ana")]
    assert "within 48 hours" in added[0]["explanation"]
    assert wider["violations"]["only_current"] == [] and not wider["violations"]["truncated"]
    narrower = await what_if(client, tenant, {"big_ask_window_hours": 5})
    cleared = narrower["violations"]["only_current"]
    assert [(v["code"], v["offender"]) for v in cleared] == [("E106", "cleo")]
    assert narrower["violations"]["only_what_if"] == []
    live = await client.get(
        "/v1/violations",
        params={"code": "E106"},
        headers={**tenant.headers, "Ledger-Min-Cursor": cursor},
    )
    assert [v["offender"] for v in live.json()["items"]] == ["cleo"]  # nothing was written
