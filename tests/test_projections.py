"""Balances, relationships and timelines: worked out by hand, order-free, rebuild-equal."""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import AsyncTestClient

from ledger.api.app import create_app
from ledger.events.envelope import decode_batch
from ledger.events.vocabulary import EVENT_TYPES
from ledger.projections.core import Fold, Pair, PolicyTimeline, ProjectedEvent
from ledger.projections.projector import (
    _TENANTS_BEHIND,
    PROJECTION,
    catch_up,
    refold,
    state_of,
    tenants_behind,
)
from ledger.scenario import Scenario
from ledger.store.append import append
from ledger.store.cursor import Cursor
from ledger.store.database import Connection, Pool
from tests.conftest import Tenant
from tests.plans import blocks_on, explain, pages_of
from tests.samples import START, event
from tests.test_api_events import assert_problem, post
from tests.test_store import message, new_events

Client = AsyncTestClient[Litestar]


# Ten days ago, on the hour: recent enough that nobody is dormant yet.
RECENT = (datetime.now(UTC) - timedelta(days=10)).replace(minute=0, second=0, microsecond=0)


def grant(
    giver: str, receiver: str, kind: str, at: int, start: datetime = RECENT, **extra: Any
) -> dict[str, Any]:
    data = {
        "favor_id": f"g-{uuid.uuid4().hex[:8]}",
        "giver": giver,
        "receiver": receiver,
        "kind": kind,
    }
    return event("favor.granted", {**data, **extra}, at=at, start=start)


def iso(hours: int) -> str:
    return (RECENT + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


def a_small_network() -> list[dict[str, Any]]:
    return [
        event(
            "meeting.held",
            {
                "meeting_id": f"m-{uuid.uuid4().hex[:6]}",
                "participants": ["ana", "ben", "cleo"],
                "initiated_by": "ana",
                "channel": "meal",
                "purpose": "catch_up",
            },
            at=0,
            start=RECENT,
        ),
        grant("ben", "ana", "introduction", at=24),  # default weight 3
        grant("ana", "ben", "advice", at=48, weight=1.5),  # its own weight
        grant("cleo", "ana", "referral", at=72),  # default weight 3
        event(
            "message.sent", {"from": "ana", "to": "dev", "kind": "check_in"}, at=96, start=RECENT
        ),
    ]


async def read_own_write(client: Client, tenant: Tenant, path: str, cursor: str) -> Any:
    response = await client.get(path, headers={**tenant.headers, "Ledger-Min-Cursor": cursor})
    assert response.status_code == 200, response.text
    assert Cursor.decode(response.headers["Ledger-Cursor"]) >= Cursor.decode(cursor)
    return response.json()


async def test_balances_and_relationships_match_the_hand_worked_numbers(
    client: Client, tenant: Tenant
) -> None:
    events = a_small_network()
    random.Random(3).shuffle(events)  # arrival order must not matter
    cursor = (await post(client, tenant, events)).json()["cursor"]

    balances = await read_own_write(client, tenant, "/v1/people/ana/balances", cursor)
    assert balances["items"] == [
        {"counterparty": "ben", "given": 1.5, "received": 3.0, "net": -1.5},
        {"counterparty": "cleo", "given": 0.0, "received": 3.0, "net": -3.0},
    ]
    ben = await read_own_write(client, tenant, "/v1/relationships/ben/ana", cursor)
    assert (ben["a"], ben["b"], ben["stage"]) == ("ben", "ana", "connection")
    assert (ben["given"], ben["received"], ben["net"]) == (3.0, 1.5, 1.5)
    assert ben["first_contact_at"] == iso(0)
    assert ben["last_contact_at"] == iso(48)
    assert ben["contacts_by_type"] == {"favor.granted": 2, "meeting.held": 1}
    assert ben["reciprocity"] == 0.5
    cleo = await read_own_write(client, tenant, "/v1/relationships/ana/cleo", cursor)
    assert cleo["stage"] == "acquaintance"  # help has flowed one way only
    ana = await read_own_write(client, tenant, "/v1/people/ana", cursor)
    assert (ana["given"], ana["received"], ana["relationships"], ana["connections"]) == (
        1.5,
        6.0,
        3,
        1,
    )
    assert ana["reciprocity"] == 1.0  # all she gave (to ben) was matched
    rels = await read_own_write(client, tenant, "/v1/people/ana/relationships", cursor)
    assert next(r["b"] for r in rels["items"]) == "ben"  # the strongest: most contacts
    by_date = await read_own_write(
        client, tenant, "/v1/people/ana/relationships?sort=last_contact", cursor
    )
    assert [r["b"] for r in by_date["items"]] == ["dev", "cleo", "ben"]
    timeline = await read_own_write(client, tenant, "/v1/people/ana/timeline", cursor)
    times = [item["occurred_at"] for item in timeline["items"]]
    assert times == sorted(times) and len(times) == 5
    pair_timeline = await read_own_write(
        client, tenant, "/v1/relationships/ana/ben/timeline", cursor
    )
    assert [i["type"] for i in pair_timeline["items"]] == [
        "meeting.held",
        "favor.granted",
        "favor.granted",
    ]
    # Ten days without contact: within every cadence but the closest layer's (14 days)? No:
    # all three are in ana's top 5, cadence 14 days, so nothing is overdue yet.
    reconnect = await read_own_write(client, tenant, "/v1/people/ana/reconnect", cursor)
    assert reconnect["items"] == []


async def test_strangers_and_unknown_people(client: Client, tenant: Tenant) -> None:
    cursor = (await post(client, tenant, a_small_network())).json()["cursor"]
    strangers = await read_own_write(client, tenant, "/v1/relationships/ben/dev", cursor)
    assert strangers["stage"] == "stranger" and strangers["contacts"] == 0
    for path, field in [
        ("/v1/people/nobody", "person"),
        ("/v1/people/nobody/balances", "person"),
        ("/v1/people/nobody/timeline", "person"),
        ("/v1/relationships/ana/nobody", "b"),
        ("/v1/relationships/nobody/ana", "a"),
        ("/v1/relationships/ana/nobody/timeline", "b"),
    ]:
        response = await client.get(path, headers={**tenant.headers, "Ledger-Min-Cursor": cursor})
        assert_problem(response, 404, field)
    bad_cursor = await client.get("/v1/people/ana/timeline?cursor=zz", headers=tenant.headers)
    assert_problem(bad_cursor, 422, "cursor")
    bad_sort = await client.get("/v1/people/ana/relationships?sort=size", headers=tenant.headers)
    assert_problem(bad_sort, 422, "sort")
    assert_problem(await client.get("/v1/relationships/ana/ana", headers=tenant.headers), 422, "b")


async def test_a_policy_change_reweights_favors_after_it(client: Client, tenant: Tenant) -> None:
    events = [
        grant("ben", "ana", "advice", at=0),
        event("policy.changed", {"weights": {"advice": 5}}, at=10, start=RECENT),
        grant("ben", "ana", "advice", at=20),
    ]
    cursor = (await post(client, tenant, list(reversed(events)))).json()["cursor"]
    ana = await read_own_write(client, tenant, "/v1/relationships/ana/ben", cursor)
    assert ana["received"] == 6.0  # 1 (default, before the change) + 5


async def test_min_cursor_waits_then_answers_503_with_retry_after(
    database_url: str, tenant: Tenant
) -> None:
    app = create_app(database_url, migrate=False, run_projector=False, min_cursor_wait=0.2)
    async with AsyncTestClient(app=app) as idle:
        await post(idle, tenant, a_small_network())
        cursor = Cursor(2**62, 1).encode()  # a place the log has not reached
        response = await idle.get(
            "/v1/people/ana", headers={**tenant.headers, "Ledger-Min-Cursor": cursor}
        )
        body = assert_problem(response, 503, "Ledger-Min-Cursor")
        assert response.headers["Retry-After"]
        assert body["ledger_cursor"].startswith("c1")
        bad = await idle.get("/v1/people/ana", headers={**tenant.headers, "Ledger-Min-Cursor": "x"})
        assert_problem(bad, 422, "Ledger-Min-Cursor")


# --- order independence, replay equals live ---------------------------------

PEOPLE = ["p0", "p1", "p2", "p3", "p4"]
BASE = datetime(2024, 1, 1, tzinfo=UTC)


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Events whose lifecycles do not depend on one another, so any arrival order is valid."""
    count = draw(st.integers(min_value=1, max_value=25))
    events = []
    for i in range(count):
        x, y, z = draw(st.permutations(PEOPLE))[:3]
        at = draw(st.integers(min_value=0, max_value=24 * 400))
        kind = draw(
            st.sampled_from(
                ["meeting", "message", "grant", "request", "intro", "name", "thanks", "policy"]
            )
        )
        data: dict[str, Any]
        if kind == "meeting":
            type_, data = (
                "meeting.held",
                {
                    "meeting_id": f"m{i}",
                    "participants": [x, y, z][: draw(st.integers(2, 3))],
                    "initiated_by": x,
                    "channel": "call",
                    "purpose": "catch_up",
                },
            )
        elif kind == "message":
            type_, data = "message.sent", {"from": x, "to": y, "kind": "reply"}
        elif kind == "grant":
            type_, data = (
                "favor.granted",
                {
                    "favor_id": f"f{i}",
                    "giver": x,
                    "receiver": y,
                    "kind": draw(st.sampled_from(["advice", "money", "review"])),
                },
            )
        elif kind == "request":
            type_, data = (
                "favor.requested",
                {"favor_id": f"r{i}", "requester": x, "asked_of": y, "kind": "advice"},
            )
        elif kind == "intro":
            type_, data = (
                "introduction.made",
                {"introduction_id": f"i{i}", "introducer": x, "subject": y, "target": z},
            )
        elif kind == "name":
            type_, data = (
                "name.invoked",
                {"invoker": x, "referrer": y, "contacted": z, "consent": "unknown"},
            )
        elif kind == "thanks":
            type_, data = "gratitude.expressed", {"from": x, "to": y}
        else:
            type_, data = (
                "policy.changed",
                {"weights": {"advice": draw(st.sampled_from([0.5, 2.0, 4.0]))}},
            )
        events.append(event(type_, data, at=at))
    return events


def as_projected(events: list[dict[str, Any]]) -> list[ProjectedEvent]:
    batch = decode_batch(msgspec.json.encode({"events": events}))
    return [
        ProjectedEvent(e.id or uuid.uuid4(), e.data.type_name, e.occurred_at, 0, n, e.data)
        for n, e in enumerate(batch.events, 1)
    ]


def fold_in_order(events: list[ProjectedEvent]) -> Fold:
    fold = Fold(PolicyTimeline(events))
    fold.apply_all(events)
    return fold


def same_pairs(x: dict[tuple[str, str], Pair], y: dict[tuple[str, str], Pair]) -> bool:
    if x.keys() != y.keys():
        return False
    for k in x:
        p, q = msgspec.structs.asdict(x[k]), msgspec.structs.asdict(y[k])
        for field, value in p.items():
            other = q[field]
            if isinstance(value, float) and not math.isclose(value, other, rel_tol=1e-9):
                return False
            if not isinstance(value, float) and value != other:
                return False
    return True


@settings(max_examples=150, deadline=None)
@given(histories(), st.randoms(use_true_random=False))
def test_any_arrival_order_folds_to_the_same_projections(
    history: list[dict[str, Any]], rng: random.Random
) -> None:
    events = as_projected(history)
    by_time = sorted(events, key=lambda e: (e.occurred_at, e.position))
    shuffled = list(events)
    rng.shuffle(shuffled)
    sorted_fold, shuffled_fold = fold_in_order(by_time), fold_in_order(shuffled)
    assert same_pairs(sorted_fold.pairs, shuffled_fold.pairs)
    assert sorted(
        (person, entry.event_id) for person, entry in sorted_fold.person_timeline
    ) == sorted((person, entry.event_id) for person, entry in shuffled_fold.person_timeline)


class Rows(list[tuple[Any, ...]]):
    """Projection rows; floats compare with a relative tolerance, because a live
    projector and a replay add the same log2-sums in different orders."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, list) or len(self) != len(other):
            return False
        return all(_same_row(x, y) for x, y in zip(self, other, strict=True))

    __hash__ = None


def _same_row(x: tuple[Any, ...], y: tuple[Any, ...]) -> bool:
    if len(x) != len(y):
        return False
    for a, b in zip(x, y, strict=True):
        if isinstance(a, float) and isinstance(b, float):
            if not math.isclose(a, b, rel_tol=1e-12):
                return False
        elif a != b:
            return False
    return True


async def dump(conn: Connection, tenant_id: int, generation: int) -> Rows:
    rows = await conn.fetch(
        "SELECT a, b, given_ab, given_ba, favors_ab, favors_ba, contacts, first_contact,"
        " last_contact, strength_log2, counts FROM network_pairs"
        " WHERE tenant_id = $1 AND generation = $2 ORDER BY a, b",
        tenant_id,
        generation,
    )
    timeline = await conn.fetch(
        "SELECT person, occurred_at, event_id FROM timeline_person"
        " WHERE tenant_id = $1 AND generation = $2 ORDER BY 1, 2, 3",
        tenant_id,
        generation,
    )
    return Rows([tuple(r) for r in rows] + [tuple(r) for r in timeline])


async def settle(conn: Connection, tenant_id: int, head: Cursor) -> None:
    """Catch up until the checkpoint reaches ``head`` (another worker may be on it too)."""
    for _ in range(1000):
        await catch_up(conn, tenant_id)
        if (await state_of(conn, tenant_id)).checkpoint >= head:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the projections never reached the head of the log")


async def test_live_batches_in_shuffled_order_equal_a_sorted_replay(
    pool: Pool, tenant: Tenant
) -> None:
    history = _fixed_history()
    shuffled = list(history)
    random.Random(11).shuffle(shuffled)
    async with pool.acquire() as conn:
        for i in range(
            0, len(shuffled), 7
        ):  # arrives in several appends, projected in small batches
            result, _ = await append(conn, tenant.id, new_events(*shuffled[i : i + 7]))
            await catch_up(conn, tenant.id, batch_size=5)
        await settle(conn, tenant.id, Cursor.decode(result.cursor))
        live = await dump(conn, tenant.id, 1)
        state = await state_of(conn, tenant.id)
        async with conn.transaction():
            await refold(conn, tenant.id, 99, state.checkpoint)
            replayed = await dump(conn, tenant.id, 99)
    assert live == replayed
    assert state.events_applied == len(history)


def _fixed_history() -> list[dict[str, Any]]:
    rng = random.Random(5)
    out = []
    for i in range(60):
        x, y, z = rng.sample(PEOPLE, 3)
        at = rng.randint(0, 24 * 300)
        choice = i % 6
        if choice == 0:
            out.append(
                event(
                    "meeting.held",
                    {
                        "meeting_id": f"m{i}",
                        "participants": [x, y, z],
                        "initiated_by": x,
                        "channel": "call",
                        "purpose": "advice",
                    },
                    at=at,
                )
            )
        elif choice == 1:
            out.append(grant(x, y, rng.choice(["advice", "money"]), at=at, start=START))
        elif choice == 2:
            out.append(event("message.sent", {"from": x, "to": y, "kind": "reply"}, at=at))
        elif choice == 3:
            out.append(
                event(
                    "introduction.made",
                    {"introduction_id": f"i{i}", "introducer": x, "subject": y, "target": z},
                    at=at,
                )
            )
        elif choice == 4:
            out.append(
                event(
                    "favor.requested",
                    {"favor_id": f"r{i}", "requester": x, "asked_of": y, "kind": "advice"},
                    at=at,
                )
            )
        else:
            out.append(event("gratitude.expressed", {"from": x, "to": y}, at=at))
    out.append(event("policy.changed", {"weights": {"money": 7}}, at=24 * 150))
    return out


async def test_two_workers_at_once_apply_each_event_once(pool: Pool, tenant: Tenant) -> None:
    history = _fixed_history()
    async with pool.acquire() as conn:
        result, _ = await append(conn, tenant.id, new_events(*history))

    async def worker() -> int:
        total = 0
        async with pool.acquire() as conn:
            for _ in range(200):
                total += await catch_up(conn, tenant.id, batch_size=4, max_batches=1)
                await asyncio.sleep(0)
        return total

    await asyncio.gather(worker(), worker())
    async with pool.acquire() as conn:
        await settle(conn, tenant.id, Cursor.decode(result.cursor))
        state = await state_of(conn, tenant.id)
        live = await dump(conn, tenant.id, 1)
        async with conn.transaction():
            await refold(conn, tenant.id, 98, state.checkpoint)
            assert live == await dump(conn, tenant.id, 98)
    assert state.events_applied == len(history)


@pytest.mark.parametrize("path", ["/v1/people/ana", "/v1/relationships/ana/ben"])
async def test_projection_reads_need_their_scope(client: Client, pool: Pool, path: str) -> None:
    from tests.conftest import make_tenant

    writer = await make_tenant(pool, ["events:write", "events:read"])
    assert_problem(await client.get(path, headers=writer.headers), 403)


async def test_a_generated_network_projects_live_as_a_replay_does(
    pool: Pool, tenant: Tenant
) -> None:
    """The benchmarks' scenario generator: every type, skewed activity, back-filled dates."""
    generated = [g.wire for g in Scenario(people=60, seed=4).events(1500)]
    assert {e["type"] for e in generated} == set(EVENT_TYPES)
    async with pool.acquire() as conn:
        for i in range(0, len(generated), 250):
            result, _ = await append(conn, tenant.id, new_events(*generated[i : i + 250]))
        await settle(conn, tenant.id, Cursor.decode(result.cursor))
        state = await state_of(conn, tenant.id)
        live = await dump(conn, tenant.id, state.generation)
        async with conn.transaction():
            await refold(conn, tenant.id, 95, state.checkpoint)
            assert live == await dump(conn, tenant.id, 95)
    assert state.events_applied == len(generated)


async def test_asking_which_tenants_are_behind_probes_each_tenant_not_the_log(
    pool: Pool, tenant: Tenant
) -> None:
    """The projector asks before every pass; a read of the whole log there cost
    half a core of PostgreSQL under load, growing with the log."""
    async with pool.acquire() as conn:
        for first in range(0, 6000, 1000):
            batch = [message(f"p{n % 50}", f"q{n % 7}") for n in range(first, first + 1000)]
            result, _ = await append(conn, tenant.id, new_events(*batch))
        await settle(conn, tenant.id, Cursor.decode(result.cursor))
        behind = await tenants_behind(conn)
        plan = await explain(conn, _TENANTS_BEHIND, PROJECTION)
        tenants = await conn.fetchval("SELECT count(*) FROM tenants")
        pages = await pages_of(conn, "events")
    assert tenant.id not in behind
    assert pages > 100, "the log must be large enough for a full read to show"
    assert blocks_on(plan, "events") <= 4 * tenants
