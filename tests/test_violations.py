"""The violations projection live: late arrivals re-judged, HTTP reads, policy endpoints."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from ledger.projections.core import PolicyTimeline
from ledger.projections.projector import catch_up, rebuild, state_of, to_projected
from ledger.rules import projection as projection_module
from ledger.rules.catalogue import RULES
from ledger.rules.projection import VIOLATIONS
from ledger.rules.replay import violations_of
from ledger.scenario import Scenario
from ledger.store.append import append
from ledger.store.cursor import Cursor
from ledger.store.database import Connection, Pool
from tests.conftest import Tenant, make_tenant
from tests.samples import START, event
from tests.test_api_events import assert_problem, post
from tests.test_projections import as_projected
from tests.test_rules import (
    DAY,
    favor_granted,
    favor_requested,
    history,
    intro_made,
    intro_offered,
    intro_requested,
    meeting,
    message,
    name_invoked,
)
from tests.test_store import new_events

Client = AsyncTestClient[Litestar]
Verdict = tuple[str, str, str, tuple[str, ...], tuple[str, ...]]


def verdicts(items: list[dict[str, Any]]) -> set[Verdict]:
    return {
        (v["id"], v["code"], v["offender"], tuple(v["affected"]), tuple(v["evidence"]))
        for v in items
    }


async def read_all(
    client: Client, tenant: Tenant, path: str, cursor: str | None = None, **params: Any
) -> list[dict[str, Any]]:
    """Every page of a violations list, waiting for the projection to reach ``cursor``."""
    headers = dict(tenant.headers)
    if cursor is not None:
        headers["Ledger-Min-Cursor"] = cursor
    items: list[dict[str, Any]] = []
    page_cursor = None
    for _ in range(1000):
        query = {**params, "limit": 2, **({"cursor": page_cursor} if page_cursor else {})}
        response = await client.get(path, params=query, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body["items"])
        page_cursor = body["next_cursor"]
        if page_cursor is None:
            return items
    raise AssertionError("pagination never ended")


def a_networking_story() -> list[dict[str, Any]]:
    """Ana and Ben behave; Eve asks strangers, drops names and pitches; Gus takes and takes."""
    return history(
        (0, meeting("ana", "ben", purpose="get_to_know")),
        (2 * DAY, favor_granted("ana", "ben", "advice")),
        (3 * DAY, favor_granted("ben", "ana", "review")),
        (4 * DAY, intro_offered("ben", "ana", "cleo", intro="i-ok")),
        (5 * DAY, intro_made("ben", "ana", "cleo", intro="i-ok")),
        (6 * DAY, ("gratitude.expressed", {"from": "ana", "to": "ben"})),
        (10 * DAY, favor_requested("eve", "cleo", "introduction")),  # E101, E102
        (11 * DAY, name_invoked("eve", "ben", "dev", "not_given")),  # E104
        (12 * DAY, meeting("eve", "dev", purpose="pitch")),  # E105
        (13 * DAY, intro_requested("eve", "ben", "fay")),  # E101, E103
        (20 * DAY, favor_granted("fay", "gus", "referral")),
        (120 * DAY, favor_granted("fay", "gus", "advice")),
        (220 * DAY, favor_granted("fay", "gus", "review")),  # E111: gus took three
        (600 * DAY, favor_requested("ana", "ben", "advice")),  # E107: a year and more of silence
    )


async def test_a_story_over_http_names_each_offender_and_spares_the_rest(
    client: Client, pool: Pool
) -> None:
    story = a_networking_story()
    seen: list[set[Verdict]] = []
    for seed in (None, 1, 2):  # sorted, then two shuffled arrival orders, one tenant each
        tenant = await make_tenant(pool)
        events = list(story)
        if seed is not None:
            random.Random(seed).shuffle(events)
        cursor = None
        for i in range(0, len(events), 4):
            response = await post(client, tenant, events[i : i + 4])
            assert response.status_code == 201, response.text
            cursor = response.json()["cursor"]
        everything = await read_all(client, tenant, "/v1/violations", cursor)
        by_offender: dict[str, set[str]] = {}
        for v in everything:
            by_offender.setdefault(v["offender"], set()).add(v["code"])
        assert by_offender == {
            "eve": {"E101", "E102", "E103", "E104", "E105"},
            "gus": {"E111"},
            "ana": {"E107"},
        }
        for person, expected in (("eve", 6), ("gus", 1), ("ben", 4), ("fay", 2)):
            mine = await read_all(client, tenant, f"/v1/people/{person}/violations", cursor)
            assert len(mine) == expected, (person, mine)
        seen.append(verdicts(everything))
    assert seen[0] == seen[1] == seen[2]


# --- late arrivals: live equals a sorted replay -------------------------------------------------

PEOPLE = ["p0", "p1", "p2", "p3", "p4"]


def a_generated_history(rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Rule-relevant events over two years among five people, any arrival order valid."""
    makers: list[Callable[[str, str, str], Any]] = [
        lambda x, y, z: message(x, y),
        lambda x, y, z: meeting(x, y, purpose=rng.choice(["get_to_know", "catch_up", "pitch"])),
        lambda x, y, z: favor_requested(
            x, y, rng.choice(["introduction", "contacts", "advice", "referral"])
        ),
        lambda x, y, z: favor_granted(x, y, rng.choice(["advice", "review"])),
        lambda x, y, z: favor_granted(x, y, "money", expects_return=True),
        lambda x, y, z: intro_requested(x, y, z),
        lambda x, y, z: intro_offered(x, y, z),
        lambda x, y, z: intro_made(x, y, z),
        lambda x, y, z: name_invoked(x, y, z, rng.choice(["unknown", "given", "not_given"])),
    ]
    steps = []
    for _ in range(count):
        x, y, z = rng.sample(PEOPLE, 3)
        steps.append((rng.uniform(-730 * DAY, 0), rng.choice(makers)(x, y, z)))
    if rng.random() < 0.5:
        steps.append((rng.uniform(-730 * DAY, 0), ("policy.changed", {"big_ask_window_hours": 96})))
    return history(*steps)


async def settle(conn: Connection, tenant_id: int, head: Cursor) -> None:
    """Catch up until the checkpoint reaches ``head``: the commit horizon may hold events
    back while other transactions on the server are open."""
    for _ in range(1000):
        await catch_up(conn, tenant_id, projection=VIOLATIONS)
        if (await state_of(conn, tenant_id, VIOLATIONS.name)).checkpoint >= head:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the violations projection never reached the head of the log")


async def stored_verdicts(conn: Connection, tenant_id: int) -> set[tuple[Any, ...]]:
    state = await state_of(conn, tenant_id, VIOLATIONS.name)
    rows = await conn.fetch(
        "SELECT id, code, offender, affected, evidence, explanation FROM violations "
        "WHERE tenant_id = $1 AND generation = $2",
        tenant_id,
        state.generation,
    )
    return {
        (
            r["id"],
            r["code"],
            r["offender"],
            tuple(r["affected"]),
            tuple(r["evidence"]),
            r["explanation"],
        )
        for r in rows
    }


@pytest.mark.parametrize("seed", range(8))
async def test_late_arrivals_are_rejudged_to_what_a_sorted_replay_finds(
    pool: Pool, seed: int
) -> None:
    rng = random.Random(seed)
    events = a_generated_history(rng, 40)
    tenant = await make_tenant(pool)
    arrival = list(events)
    rng.shuffle(arrival)
    async with pool.acquire() as conn:
        for i in range(0, len(arrival), 6):  # several appends, projected in small batches
            await append(conn, tenant.id, new_events(*arrival[i : i + 6]))
            await catch_up(conn, tenant.id, batch_size=4, projection=VIOLATIONS)
        # A decline must follow its request: it arrives last, its requester read back
        # from the log.
        request = next(e for e in events if e["type"] == "favor.requested")
        decline = event(
            "favor.declined",
            {"favor_id": request["data"]["favor_id"], "by": request["data"]["asked_of"]},
            at=0,
            start=START + timedelta(days=1),
        )
        result, _ = await append(conn, tenant.id, new_events(decline))
        await settle(conn, tenant.id, Cursor.decode(result.cursor))
        live = await stored_verdicts(conn, tenant.id)

        rows = await conn.fetch(
            "SELECT id, type, occurred_at, tx_id::text::bigint AS tx_id, position, data "
            "FROM events WHERE tenant_id = $1",
            tenant.id,
        )
        logged = [to_projected(r) for r in rows]
        expected = {
            (v.id, v.code, v.offender, v.affected, v.evidence, v.explanation)
            for v in violations_of(logged, PolicyTimeline(logged))
        }
        assert live == expected
        assert expected, "a generated history this size always breaks a rule"

        announced = (
            "SELECT array_agg(violation_id ORDER BY seq) FROM violation_feed WHERE tenant_id = $1"
        )
        before = await conn.fetchval(announced, tenant.id)
        assert {v[0] for v in expected} <= set(before), "every violation found was announced"
        assert len(before) == len(set(before)), "re-judging announces nothing twice"
        await rebuild(conn, tenant.id, projection=VIOLATIONS)
        assert await stored_verdicts(conn, tenant.id) == expected
        assert await conn.fetchval(announced, tenant.id) == before, "a rebuild announces nothing"


async def test_a_rebuild_writes_facts_in_sorted_flushes_and_judges_as_the_live_projection(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refold holds facts until FLUSH_ROWS and writes them sorted by pair: several
    flushes, each in key order, and the same facts and verdicts as live."""
    monkeypatch.setattr(projection_module, "FLUSH_ROWS", 8)
    flushes: list[list[tuple[str, str]]] = []
    copy = projection_module._copy

    async def watched(
        conn: Connection, tenant_id: int, generation: int, facts: Any, found: Any
    ) -> None:
        await copy(conn, tenant_id, generation, facts, found)
        flushes.append([fact.pair for fact in facts])  # as written

    events = a_generated_history(random.Random(11), 40)
    tenant = await make_tenant(pool)
    facts_of_generation = (
        "SELECT a, b, occurred_at, position, event_id, kind FROM rule_facts"
        " WHERE tenant_id = $1 AND generation = $2 ORDER BY 1, 2, 3, 4, 5, 6"
    )
    async with pool.acquire() as conn:
        await append(conn, tenant.id, new_events(*events))
        await catch_up(conn, tenant.id, projection=VIOLATIONS)
        live = await stored_verdicts(conn, tenant.id)
        before = await state_of(conn, tenant.id, VIOLATIONS.name)
        live_facts = await conn.fetch(facts_of_generation, tenant.id, before.generation)
        monkeypatch.setattr(projection_module, "_copy", watched)

        await rebuild(conn, tenant.id, projection=VIOLATIONS, batch_size=1)

        after = await state_of(conn, tenant.id, VIOLATIONS.name)
        assert after.generation == before.generation + 1
        assert await stored_verdicts(conn, tenant.id) == live
        assert await conn.fetch(facts_of_generation, tenant.id, after.generation) == live_facts
    written = [pairs for pairs in flushes if pairs]
    assert len(written) >= 3, "the refold wrote before its end, more than once"
    assert min(len(pairs) for pairs in written[:-1]) >= 8, "each flush but the last held 8"
    assert all(pairs == sorted(pairs) for pairs in written)
    assert sum(len(pairs) for pairs in written) == len(live_facts)


async def test_a_past_policy_change_rejudges_what_came_after_it(
    client: Client, tenant: Tenant
) -> None:
    events = history(
        (0, meeting("ana", "ben", purpose="get_to_know")),
        (30, favor_requested("ana", "ben", "referral")),
    )
    first = await post(client, tenant, events)
    before = await read_all(client, tenant, "/v1/violations", first.json()["cursor"], code="E106")
    assert before == []
    change = history((-1, ("policy.changed", {"big_ask_window_hours": 48})))
    second = await post(client, tenant, change)
    after = await read_all(client, tenant, "/v1/violations", second.json()["cursor"], code="E106")
    assert [v["explanation"].count("within 48 hours") for v in after] == [1]


# --- reading violations ------------------------------------------------------------------------


async def test_filters_and_pages(client: Client, tenant: Tenant) -> None:
    response = await post(client, tenant, a_networking_story())
    cursor = response.json()["cursor"]
    everything = await read_all(client, tenant, "/v1/violations", cursor)
    assert len(everything) == 8
    assert [v["occurred_at"] for v in everything] == sorted(v["occurred_at"] for v in everything)
    for v in everything:
        assert set(v) == {
            "id",
            "code",
            "severity",
            "offender",
            "affected",
            "evidence",
            "occurred_at",
            "explanation",
        }

    def only(**match: Any) -> set[str]:
        return {v["id"] for v in everything if all(m(v) for m in match.values())}

    high = await read_all(client, tenant, "/v1/violations", severity="high")
    assert {v["id"] for v in high} == only(s=lambda v: v["severity"] == "high")
    two_codes = await read_all(client, tenant, "/v1/violations", code=["E104", "E111"])
    assert {v["code"] for v in two_codes} == {"E104", "E111"}
    eve = await read_all(client, tenant, "/v1/violations", offender="eve")
    assert {v["id"] for v in eve} == only(o=lambda v: v["offender"] == "eve")
    ben = await read_all(client, tenant, "/v1/violations", person="ben")
    assert {v["id"] for v in ben} == only(
        p=lambda v: v["offender"] == "ben" or "ben" in v["affected"]
    )
    since = (START + timedelta(days=12)).isoformat()
    until = (START + timedelta(days=300)).isoformat()
    window = await read_all(client, tenant, "/v1/violations", since=since, until=until)
    assert {v["code"] for v in window} == {"E101", "E103", "E105", "E111"}
    gus = await read_all(client, tenant, "/v1/people/gus/violations", code="E111")
    assert [v["offender"] for v in gus] == ["gus"]
    # Someone known with a clean record answers an empty list.
    assert await read_all(client, tenant, "/v1/people/cleo/violations", code="E111") == []


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/violations", {"code": "E100"}, "code"),
        ("/v1/violations", {"code": ["E101", "X"]}, "code[1]"),
        ("/v1/violations", {"severity": "fatal"}, "severity"),
        ("/v1/violations", {"since": "2025-01-01T00:00:00"}, "since"),
        (
            "/v1/violations",
            {"since": "2025-02-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"},
            "until",
        ),
        ("/v1/violations", {"cursor": "t1AAAA"}, "cursor"),
        ("/v1/violations", {"limit": 0}, "limit"),
        ("/v1/people/ana/violations", {"cursor": "nonsense"}, "cursor"),
    ],
)
async def test_bad_queries_name_the_parameter(
    client: Client, tenant: Tenant, path: str, params: dict[str, Any], field: str
) -> None:
    response = await client.get(path, params=params, headers=tenant.headers)
    body = assert_problem(response, 422, field)
    assert body["detail"]


async def test_a_person_never_seen_is_404(client: Client, tenant: Tenant) -> None:
    response = await client.get("/v1/people/nobody/violations", headers=tenant.headers)
    assert_problem(response, 404, "person")


@pytest.mark.parametrize(
    "path", ["/v1/violations", "/v1/people/ana/violations", "/v1/rules", "/v1/policy"]
)
async def test_reads_need_the_projections_scope(client: Client, pool: Pool, path: str) -> None:
    writer = await make_tenant(pool, ["events:write"])
    response = await client.get(path, headers=writer.headers)
    body = assert_problem(response, 403)
    assert body["required_scope"] == "projections:read"
    assert_problem(await client.get(path), 401, "Authorization")


# --- rules and policy --------------------------------------------------------------------------


async def test_rules_list_the_catalogue_with_the_thresholds_in_force(
    client: Client, tenant: Tenant
) -> None:
    response = await client.get("/v1/rules", headers=tenant.headers)
    assert response.status_code == 200
    items = {r["code"]: r for r in response.json()["items"]}
    assert sorted(items) == sorted(RULES)
    assert items["E106"]["thresholds"] == {"big_ask_window_hours": 24.0}
    assert items["E101"]["severity"] == "high"
    assert items["E104"]["principle"].startswith("A name is a door-opener")
    put = await client.put("/v1/policy", json={"big_ask_window_hours": 36}, headers=tenant.headers)
    assert put.status_code == 200, put.text
    again = {
        r["code"]: r
        for r in (await client.get("/v1/rules", headers=tenant.headers)).json()["items"]
    }
    assert again["E106"]["thresholds"] == {"big_ask_window_hours": 36.0}


async def test_policy_put_replaces_and_is_an_event(
    client: Client, pool: Pool, tenant: Tenant
) -> None:
    default = (await client.get("/v1/policy", headers=tenant.headers)).json()
    assert default["version"] == 0 and default["changed_at"] is None
    assert default["policy"]["silence_days"] == 365
    first = await client.put(
        "/v1/policy",
        json={"silence_days": 200, "weights": {"advice": 2}},
        headers=tenant.headers,
    )
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["version"] == 1 and body["cursor"]
    assert body["policy"]["silence_days"] == 200
    assert body["policy"]["weights"]["advice"] == 2 and body["policy"]["weights"]["money"] == 3
    # PUT replaces: what the second body omits returns to its default.
    second = await client.put("/v1/policy", json={"conduit_min_asks": 4}, headers=tenant.headers)
    policy = second.json()["policy"]
    assert policy["silence_days"] == 365 and policy["weights"]["advice"] == 1
    assert policy["conduit_min_asks"] == 4
    async with pool.acquire() as conn:  # the log itself, not a follower held by the horizon
        changes = await conn.fetch(
            "SELECT data, metadata FROM events WHERE tenant_id = $1 AND type = 'policy.changed' "
            "ORDER BY position",
            tenant.id,
        )
    assert [c["data"]["silence_days"] for c in changes] == [200, 365]
    assert changes[0]["metadata"]["actor"].startswith("api-key:")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"silence_days": -5}, "silence_days"),
        ({"conduit_min_asks": 0}, "conduit_min_asks"),
        ({"weights": {"advice": -1}}, "weights"),
        ({"weights": {"hugs": 1}}, "weights"),
        ({"silence": 3}, "silence"),
        ({"big_ask_window_hours": "soon"}, "big_ask_window_hours"),
    ],
)
async def test_policy_nonsense_is_422_and_writes_nothing(
    client: Client, tenant: Tenant, body: dict[str, Any], field: str
) -> None:
    response = await client.put("/v1/policy", json=body, headers=tenant.headers)
    assert_problem(response, 422, field)
    policy = (await client.get("/v1/policy", headers=tenant.headers)).json()
    assert policy["version"] == 0


async def test_policy_put_needs_admin(client: Client, pool: Pool) -> None:
    reader = await make_tenant(pool, ["projections:read", "events:write"])
    response = await client.put("/v1/policy", json={"silence_days": 10}, headers=reader.headers)
    assert assert_problem(response, 403)["required_scope"] == "admin"
    bad_json = await client.put(
        "/v1/policy",
        content=b"{nope",
        headers={**reader.headers, "content-type": "application/json"},
    )
    assert bad_json.status_code == 403  # the scope is checked before the body is read


async def test_policy_put_with_a_body_that_is_not_json(client: Client, tenant: Tenant) -> None:
    response = await client.put(
        "/v1/policy",
        content=b"{nope",
        headers={**tenant.headers, "content-type": "application/json"},
    )
    assert_problem(response, 422)


def test_evidence_names_events_of_the_story() -> None:
    story = a_networking_story()
    ids = {uuid.UUID(e["id"]) for e in story}
    projected = as_projected(story)
    for v in violations_of(projected, PolicyTimeline(projected)):
        assert set(v.evidence) <= ids and v.event_id in v.evidence
        assert v.occurred_at.tzinfo is not None
    assert datetime.now(UTC) > START
    assert Cursor(0, 0) < Cursor(1, 0)


async def test_a_generated_network_is_judged_live_as_a_replay_does(pool: Pool) -> None:
    """The benchmarks' scenario: every type, skewed activity, back-filled dates, policy changes."""
    generated = [g.wire for g in Scenario(people=40, seed=9).events(1200)]
    tenant = await make_tenant(pool)
    async with pool.acquire() as conn:
        for i in range(0, len(generated), 200):
            result, _ = await append(conn, tenant.id, new_events(*generated[i : i + 200]))
            await catch_up(conn, tenant.id, batch_size=150, projection=VIOLATIONS)
        await settle(conn, tenant.id, Cursor.decode(result.cursor))
        live = await stored_verdicts(conn, tenant.id)
        rows = await conn.fetch(
            "SELECT id, type, occurred_at, tx_id::text::bigint AS tx_id, position, data "
            "FROM events WHERE tenant_id = $1",
            tenant.id,
        )
    logged = [to_projected(r) for r in rows]
    expected = {
        (v.id, v.code, v.offender, v.affected, v.evidence, v.explanation)
        for v in violations_of(logged, PolicyTimeline(logged))
    }
    assert live == expected
    assert len({code for _, code, *_ in expected}) >= 6, "the scenario breaks many rules"


async def test_violations_as_of_a_cursor_and_as_of_a_time(client: Client, tenant: Tenant) -> None:
    first = history(
        (1 * DAY, favor_requested("ana", "ben", "referral")),  # E101 + E102 on first contact
        (9 * DAY, name_invoked("eve", "ben", "cleo")),  # E104
    )
    posted = await post(client, tenant, first)
    then_cursor = posted.json()["cursor"]
    then = await read_all(client, tenant, "/v1/violations", then_cursor)
    assert {v["code"] for v in then} == {"E101", "E102", "E104"}
    # Back-filled: ana and ben had met before she asked; ben offered cleo's introduction.
    late = history((0, message("ben", "ana")), (2 * DAY, intro_offered("ben", "eve", "cleo")))
    now_cursor = (await post(client, tenant, late)).json()["cursor"]
    now = await read_all(client, tenant, "/v1/violations", now_cursor)
    assert {v["code"] for v in now} == {"E102"}

    as_then = await read_all(client, tenant, "/v1/violations", as_of=then_cursor)
    assert verdicts(as_then) == verdicts(then)
    response = await client.get(
        "/v1/violations", params={"as_of": then_cursor}, headers=tenant.headers
    )
    assert response.headers["Ledger-Cursor"] == then_cursor
    # As of a time: what had happened by then, as known now (the back-filled message
    # counts, the name dropped on day 9 has not happened yet).
    by_day_5 = (START + timedelta(days=5)).isoformat()
    as_of_time = await read_all(client, tenant, "/v1/violations", as_of=by_day_5)
    assert {v["code"] for v in as_of_time} == {"E102"}
    eve = await read_all(client, tenant, "/v1/people/eve/violations", as_of=then_cursor)
    assert [v["code"] for v in eve] == ["E104"]
    # By day 5 eve was known (the offer about her), and had done nothing wrong yet.
    assert await read_all(client, tenant, "/v1/people/eve/violations", as_of=by_day_5) == []
    before_anything = (START - timedelta(days=1)).isoformat()
    gone = await client.get(
        "/v1/people/eve/violations", params={"as_of": before_anything}, headers=tenant.headers
    )
    assert_problem(gone, 404, "person")


async def test_violations_as_of_need_the_audit_scope_and_a_real_place(
    client: Client, pool: Pool
) -> None:
    reader = await make_tenant(pool, ["projections:read", "events:write"])
    response = await client.get(
        "/v1/violations", params={"as_of": "2025-01-01T00:00:00Z"}, headers=reader.headers
    )
    assert assert_problem(response, 403)["required_scope"] == "audit"
    auditor = await make_tenant(pool)
    for bad in ("yesterday", "2025-01-01T00:00:00"):
        response = await client.get(
            "/v1/violations", params={"as_of": bad}, headers=auditor.headers
        )
        assert_problem(response, 422, "as_of")
