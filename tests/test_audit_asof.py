"""as_of: what the ledger knew at a cursor (transaction time), what had happened by a time
(valid time), both replayed with the projector's own fold."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from ledger.audit.asof import parse_as_of
from ledger.errors import InvalidInput
from ledger.scenario import Scenario
from ledger.store.cursor import Cursor
from ledger.store.database import Connection, Pool
from tests.conftest import Tenant, make_tenant
from tests.samples import event
from tests.test_api_events import assert_problem, post
from tests.test_audit_verify import projected
from tests.test_projections import RECENT, a_small_network, grant

Client = AsyncTestClient[Litestar]


async def read(client: Client, tenant: Tenant, path: str) -> tuple[Any, str]:
    response = await client.get(path, headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json(), response.headers["Ledger-Cursor"]


def at(hours: int) -> str:
    return quote((RECENT + timedelta(hours=hours)).isoformat())


async def test_a_balance_as_of_a_past_cursor_is_the_balance_read_back_then(
    client: Client, pool: Pool, tenant: Tenant
) -> None:
    appended = await projected(client, pool, tenant, a_small_network())
    then: dict[str, tuple[Any, str]] = {}
    for path in [
        "/v1/people/ana/balances",
        "/v1/people/ana",
        "/v1/relationships/ana/ben",
        "/v1/people/ana/timeline",
        "/v1/relationships/ana/ben/timeline",
        "/v1/people/ana/reconnect",
        "/v1/people/ana/relationships?sort=last_contact",
    ]:
        then[path] = await read(client, tenant, path)
    cursor_then = then["/v1/people/ana/balances"][1]
    assert Cursor.decode(cursor_then) >= Cursor.decode(appended)

    # Later: more favors, and a policy change that reweights every advice favor after it.
    later = [
        grant("ana", "ben", "advice", at=100),
        event("policy.changed", {"weights": {"advice": 4}}, at=99, start=RECENT),
        grant("dev", "ana", "money", at=101),
    ]
    await projected(client, pool, tenant, later)
    now, _ = await read(client, tenant, "/v1/people/ana/balances")
    assert now != then["/v1/people/ana/balances"][0]

    for path, (body, cursor) in then.items():
        joined = "&" if "?" in path else "?"
        past, reflected = await read(client, tenant, f"{path}{joined}as_of={cursor}")
        assert reflected == cursor
        if path == "/v1/relationships/ana/ben":
            same = ("given", "received", "net", "stage", "contacts", "contacts_by_type")
            assert {k: past[k] for k in same} == {k: body[k] for k in same}
            assert past["first_contact_at"] == body["first_contact_at"]
        elif path == "/v1/people/ana/relationships?sort=last_contact":
            assert [r["b"] for r in past["items"]] == [r["b"] for r in body["items"]]
            assert [r["given"] for r in past["items"]] == [r["given"] for r in body["items"]]
        elif path == "/v1/people/ana":
            assert {k: v for k, v in past.items() if k != "connections"} == {
                k: v for k, v in body.items() if k != "connections"
            }
        else:
            assert past == body, path
    # The append's own cursor is a place in the log too.
    by_append, reflected = await read(client, tenant, f"/v1/people/ana/balances?as_of={appended}")
    assert by_append == then["/v1/people/ana/balances"][0] and reflected == appended


async def test_as_of_a_time_counts_what_happened_by_then_not_what_was_recorded(
    client: Client, pool: Pool, tenant: Tenant
) -> None:
    happened_late = grant("ben", "ana", "referral", at=100)  # recorded first
    first = await projected(client, pool, tenant, [happened_late])
    backfilled = grant("ana", "ben", "advice", at=1)  # happened first, recorded later
    await projected(client, pool, tenant, [backfilled])

    by_time, cursor = await read(client, tenant, f"/v1/people/ana/balances?as_of={at(50)}")
    assert by_time["items"] == [{"counterparty": "ben", "given": 1.0, "received": 0.0, "net": 1.0}]
    head, head_cursor = await read(client, tenant, "/v1/people/ana/balances")
    assert cursor == head_cursor  # a time is read with everything the log knows now
    by_cursor, _ = await read(client, tenant, f"/v1/people/ana/balances?as_of={first}")
    assert by_cursor["items"] == [
        {"counterparty": "ben", "given": 0.0, "received": 3.0, "net": -3.0}
    ]
    timeline, _ = await read(client, tenant, f"/v1/people/ana/timeline?as_of={at(50)}")
    assert [e["id"] for e in timeline["items"]] == [backfilled["id"]]
    everything, _ = await read(client, tenant, f"/v1/people/ana/balances?as_of={at(200)}")
    assert everything == head
    # Before anything happened, nobody is known.
    before = await client.get(f"/v1/people/ana/balances?as_of={at(-1)}", headers=tenant.headers)
    assert_problem(before, 404, "person")
    # A `+` sent unescaped in the query string arrives as a space: still understood.
    plus = (RECENT + timedelta(hours=50)).isoformat()
    assert "+00:00" in plus
    unescaped, _ = await read(client, tenant, f"/v1/people/ana/balances?as_of={plus}")
    assert unescaped == by_time


async def test_a_policy_change_as_of_the_time_it_did_not_yet_hold(
    client: Client, pool: Pool, tenant: Tenant
) -> None:
    await projected(
        client,
        pool,
        tenant,
        [
            grant("ben", "ana", "advice", at=0),
            grant("ben", "ana", "advice", at=20),
            event("policy.changed", {"weights": {"advice": 5}}, at=10, start=RECENT),
        ],
    )
    live, _ = await read(client, tenant, "/v1/relationships/ana/ben")
    assert live["received"] == 6.0  # 1 before the change, 5 after
    before_change, _ = await read(client, tenant, f"/v1/relationships/ana/ben?as_of={at(15)}")
    assert before_change["received"] == 1.0


async def test_replays_of_a_generated_network_equal_the_live_reads(
    client: Client, pool: Pool, tenant: Tenant
) -> None:
    """Declines and consents name one person: the replay must find their streams."""
    generated = [g.wire for g in Scenario(people=20, seed=3).events(600)]
    await projected(client, pool, tenant, generated)
    for person in sorted({p for e in generated for p in _people(e)})[:12]:
        for path in [
            f"/v1/people/{person}/balances?limit=1000",
            f"/v1/people/{person}/timeline?limit=1000",
        ]:
            live, cursor = await read(client, tenant, path)
            replayed, reflected = await read(client, tenant, f"{path}&as_of={cursor}")
            assert replayed == live and reflected == cursor
    for a, b in [("u0", "u1"), ("u0", "u2"), ("u3", "u1")]:
        path = f"/v1/relationships/{a}/{b}/timeline?limit=1000"
        live, cursor = await read(client, tenant, path)
        replayed, _ = await read(client, tenant, f"{path}&as_of={cursor}")
        assert replayed == live


def _people(wire: dict[str, Any]) -> list[str]:
    data = wire["data"]
    found = [v for k, v in data.items() if isinstance(v, str) and k in PERSON_FIELDS]
    return found + list(data.get("participants", []))


PERSON_FIELDS = {"from", "to", "giver", "receiver", "requester", "asked_of", "by", "party"}


async def test_replayed_timelines_paginate(client: Client, pool: Pool, tenant: Tenant) -> None:
    cursor = await projected(
        client, pool, tenant, [grant("ana", "ben", "advice", at=h) for h in range(5)]
    )
    ids: list[str] = []
    first = f"/v1/relationships/ana/ben/timeline?limit=2&as_of={cursor}"
    path = first
    for _ in range(5):
        page, _ = await read(client, tenant, path)
        ids += [e["id"] for e in page["items"]]
        if page["next_cursor"] is None:
            break
        path = f"{first}&cursor={page['next_cursor']}"
    assert len(ids) == len(set(ids)) == 5


@pytest.mark.parametrize(
    "as_of",
    [
        "yesterday",
        "2025-03-01T09:00:00",  # no zone
        "2025-03-01",  # no time
        "2025-13-01T09:00:00Z",  # no such month
        "c1!!",
        Cursor(2**40, 7).encode(),  # well formed, but no place in this tenant's log
    ],
)
async def test_as_of_that_is_neither_a_cursor_nor_a_time_is_refused(
    client: Client, pool: Pool, tenant: Tenant, as_of: str
) -> None:
    await projected(client, pool, tenant, a_small_network())
    for path in ["/v1/people/ana/balances", "/v1/relationships/ana/ben", "/v1/people/ana/timeline"]:
        response = await client.get(f"{path}?as_of={quote(as_of)}", headers=tenant.headers)
        assert_problem(response, 422, "as_of")


async def test_another_tenants_cursor_is_not_a_place_in_this_log(
    client: Client, pool: Pool, tenant: Tenant, other_tenant: Tenant
) -> None:
    await projected(client, pool, tenant, a_small_network())
    theirs = await projected(client, pool, other_tenant, a_small_network())
    response = await client.get(f"/v1/people/ana/balances?as_of={theirs}", headers=tenant.headers)
    body = assert_problem(response, 422, "as_of")
    assert "this tenant" in body["detail"]


async def test_as_of_needs_the_audit_scope_besides_projections_read(
    client: Client, pool: Pool, tenant: Tenant
) -> None:
    cursor = await projected(client, pool, tenant, a_small_network())
    reader = await make_tenant(pool, ["projections:read", "events:write"])
    reader_cursor = (await post(client, reader, a_small_network())).json()["cursor"]
    plain = await client.get(
        "/v1/people/ana/balances", headers={**reader.headers, "Ledger-Min-Cursor": reader_cursor}
    )
    assert plain.status_code == 200
    refused = await client.get(
        f"/v1/people/ana/balances?as_of={reader_cursor}", headers=reader.headers
    )
    assert assert_problem(refused, 403)["required_scope"] == "audit"
    auditor = await make_tenant(pool, ["audit"])
    del cursor
    no_reads = await client.get(f"/v1/people/ana/balances?as_of={at(1)}", headers=auditor.headers)
    assert assert_problem(no_reads, 403)["required_scope"] == "projections:read"


async def test_unknown_people_as_of(client: Client, pool: Pool, tenant: Tenant) -> None:
    cursor = await projected(client, pool, tenant, a_small_network())
    nobody = f"nobody-{uuid.uuid4().hex[:4]}"
    for path, field in [
        (f"/v1/people/{nobody}/balances", "person"),
        (f"/v1/relationships/ana/{nobody}", "b"),
        (f"/v1/relationships/{nobody}/ana/timeline", "a"),
    ]:
        response = await client.get(f"{path}?as_of={cursor}", headers=tenant.headers)
        assert_problem(response, 404, field)
    strangers, _ = await read(client, tenant, f"/v1/relationships/ben/dev?as_of={cursor}")
    assert strangers["stage"] == "stranger"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-01T09:00:00Z", "2025-03-01T09:00:00+00:00"),
        ("2025-03-01t09:00:00z", "2025-03-01T09:00:00+00:00"),
        ("2025-03-01T09:00:00.123456-05:30", "2025-03-01T09:00:00.123456-05:30"),
        ("2025-03-01T09:00:00 02:00", "2025-03-01T09:00:00+02:00"),
    ],
)
def test_rfc_3339_times_with_their_zone(text: str, expected: str) -> None:
    parsed = parse_as_of(text)
    assert isinstance(parsed, datetime) and parsed.isoformat() == expected


def test_a_cursor_is_a_cursor() -> None:
    assert parse_as_of(Cursor(12, 34).encode()) == Cursor(12, 34)
    with pytest.raises(InvalidInput) as refused:
        parse_as_of("2025-03-01T09:00:00+0200")  # ISO 8601, but not RFC 3339
    assert refused.value.field == "as_of" and not refused.value.in_body


async def test_a_cursor_beyond_the_readable_log_is_503_until_it_is_readable(
    client: Client, pool: Pool, tenant: Tenant, fresh_conn: Connection
) -> None:
    """An older transaction still running holds the commit horizon before a committed event."""
    await projected(client, pool, tenant, a_small_network())
    holder = fresh_conn.transaction()
    await holder.start()
    await fresh_conn.fetchval("SELECT pg_current_xact_id()")  # takes an xid older than the append
    try:
        response = await post(client, tenant, [grant("ana", "ben", "advice", at=200)])
        cursor = response.json()["cursor"]
        early = await client.get(f"/v1/people/ana/balances?as_of={cursor}", headers=tenant.headers)
        assert_problem(early, 503, "as_of")
        assert early.headers["Retry-After"]
    finally:
        await holder.rollback()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        later = await client.get(f"/v1/people/ana/balances?as_of={cursor}", headers=tenant.headers)
        if later.status_code == 200:
            break
        await asyncio.sleep(0.05)  # other transactions on the server may hold it a moment
    assert later.status_code == 200, later.text
    assert {b["counterparty"]: b["given"] for b in later.json()["items"]}["ben"] == 2.5
