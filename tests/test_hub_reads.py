"""A hub's reads walk indexes a page at a time, and say what a full read would.

A hub meets two hundred people (two meetings of a hundred at the same moment:
ties), trades favors with some, only writes to others, and is asked favors by
strangers. Its balances, each relationship's cadence and its violations, read
live a page at a time, must equal what the in-memory replay (``as_of``) and the
full lists say.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from alembic import command
from litestar import Litestar
from litestar.testing import AsyncTestClient

from ledger.projections.projector import rebuild
from ledger.rules.projection import VIOLATIONS
from ledger.store.database import Pool
from ledger.store.migrate import alembic_config, upgrade
from tests.conftest import Tenant, database_at, make_tenant
from tests.samples import event
from tests.test_api_events import assert_problem, post
from tests.test_projections import read_own_write
from tests.test_rules import favor_requested, message

Client = AsyncTestClient[Litestar]

HUB = "hub"
RECENT = (datetime.now(UTC) - timedelta(days=20)).replace(minute=0, second=0, microsecond=0)
# Names on both sides of "hub" (pairs are stored a < b), in an order where code
# points and most collations disagree ("Zed" < "anna" < "Émile" by code point).
PEOPLE = [f"{prefix}{n:03d}" for prefix in ("Zed", "anna", "zoe", "Émile") for n in range(50)]
GIVES = {p: 1.0 + i % 4 for i, p in enumerate(PEOPLE) if i % 3 == 0}  # hub gives them
GETS = {p: 2.0 + i % 5 for i, p in enumerate(PEOPLE) if i % 5 == 0}  # they give the hub


def at(hours: float) -> datetime:
    return RECENT + timedelta(hours=hours)


def hub_history() -> list[dict[str, Any]]:
    events = [
        event(
            "meeting.held",
            {
                "meeting_id": f"m-{uuid.uuid4().hex[:8]}",
                "participants": [HUB, *group],
                "initiated_by": HUB,
                "channel": "event",
                "purpose": "catch_up",
            },
            start=at(0),
        )
        for group in (PEOPLE[:99], PEOPLE[99:198])
    ]
    for person, weight in GIVES.items():
        events.append(_granted(HUB, person, weight, hours=24))
    for person, weight in GETS.items():
        events.append(_granted(person, HUB, weight, hours=48))
    # Contact only: messages strengthen some relationships and move no balance.
    for i, person in enumerate(PEOPLE[198:] + PEOPLE[::7]):
        for k in range(1 + i % 3):
            type_, data = message(HUB, person)
            events.append(event(type_, data, start=at(72 + i + k)))
    return events


def _granted(giver: str, receiver: str, weight: float, hours: float) -> dict[str, Any]:
    data = {
        "favor_id": f"g-{uuid.uuid4().hex[:8]}",
        "giver": giver,
        "receiver": receiver,
        "kind": "advice",
        "weight": weight,
    }
    return event("favor.granted", data, start=at(hours))


async def pages(
    client: Client, tenant: Tenant, path: str, limit: int, **params: Any
) -> list[dict[str, Any]]:
    """Every page of a list, in order, as answered."""
    answered: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = await client.get(path, params=query, headers=tenant.headers)
        assert response.status_code == 200, response.text
        answered.append(response.json())
        cursor = answered[-1]["next_cursor"]
        if cursor is None:
            return answered
    raise AssertionError("pagination never ended")


@pytest.fixture(scope="module")
async def hub(client: Client, pool: Pool) -> tuple[Tenant, str]:
    """A tenant with the hub's history projected; the cursor of its last append."""
    tenant = await make_tenant(pool)
    cursor = (await post(client, tenant, hub_history())).json()["cursor"]
    await read_own_write(client, tenant, f"/v1/people/{HUB}", cursor)
    return tenant, cursor


async def test_a_hubs_balances_page_by_page_are_the_whole_list(
    client: Client, hub: tuple[Tenant, str]
) -> None:
    tenant, cursor = hub
    path = f"/v1/people/{HUB}/balances"
    whole = (await pages(client, tenant, path, 1000))[0]["items"]
    expected = [
        {
            "counterparty": p,
            "given": GIVES.get(p, 0.0),
            "received": GETS.get(p, 0.0),
            "net": GIVES.get(p, 0.0) - GETS.get(p, 0.0),
        }
        for p in sorted(set(GIVES) | set(GETS))  # code point order; contact-only left out
    ]
    assert whole == expected
    assert [b["counterparty"][0] for b in whole][:: len(whole) - 1] == ["Z", "É"]

    live = await pages(client, tenant, path, 7)
    assert [b for page in live for b in page["items"]] == whole
    assert [len(page["items"]) for page in live[:-1]] == [7] * (len(live) - 1)
    # The in-memory replay pages the same way, with the same cursors.
    replayed = await pages(client, tenant, path, 7, as_of=cursor)
    assert [(p["items"], p["next_cursor"]) for p in replayed] == [
        (p["items"], p["next_cursor"]) for p in live
    ]
    # A page that ends the list says so: no cursor to an empty page.
    exact = await pages(client, tenant, path, len(whole))
    assert len(exact) == 1 and exact[0]["items"] == whole
    one_short = await pages(client, tenant, path, len(whole) - 1)
    assert [len(p["items"]) for p in one_short] == [len(whole) - 1, 1]


def _after(counterparty: str) -> str:
    return "b1" + base64.urlsafe_b64encode(counterparty.encode()).decode().rstrip("=")


async def test_balance_cursors_past_the_end_earlier_offsets_and_nonsense(
    client: Client, hub: tuple[Tenant, str]
) -> None:
    tenant, _ = hub
    path = f"/v1/people/{HUB}/balances"
    whole = (await pages(client, tenant, path, 1000))[0]["items"]
    for params in ({}, {"as_of": hub[1]}):
        past_the_end = await client.get(
            path, params={**params, "cursor": _after("\uffff")}, headers=tenant.headers
        )
        assert past_the_end.json() == {"items": [], "next_cursor": None}
        # After a counterparty that has no balance: from the next one that has.
        between = await client.get(
            path, params={**params, "cursor": _after("Zed000~"), "limit": 2}, headers=tenant.headers
        )
        assert between.json()["items"] == [b for b in whole if b["counterparty"] > "Zed000~"][:2]
        # Offsets, as balances were paged before, keep working.
        offset = "o1" + base64.urlsafe_b64encode(b"7").decode().rstrip("=")
        second = await client.get(
            path, params={**params, "cursor": offset, "limit": 7}, headers=tenant.headers
        )
        assert second.json()["items"] == whole[7:14]
        assert second.json()["next_cursor"] == _after(whole[13]["counterparty"])
    huge = "o1" + base64.urlsafe_b64encode(str(10**40).encode()).decode().rstrip("=")
    beyond = await client.get(path, params={"cursor": huge}, headers=tenant.headers)
    assert beyond.json() == {"items": [], "next_cursor": None}
    for nonsense in ("t1AAAA", "b1", "b1AA", "c1AAAAAAABu80AAAAAAAAAqg", _after("a\x00b"), "b1!!"):
        response = await client.get(path, params={"cursor": nonsense}, headers=tenant.headers)
        assert_problem(response, 422, "cursor")
    assert_problem(
        await client.get("/v1/people/nobody/balances", headers=tenant.headers), 404, "person"
    )
    unknown_paged = await client.get(
        "/v1/people/nobody/balances", params={"cursor": _after("a")}, headers=tenant.headers
    )
    assert_problem(unknown_paged, 404, "person")


async def test_each_relationships_cadence_is_its_rank_in_the_full_list(
    client: Client, hub: tuple[Tenant, str]
) -> None:
    """The live read counts its rank over an index; the list ranks everything in memory."""
    tenant, cursor = hub
    ranked = (await pages(client, tenant, f"/v1/people/{HUB}/relationships", 1000))[0]["items"]
    assert len(ranked) == len(PEOPLE)
    cadences = {r["b"]: r["cadence_days"] for r in ranked}
    assert set(cadences.values()) == {14.0, 30.0, 90.0, 180.0, 365.0}
    strengths = [r["strength"] for r in ranked]
    assert len(set(strengths)) < len(strengths) / 2, "the meetings leave many ties"

    async def cadence(a: str, b: str, **params: Any) -> float | None:
        response = await client.get(
            f"/v1/relationships/{a}/{b}", params=params, headers=tenant.headers
        )
        assert response.status_code == 200, response.text
        found: float | None = response.json()["cadence_days"]
        return found

    live = await asyncio.gather(*(cadence(HUB, person) for person in PEOPLE))
    assert dict(zip(PEOPLE, live, strict=True)) == cadences
    # From the other side the hub is their only relationship; the replay agrees.
    assert {await cadence(p, HUB) for p in PEOPLE[::25]} == {14.0}
    for person in PEOPLE[::13]:
        assert await cadence(HUB, person, as_of=cursor) == cadences[person]


async def test_strangers_have_no_cadence_and_unknown_people_are_404(
    client: Client, hub: tuple[Tenant, str]
) -> None:
    tenant, _ = hub
    path = f"/v1/relationships/{PEOPLE[0]}/{PEOPLE[-1]}"  # never met
    stranger = (await client.get(path, headers=tenant.headers)).json()
    assert (stranger["stage"], stranger["cadence_days"]) == ("stranger", None)
    for path, field in (
        (f"/v1/relationships/nobody/{HUB}", "a"),
        (f"/v1/relationships/{HUB}/nobody", "b"),
    ):
        assert_problem(await client.get(path, headers=tenant.headers), 404, field)


# --- violations ---------------------------------------------------------------------------------


async def violation_people_match(pool: Pool, tenant: Tenant) -> None:
    """violation_people holds each stored violation once per person it is about."""
    async with pool.acquire() as conn:
        stored = await conn.fetch(
            "SELECT generation, person, occurred_at, position, id FROM violation_people "
            "WHERE tenant_id = $1 ORDER BY 1, 2, 3, 4, 5",
            tenant.id,
        )
        derived = await conn.fetch(
            "SELECT DISTINCT v.generation, who.person, v.occurred_at, v.position, v.id "
            "FROM violations v, unnest(array_prepend(v.offender, v.affected)) AS who(person) "
            "WHERE v.tenant_id = $1 ORDER BY 1, 2, 3, 4, 5",
            tenant.id,
        )
    assert [tuple(r) for r in stored] == [tuple(r) for r in derived]
    assert stored


async def test_a_hubs_violations_page_in_order_through_late_arrivals_and_a_rebuild(
    client: Client, pool: Pool
) -> None:
    tenant = await make_tenant(pool)
    askers = PEOPLE[:40]
    asks = [
        event(*favor_requested(asker, HUB, "referral"), start=at(100 + i))
        for i, asker in enumerate(askers)
    ]
    # The hub asks strangers too: offender as well as affected.
    asks += [
        event(*favor_requested(HUB, other, "introduction"), start=at(200 + i))
        for i, other in enumerate(PEOPLE[100:110])
    ]
    cursor = (await post(client, tenant, asks)).json()["cursor"]
    path = f"/v1/people/{HUB}/violations"
    await read_own_write(client, tenant, f"/v1/violations?limit=1&person={HUB}", cursor)

    async def listed(**params: Any) -> list[dict[str, Any]]:
        return [v for page in await pages(client, tenant, path, 3, **params) for v in page["items"]]

    whole = await listed()
    assert {v["offender"] for v in whole} == {HUB, *askers}
    keys = [(v["occurred_at"], v["id"]) for v in whole]
    assert keys == sorted(keys)
    assert whole == await listed(as_of=cursor), "live pages equal the replay's"
    everyone = [
        v for page in await pages(client, tenant, "/v1/violations", 1000) for v in page["items"]
    ]
    assert whole == [v for v in everyone if v["offender"] == HUB or HUB in v["affected"]]
    since, until = at(110).isoformat(), at(205).isoformat()
    window = await listed(since=since, until=until, code="E101")
    assert window == [v for v in whole if since <= v["occurred_at"] < until and v["code"] == "E101"]
    assert window and len(window) < len(whole)
    await violation_people_match(pool, tenant)

    # Back-filled: the first ten askers had written to the hub before asking,
    # which clears their asks on first contact (E101): re-judged, gone from the list.
    late = [event(*message(asker, HUB), start=at(50 + i)) for i, asker in enumerate(askers[:10])]
    cursor = (await post(client, tenant, late)).json()["cursor"]
    await read_own_write(client, tenant, f"/v1/violations?limit=1&person={HUB}", cursor)
    after = await listed()
    cleared = {(v["offender"], v["code"]) for v in whole} - {
        (v["offender"], v["code"]) for v in after
    }
    assert cleared == {(asker, "E101") for asker in askers[:10]}
    assert after == await listed(as_of=cursor)
    await violation_people_match(pool, tenant)

    async with pool.acquire() as conn:
        await rebuild(conn, tenant.id, projection=VIOLATIONS)
    assert await listed() == after
    await violation_people_match(pool, tenant)


@pytest.fixture
async def database_at_0007(server_url: str) -> AsyncIterator[str]:
    async with database_at(server_url, "0007") as url:
        yield url


async def test_upgrading_lists_existing_violations_under_each_person(
    database_at_0007: str,
) -> None:
    conn = await asyncpg.connect(database_at_0007)
    try:
        tenant_id = await conn.fetchval(
            "INSERT INTO tenants (name) VALUES ('old') RETURNING tenant_id"
        )
        rows = [
            (uuid.uuid4(), "eve", ["ben", "cleo"], 1),
            (uuid.uuid4(), "ana", ["ana", "ben"], 2),  # the offender among the affected
        ]
        for violation, offender, affected, position in rows:
            await conn.execute(
                "INSERT INTO violations (tenant_id, generation, id, event_id, code, severity, "
                "offender, affected, evidence, occurred_at, position, explanation) "
                "VALUES ($1, 1, $2, $2, 'E104', 'high', $3, $4, '{}', $5, $6, 'x')",
                tenant_id,
                violation,
                offender,
                affected,
                RECENT,
                position,
            )
        await asyncio.to_thread(upgrade, database_at_0007, "0008")
        listed = await conn.fetch(
            "SELECT person, id FROM violation_people WHERE tenant_id = $1 "
            "ORDER BY position, person",
            tenant_id,
        )
        assert [(r["person"], r["id"]) for r in listed] == [
            ("ben", rows[0][0]),
            ("cleo", rows[0][0]),
            ("eve", rows[0][0]),
            ("ana", rows[1][0]),
            ("ben", rows[1][0]),
        ]
        config = alembic_config(database_at_0007)
        await asyncio.to_thread(command.downgrade, config, "0007")
        assert not await conn.fetchval("SELECT to_regclass('violation_people') IS NOT NULL")
    finally:
        await conn.close()
