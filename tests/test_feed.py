"""The change feed over real HTTP: a `ledger serve` process and SSE clients on loopback."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import msgspec
import pytest

from ledger.store.database import Pool
from tests.conftest import Tenant, make_tenant
from tests.samples import event, story
from tests.test_cli import env_with, serving

DEADLINE_S = 60


class Message(msgspec.Struct):
    """One SSE message as a client parses it."""

    id: str | None = None
    data: str | None = None
    comments: list[str] = msgspec.field(default_factory=list)
    retry: int | None = None


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[str]:
    env = env_with(
        LEDGER_DATABASE_URL=database_url, LEDGER_FEED_HEARTBEAT="0.3", LEDGER_FEED_POLL="0.2"
    )
    with serving(env) as base:
        yield base


async def messages(response: httpx.Response) -> AsyncIterator[Message]:
    """The SSE wire format, parsed the way EventSource does (fields, blank line ends one)."""
    current = Message()
    async for line in response.aiter_lines():
        if line == "":
            if current != Message():
                yield current
            current = Message()
        elif line.startswith(":"):
            current.comments.append(line[1:].strip())
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "id":
                current.id = value
            elif name == "data":
                current.data = value if current.data is None else current.data + "\n" + value
            elif name == "retry":
                current.retry = int(value)


async def read_events(
    http: httpx.AsyncClient,
    tenant: Tenant,
    *,
    count: int,
    last_event_id: str | None = None,
    params: dict[str, Any] | None = None,
) -> list[Message]:
    """Connect, take ``count`` events, hang up (as a flaky consumer does)."""
    headers = dict(tenant.headers)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    taken: list[Message] = []
    async with http.stream("GET", "/v1/events/feed", headers=headers, params=params) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for message in messages(response):
            if message.data is not None:
                taken.append(message)
                if len(taken) == count:
                    break
    return taken


async def log_ids(http: httpx.AsyncClient, tenant: Tenant, **params: Any) -> list[str]:
    page = await http.get("/v1/events", params={"limit": 1000, **params}, headers=tenant.headers)
    return [item["id"] for item in page.json()["items"]]


async def readable(http: httpx.AsyncClient, tenant: Tenant, count: int) -> None:
    """Until the log shows ``count`` events (the commit horizon may hold them back a moment)."""
    deadline = time.monotonic() + DEADLINE_S
    while len(await log_ids(http, tenant)) < count:
        assert time.monotonic() < deadline, "the appended events never became readable"
        await asyncio.sleep(0.05)


async def test_a_consumer_that_keeps_dropping_sees_every_event_exactly_once(
    server: str, pool: Pool
) -> None:
    tenant = await make_tenant(pool)
    writers, batches, per_batch = 4, 10, 2
    total = writers * batches * per_batch

    async def write(http: httpx.AsyncClient, who: str) -> None:
        for b in range(batches):
            events = [
                event("message.sent", {"from": who, "to": "ben", "kind": "check_in"}, at=b)
                for _ in range(per_batch)
            ]
            response = await http.post(
                "/v1/events", json={"events": events}, headers=tenant.headers
            )
            assert response.status_code == 201, response.text
            await asyncio.sleep(random.uniform(0, 0.05))

    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        writing = asyncio.gather(*(write(http, f"w{i}") for i in range(writers)))
        seen: list[Message] = []
        connections = 0
        deadline = time.monotonic() + DEADLINE_S
        while len(seen) < total and time.monotonic() < deadline:
            last = seen[-1].id if seen else None
            want = min(random.randint(1, 5), total - len(seen))
            seen += await read_events(http, tenant, count=want, last_event_id=last)
            connections += 1
        await writing
        await readable(http, tenant, total)
        expected = await log_ids(http, tenant)

    ids = [msgspec.json.decode(m.data or "")["id"] for m in seen]
    assert len(expected) == total
    assert ids == expected  # log order, nothing missed, nothing repeated
    assert connections >= total // 5
    cursors = [msgspec.json.decode(m.data or "")["cursor"] for m in seen]
    assert [m.id for m in seen] == cursors


async def test_last_event_id_wins_over_the_cursor_a_reconnecting_client_repeats(
    server: str, pool: Pool
) -> None:
    tenant = await make_tenant(pool)
    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        events = story()
        response = await http.post("/v1/events", json={"events": events}, headers=tenant.headers)
        assert response.status_code == 201
        first_two = await read_events(http, tenant, count=2)
        from_cursor = await read_events(http, tenant, count=1, params={"cursor": first_two[0].id})
        assert from_cursor[0].id == first_two[1].id
        resumed = await read_events(
            http,
            tenant,
            count=1,
            last_event_id=first_two[1].id,
            params={"cursor": first_two[0].id},
        )
    assert msgspec.json.decode(resumed[0].data or "")["id"] == events[2]["id"]


async def test_filters_by_type_and_person_follow_the_log_reader(server: str, pool: Pool) -> None:
    tenant = await make_tenant(pool)
    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        response = await http.post("/v1/events", json={"events": story()}, headers=tenant.headers)
        assert response.status_code == 201
        await readable(http, tenant, len(story()))
        filters = {"type": ["favor.requested", "favor.granted"], "person": "ana"}
        expected = await log_ids(http, tenant, **filters)
        assert 0 < len(expected) < len(story())
        got = await read_events(http, tenant, count=len(expected), params=filters)
    assert [msgspec.json.decode(m.data or "")["id"] for m in got] == expected
    for message in got:
        envelope = msgspec.json.decode(message.data or "")
        assert envelope["type"] in filters["type"]


async def test_quiet_feeds_send_heartbeats_and_never_another_tenants_events(
    server: str, pool: Pool
) -> None:
    tenant, other = await make_tenant(pool), await make_tenant(pool)
    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        response = await http.post("/v1/events", json={"events": story()}, headers=other.headers)
        assert response.status_code == 201
        received: list[Message] = []
        async with http.stream("GET", "/v1/events/feed", headers=tenant.headers) as stream:
            async for message in messages(stream):
                received.append(message)
                if sum("heartbeat" in m.comments for m in received) == 2:
                    break
    assert received[0].retry == 1000  # how soon to reconnect
    assert all(m.data is None for m in received)


@pytest.mark.parametrize(
    ("params", "headers", "status", "field"),
    [
        ({"cursor": "nope"}, {}, 422, "cursor"),
        ({}, {"Last-Event-ID": "c1-not-a-cursor"}, 422, "Last-Event-ID"),
        ({"type": "favor.given"}, {}, 422, "type"),
    ],
)
async def test_bad_resume_points_and_filters_are_problems(
    server: str,
    pool: Pool,
    params: dict[str, str],
    headers: dict[str, str],
    status: int,
    field: str,
) -> None:
    tenant = await make_tenant(pool)
    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        response = await http.get(
            "/v1/events/feed", params=params, headers={**tenant.headers, **headers}
        )
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["field"] == field


async def test_the_feed_needs_a_key_with_events_read(server: str, pool: Pool) -> None:
    writer = await make_tenant(pool, ["events:write"])
    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        anonymous = await http.get("/v1/events/feed")
        forbidden = await http.get("/v1/events/feed", headers=writer.headers)
    assert anonymous.status_code == 401
    assert forbidden.status_code == 403
    assert forbidden.json()["required_scope"] == "events:read"


async def test_a_server_stops_promptly_while_feeds_are_still_open(
    database_url: str, pool: Pool
) -> None:
    tenant = await make_tenant(pool)
    env = env_with(LEDGER_DATABASE_URL=database_url, LEDGER_FEED_HEARTBEAT="0.3")
    async with httpx.AsyncClient(timeout=30) as http:
        # Leaving `serving` terminates the server and waits for it to exit (at most
        # 30 s, else TimeoutExpired): an open feed must not keep it alive.
        with serving(env) as base:
            stream = await http.send(
                http.build_request("GET", f"{base}/v1/events/feed", headers=tenant.headers),
                stream=True,
            )
            assert stream.status_code == 200
            received = messages(stream)
            first = await anext(received)
            assert first.comments == ["ledger feed"]
        # The stream ends with the server (cut mid-chunk: the client just reconnects).
        with pytest.raises(httpx.RemoteProtocolError):
            await asyncio.wait_for(drain(received), DEADLINE_S)
        await stream.aclose()


async def drain(received: AsyncIterator[Message]) -> None:
    async for _ in received:
        pass


async def read_violations(
    http: httpx.AsyncClient, tenant: Tenant, *, count: int, last_event_id: str | None = None
) -> list[Message]:
    headers = dict(tenant.headers)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    taken: list[Message] = []
    async with http.stream("GET", "/v1/violations/feed", headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        async for message in messages(response):
            if message.data is not None:
                taken.append(message)
                if len(taken) == count:
                    break
    return taken


async def test_the_violations_feed_announces_each_violation_once_and_resumes(
    server: str, pool: Pool
) -> None:
    from tests.test_violations import a_networking_story

    tenant = await make_tenant(pool)
    async with httpx.AsyncClient(base_url=server, timeout=DEADLINE_S) as http:
        posted = await http.post(
            "/v1/events", json={"events": a_networking_story()}, headers=tenant.headers
        )
        assert posted.status_code == 201, posted.text
        listed = await http.get(
            "/v1/violations",
            headers={**tenant.headers, "Ledger-Min-Cursor": posted.json()["cursor"]},
        )
        expected = [v["id"] for v in listed.json()["items"]]
        assert len(expected) == 8
        first = await read_violations(http, tenant, count=3)
        rest = await read_violations(http, tenant, count=5, last_event_id=first[-1].id)
        got = [msgspec.json.decode(m.data or "")["id"] for m in [*first, *rest]]
        assert sorted(got) == sorted(expected) and len(set(got)) == 8
        assert all(m.id and m.id.startswith("n1") for m in [*first, *rest])

        bad = await http.get("/v1/violations/feed", params={"code": "E0"}, headers=tenant.headers)
        assert bad.status_code == 422 and bad.json()["field"] == "code"
        forged = await http.get(
            "/v1/violations/feed", headers={**tenant.headers, "Last-Event-ID": "c1zzz"}
        )
        assert forged.status_code == 422 and forged.json()["field"] == "Last-Event-ID"
