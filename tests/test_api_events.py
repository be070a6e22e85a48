"""The v1 events API over HTTP: append, read back three ways, retries, errors."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from ledger.store.database import Pool
from tests.conftest import Tenant, make_tenant
from tests.samples import event, story

Client = AsyncTestClient[Litestar]


async def post(client: Client, tenant: Tenant, events: list[dict[str, Any]], **kw: Any) -> Any:
    return await client.post("/v1/events", json={"events": events}, headers=tenant.headers, **kw)


async def count_events(pool: Pool, tenant: Tenant) -> int:
    async with pool.acquire() as conn:
        n: int = await conn.fetchval("SELECT count(*) FROM events WHERE tenant_id = $1", tenant.id)
    return n


async def readable(client: Client, tenant: Tenant, count: int) -> None:
    """Until the log shows ``count`` events: the commit horizon holds committed events
    back while any transaction on the server is still open (a projector's, a test's
    in another database), so a read right after an append may not see it yet."""
    deadline = time.monotonic() + 30
    while True:
        page = await client.get("/v1/events", params={"limit": 1000}, headers=tenant.headers)
        if len(page.json()["items"]) >= count:
            return
        assert time.monotonic() < deadline, "the appended events never became readable"
        await asyncio.sleep(0.02)


def assert_problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:ledger:problem:")
    assert body["title"]
    assert body["detail"]
    if field is not None:
        assert body.get("field") == field, body
    return body


async def test_every_event_type_is_appended_and_read_back_three_ways(
    client: Client, tenant: Tenant
) -> None:
    events = story()
    response = await post(client, tenant, events)
    assert response.status_code == 201, response.text
    await readable(client, tenant, len(events))
    body = response.json()
    appended = body["events"]
    assert [a["id"] for a in appended] == [e["id"] for e in events]
    positions = [a["position"] for a in appended]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)

    log = (await client.get("/v1/events", headers=tenant.headers)).json()
    assert [item["id"] for item in log["items"]] == [e["id"] for e in events]
    forgotten = {e["data"]["person"] for e in events if e["type"] == "person.forgotten"}
    assert log["next_cursor"] is None
    assert log["items"][-1]["cursor"] == body["cursor"]
    for item, sent in zip(log["items"], events, strict=True):
        assert item["type"] == sent["type"]
        assert set(item) == {
            "id",
            "type",
            "stream",
            "version",
            "position",
            "occurred_at",
            "recorded_at",
            "data",
            "metadata",
            "cursor",
        }
        if sent["type"] == "person.registered" and sent["data"]["person"] in forgotten:
            # Crypto-shredded (ledger.audit.erasure): the person, not their data.
            assert item["data"] == {
                "person": sent["data"]["person"],
                "display_name": None,
                "email": None,
                "erased": True,
            }
            continue
        for key, value in sent["data"].items():
            assert item["data"][key] == value

    for sent, placed in zip(events, appended, strict=True):
        one = await client.get(f"/v1/events/{sent['id']}", headers=tenant.headers)
        assert one.status_code == 200
        assert one.json()["stream"] == placed["stream"]
        assert one.json()["version"] == placed["version"]
        stream = await client.get(f"/v1/streams/{placed['stream']}/events", headers=tenant.headers)
        assert sent["id"] in [item["id"] for item in stream.json()["items"]]

    meeting = log["items"][1]
    assert meeting["metadata"] == {"correlation_id": "c-1", "actor": "app"}
    assert meeting["stream"].startswith("meeting-")
    assert meeting["version"] == 1


async def test_a_favor_stream_is_versioned_from_one(client: Client, tenant: Tenant) -> None:
    events = story()
    appended = (await post(client, tenant, events)).json()["events"]
    favor_stream = appended[3]["stream"]
    assert favor_stream == f"favor-{events[3]['data']['favor_id']}"
    assert [a["version"] for a in appended if a["stream"] == favor_stream] == [1, 2]
    items = (await client.get(f"/v1/streams/{favor_stream}/events", headers=tenant.headers)).json()
    assert [i["type"] for i in items["items"]] == ["favor.requested", "favor.granted"]


async def test_retrying_a_batch_answers_200_with_the_same_positions_and_writes_nothing(
    client: Client, pool: Pool, tenant: Tenant
) -> None:
    events = story()
    first = await post(client, tenant, events)
    assert first.status_code == 201
    before = await count_events(pool, tenant)
    again = await post(client, tenant, events)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert await count_events(pool, tenant) == before


async def test_a_known_id_with_other_content_is_a_409(
    client: Client, pool: Pool, tenant: Tenant
) -> None:
    original = event("message.sent", {"from": "a", "to": "b", "kind": "reply"})
    assert (await post(client, tenant, [original])).status_code == 201
    changed = {**original, "data": {"from": "a", "to": "b", "kind": "follow_up"}}
    fresh = event("message.sent", {"from": "a", "to": "c", "kind": "reply"})
    body = assert_problem(await post(client, tenant, [fresh, changed]), 409, "events[1].id")
    assert original["id"] in body["detail"]
    assert await count_events(pool, tenant) == 1


async def test_a_retry_mixed_with_new_events_appends_only_the_new(
    client: Client, pool: Pool, tenant: Tenant
) -> None:
    old = event("message.sent", {"from": "a", "to": "b", "kind": "reply"})
    first = (await post(client, tenant, [old])).json()["events"][0]
    new = event("message.sent", {"from": "a", "to": "b", "kind": "check_in"}, at=1)
    response = await post(client, tenant, [old, new])
    assert response.status_code == 201
    assert response.json()["events"][0] == first
    assert response.json()["events"][1]["version"] == 2
    assert await count_events(pool, tenant) == 2


async def test_expected_version_conflict_is_a_409_with_the_actual_version(
    client: Client, pool: Pool, tenant: Tenant
) -> None:
    first = event("message.sent", {"from": "a", "to": "b", "kind": "reply"}, expected_version=0)
    assert (await post(client, tenant, [first])).status_code == 201
    second = event("message.sent", {"from": "a", "to": "c", "kind": "reply"}, expected_version=0)
    body = assert_problem(await post(client, tenant, [second]), 409, "events[0].expected_version")
    assert body["actual_version"] == 1
    assert body["expected_version"] == 0
    assert body["stream"] == "messages-a"
    third = event("message.sent", {"from": "a", "to": "c", "kind": "reply"}, expected_version=1)
    assert (await post(client, tenant, [third])).json()["events"][0]["version"] == 2
    assert await count_events(pool, tenant) == 2


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"data": {"favor_id": "f", "receiver": "b", "kind": "advice"}}, "events[2].data.giver"),
        (
            {"data": {"favor_id": "f", "giver": "b", "receiver": "b", "kind": "advice"}},
            "events[2].data.receiver",
        ),
        (
            {"data": {"favor_id": "f", "giver": "a", "receiver": "b", "kind": "cash"}},
            "events[2].data.kind",
        ),
        (
            {
                "data": {
                    "favor_id": "f",
                    "giver": "a",
                    "receiver": "b",
                    "kind": "money",
                    "weight": -1,
                }
            },
            "events[2].data.weight",
        ),
        (
            {"data": {"favor_id": "f", "giver": "a", "receiver": "b", "kind": "money", "tip": 1}},
            "events[2].data.tip",
        ),
        ({"type": "favor.given"}, "events[2].type"),
        ({"occurred_at": "2025-01-01T10:00:00"}, "events[2].occurred_at"),
        ({"occurred_at": "yesterday"}, "events[2].occurred_at"),
        ({"occurred_at": "9999-01-01T00:00:00Z"}, "events[2].occurred_at"),
        ({"occurred_at": "1850-01-01T00:00:00Z"}, "events[2].occurred_at"),
        ({"id": "not-a-uuid"}, "events[2].id"),
        ({"expected_version": -1}, "events[2].expected_version"),
        ({"metadata": {"actor": 5}}, "events[2].metadata.actor"),
        ({"metadata": {"nested": {"a": 1}}}, "events[2].metadata"),
        ({"colour": "red"}, "events[2].colour"),
        (
            {"data": {"favor_id": "with space", "giver": "a", "receiver": "b", "kind": "money"}},
            "events[2].data.favor_id",
        ),
    ],
)
async def test_a_malformed_event_refuses_the_whole_batch(
    client: Client, pool: Pool, tenant: Tenant, bad: dict[str, Any], field: str
) -> None:
    good = [
        event("message.sent", {"from": "a", "to": "b", "kind": "reply"}),
        event("message.sent", {"from": "b", "to": "a", "kind": "reply"}),
    ]
    malformed = {
        **event(
            "favor.granted", {"favor_id": "f", "giver": "a", "receiver": "b", "kind": "advice"}
        ),
        **bad,
    }
    body = assert_problem(await post(client, tenant, [*good, malformed]), 422, field)
    assert body["pointer"] == "/" + field.replace("[", "/").replace("]", "").replace(".", "/")
    assert await count_events(pool, tenant) == 0


@pytest.mark.parametrize(
    ("events", "field", "status"),
    [
        (
            [
                event(
                    "meeting.held",
                    {
                        "meeting_id": "m",
                        "participants": ["a", "a"],
                        "initiated_by": "a",
                        "channel": "call",
                        "purpose": "advice",
                    },
                )
            ],
            "events[0].data.participants[1]",
            422,
        ),
        (
            [
                event(
                    "meeting.held",
                    {
                        "meeting_id": "m",
                        "participants": ["a"],
                        "initiated_by": "a",
                        "channel": "call",
                        "purpose": "advice",
                    },
                )
            ],
            "events[0].data.participants",
            422,
        ),
        (
            [
                event(
                    "meeting.held",
                    {
                        "meeting_id": "m",
                        "participants": ["a", "b"],
                        "initiated_by": "c",
                        "channel": "call",
                        "purpose": "advice",
                    },
                )
            ],
            "events[0].data.initiated_by",
            422,
        ),
        (
            [
                event(
                    "introduction.made",
                    {"introduction_id": "i", "introducer": "a", "subject": "b", "target": "b"},
                )
            ],
            "events[0].data.target",
            422,
        ),
        (
            [
                event(
                    "introduction.offered",
                    {"introduction_id": "i", "introducer": "a", "subject": "a", "target": "b"},
                )
            ],
            "events[0].data.introducer",
            422,
        ),
    ],
)
async def test_self_contradictory_events_are_422(
    client: Client,
    pool: Pool,
    tenant: Tenant,
    events: list[dict[str, Any]],
    field: str,
    status: int,
) -> None:
    assert_problem(await post(client, tenant, events), status, field)
    assert await count_events(pool, tenant) == 0


def _favor(favor_id: str, kind: str = "advice") -> dict[str, Any]:
    return event(
        "favor.requested", {"favor_id": favor_id, "requester": "a", "asked_of": "b", "kind": kind}
    )


def _grant(favor_id: str, giver: str = "b", receiver: str = "a") -> dict[str, Any]:
    return event(
        "favor.granted",
        {"favor_id": favor_id, "giver": giver, "receiver": receiver, "kind": "advice"},
        at=1,
    )


def _introduction(step: str, target: str = "c") -> dict[str, Any]:
    return event(
        f"introduction.{step}",
        {"introduction_id": "i", "introducer": "a", "subject": "b", "target": target},
    )


LIFECYCLE_CASES = {
    "grant after decline": (
        [_favor("f"), event("favor.declined", {"favor_id": "f", "by": "b"})],
        _grant("f"),
        "events[0].data.favor_id",
    ),
    "grant after withdrawal": (
        [_favor("f"), event("favor.withdrawn", {"favor_id": "f", "by": "a"})],
        _grant("f"),
        "events[0].data.favor_id",
    ),
    "double grant": ([_favor("f"), _grant("f")], _grant("f"), "events[0].data.favor_id"),
    "double unsolicited grant": ([_grant("f")], _grant("f"), "events[0].data.favor_id"),
    "grant by the wrong person": ([_favor("f")], _grant("f", giver="c"), "events[0].data.giver"),
    "decline by the requester": (
        [_favor("f")],
        event("favor.declined", {"favor_id": "f", "by": "a"}),
        "events[0].data.by",
    ),
    "decline of nothing": (
        [],
        event("favor.declined", {"favor_id": "f", "by": "b"}),
        "events[0].data.favor_id",
    ),
    "request twice": ([_favor("f")], _favor("f"), "events[0].data.favor_id"),
    "introduction made twice": (
        [_introduction("made")],
        _introduction("made"),
        "events[0].data.introduction_id",
    ),
    "introduction made between others": (
        [_introduction("offered")],
        _introduction("made", target="d"),
        "events[0].data.subject",
    ),
    "consent from a stranger": (
        [_introduction("offered")],
        event("introduction.consented", {"introduction_id": "i", "party": "z"}),
        "events[0].data.party",
    ),
    "meeting recorded twice": (
        [
            event(
                "meeting.held",
                {
                    "meeting_id": "m",
                    "participants": ["a", "b"],
                    "initiated_by": "a",
                    "channel": "call",
                    "purpose": "advice",
                },
            )
        ],
        event(
            "meeting.held",
            {
                "meeting_id": "m",
                "participants": ["a", "b"],
                "initiated_by": "a",
                "channel": "call",
                "purpose": "advice",
            },
        ),
        "events[0].data.meeting_id",
    ),
    "registered twice": (
        [event("person.registered", {"person": "a"})],
        event("person.registered", {"person": "a"}),
        "events[0].data.person",
    ),
}


@pytest.mark.parametrize("case", LIFECYCLE_CASES, ids=list(LIFECYCLE_CASES))
async def test_lifecycle_violations_are_409_and_write_nothing(
    client: Client, pool: Pool, tenant: Tenant, case: str
) -> None:
    before, offending, field = LIFECYCLE_CASES[case]
    before = [{**e, "id": str(uuid.uuid4())} for e in before]
    offending = {**offending, "id": str(uuid.uuid4())}
    if before:
        assert (await post(client, tenant, before)).status_code == 201
    body = assert_problem(await post(client, tenant, [offending]), 409, field)
    assert body["type"] == "urn:ledger:problem:lifecycle-conflict"
    assert await count_events(pool, tenant) == len(before)


async def test_a_lifecycle_violation_inside_one_batch_refuses_it(
    client: Client, pool: Pool, tenant: Tenant
) -> None:
    batch = [_favor("f"), event("favor.declined", {"favor_id": "f", "by": "b"}), _grant("f")]
    assert_problem(await post(client, tenant, batch), 409, "events[2].data.favor_id")
    assert await count_events(pool, tenant) == 0


async def test_the_same_id_twice_in_a_batch_is_422(client: Client, tenant: Tenant) -> None:
    one = event("message.sent", {"from": "a", "to": "b", "kind": "reply"})
    assert_problem(await post(client, tenant, [one, dict(one)]), 422, "events[1].id")


async def test_limits(client: Client, pool: Pool, tenant: Tenant) -> None:
    many = [event("message.sent", {"from": "a", "to": "b", "kind": "reply"}) for _ in range(1001)]
    assert_problem(await post(client, tenant, many), 422, "events")
    assert_problem(await post(client, tenant, []), 422, "events")
    huge = event(
        "favor.requested", {"favor_id": "f", "requester": "a", "asked_of": "b", "kind": "other"}
    )
    huge["data"]["offers_in_return"] = "x" * 1000
    assert (await post(client, tenant, [huge])).status_code == 201
    too_long = event("person.registered", {"person": "p", "display_name": "x" * 1001})
    assert_problem(await post(client, tenant, [too_long]), 422, "events[0].data.display_name")
    big_metadata = event(
        "message.sent",
        {"from": "a", "to": "b", "kind": "reply"},
        metadata={f"k{i}": "v" * 1000 for i in range(20)},
    )
    assert_problem(await post(client, tenant, [big_metadata]), 413, "events[0].metadata")
    assert await count_events(pool, tenant) == 1


async def test_a_body_over_the_request_limit_is_413(client: Client, tenant: Tenant) -> None:
    body = b'{"events": [' + b" " * (17 * 1024 * 1024) + b"]}"
    response = await client.post(
        "/v1/events", content=body, headers={**tenant.headers, "content-type": "application/json"}
    )
    assert_problem(response, 413)


async def test_bodies_that_are_not_json_are_422_or_415(client: Client, tenant: Tenant) -> None:
    headers = {**tenant.headers, "content-type": "application/json"}
    assert_problem(await client.post("/v1/events", content=b"{", headers=headers), 422)
    assert_problem(await client.post("/v1/events", content=b"\xff\xfe", headers=headers), 422)
    assert_problem(await client.post("/v1/events", content=b"[]", headers=headers), 422)
    text = {**tenant.headers, "content-type": "text/plain"}
    assert_problem(
        await client.post("/v1/events", content=b"{}", headers=text), 415, "Content-Type"
    )


async def test_keys_are_required_and_scoped(client: Client, pool: Pool) -> None:
    one = [event("message.sent", {"from": "a", "to": "b", "kind": "reply"})]
    response = await client.post("/v1/events", json={"events": one})
    assert_problem(response, 401, "Authorization")
    assert response.headers["www-authenticate"] == "Bearer"
    bogus = {"Authorization": "Bearer ldg_nothing_here"}
    assert_problem(await client.get("/v1/events", headers=bogus), 401)
    reader = await make_tenant(pool, ["events:read"])
    body = assert_problem(await post(client, reader, one), 403)
    assert body["required_scope"] == "events:write"
    writer = await make_tenant(pool, ["events:write"])
    assert (await post(client, writer, one)).status_code == 201
    assert_problem(await client.get("/v1/events", headers=writer.headers), 403)


async def test_a_revoked_key_is_refused(client: Client, pool: Pool, tenant: Tenant) -> None:
    assert (await client.get("/v1/events", headers=tenant.headers)).status_code == 200
    async with pool.acquire() as conn:
        await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE tenant_id = $1", tenant.id)
    assert_problem(await client.get("/v1/events", headers=tenant.headers), 401)


async def test_a_tenant_never_sees_another_tenants_events(
    client: Client, tenant: Tenant, other_tenant: Tenant
) -> None:
    events = story()
    appended = (await post(client, tenant, events)).json()["events"]
    theirs = (await client.get("/v1/events", headers=other_tenant.headers)).json()
    assert theirs["items"] == []
    one = await client.get(f"/v1/events/{events[0]['id']}", headers=other_tenant.headers)
    assert_problem(one, 404)
    stream = await client.get(
        f"/v1/streams/{appended[3]['stream']}/events", headers=other_tenant.headers
    )
    assert_problem(stream, 404)
    by_person = await client.get(
        "/v1/events", params={"person": "ana"}, headers=other_tenant.headers
    )
    assert by_person.json()["items"] == []
    # The same ids in another tenant are that tenant's own events, not a retry.
    again = await post(client, other_tenant, events)
    assert again.status_code == 201


async def test_log_pagination_filters_and_cursors(client: Client, tenant: Tenant) -> None:
    events = story()
    await post(client, tenant, events)
    await readable(client, tenant, len(events))
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 5}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/events", params=params, headers=tenant.headers)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(page["items"]) == 5
    assert seen == [e["id"] for e in events]

    by_type = await client.get(
        "/v1/events", params={"type": ["favor.requested", "favor.declined"]}, headers=tenant.headers
    )
    assert [i["type"] for i in by_type.json()["items"]] == [
        "favor.requested",
        "favor.requested",
        "favor.declined",
        "favor.requested",
    ]
    cleo = await client.get("/v1/events", params={"person": "cleo"}, headers=tenant.headers)
    assert {i["type"] for i in cleo.json()["items"]} == {
        "favor.requested",
        "favor.declined",
        "introduction.offered",
        "introduction.consented",
        "introduction.made",
    }
    both = await client.get(
        "/v1/events", params={"person": "dev", "type": "name.invoked"}, headers=tenant.headers
    )
    assert [i["type"] for i in both.json()["items"]] == ["name.invoked"]

    middle = (await client.get("/v1/events", headers=tenant.headers)).json()["items"][9]["cursor"]
    rest = await client.get("/v1/events", params={"cursor": middle}, headers=tenant.headers)
    assert [i["id"] for i in rest.json()["items"]] == [e["id"] for e in events[10:]]


async def test_stream_pagination(client: Client, tenant: Tenant) -> None:
    events = [
        event("message.sent", {"from": "a", "to": "b", "kind": "reply"}, at=i) for i in range(7)
    ]
    await post(client, tenant, events)
    versions: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (
            await client.get("/v1/streams/messages-a/events", params=params, headers=tenant.headers)
        ).json()
        versions += [i["version"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert versions == list(range(1, 8))


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/events", {"limit": 0}, "limit"),
        ("/v1/events", {"limit": 1001}, "limit"),
        ("/v1/events", {"limit": "ten"}, "limit"),
        ("/v1/events", {"cursor": "garbage"}, "cursor"),
        ("/v1/events", {"cursor": "c1AAAA"}, "cursor"),
        ("/v1/events", {"type": "favor.given"}, "type"),
        ("/v1/streams/messages-a/events", {"cursor": "c1AAAAAAAAAt8AAAAAAAAAAg"}, "cursor"),
    ],
)
async def test_bad_query_parameters_are_422_naming_the_parameter(
    client: Client, tenant: Tenant, path: str, params: dict[str, Any], field: str
) -> None:
    body = assert_problem(await client.get(path, params=params, headers=tenant.headers), 422, field)
    assert "pointer" not in body


async def test_unknown_things_are_404_problems(client: Client, tenant: Tenant) -> None:
    assert_problem(
        await client.get(f"/v1/events/{uuid.uuid4()}", headers=tenant.headers), 404, "event_id"
    )
    assert_problem(
        await client.get("/v1/streams/favor-nope/events", headers=tenant.headers), 404, "stream"
    )
    assert_problem(await client.get("/v1/nothing", headers=tenant.headers), 404)
    assert_problem(await client.delete("/v1/events", headers=tenant.headers), 405)


async def test_horizon_reports_the_readable_head(client: Client, tenant: Tenant) -> None:
    empty = (await client.get("/v1/events/horizon", headers=tenant.headers)).json()
    assert empty["cursor"] is None
    assert empty["pending_events"] == 0
    events = story()
    cursor = (await post(client, tenant, events)).json()["cursor"]
    await readable(client, tenant, len(events))
    after = (await client.get("/v1/events/horizon", headers=tenant.headers)).json()
    assert after["cursor"] == cursor
    assert after["pending_events"] == 0


async def test_health(client: Client) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
