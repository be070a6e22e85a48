"""Hostile input over real HTTP: each a clear 4xx naming the culprit, nothing written,
the server still healthy afterwards.

One ``ledger serve`` process for the module, with a 2 MiB body limit so that the
limit itself can be crossed cheaply.
"""

from __future__ import annotations

import base64
import json
import struct
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from ledger.store.database import Pool
from tests.conftest import Tenant
from tests.reliability.conftest import Server, serving, total_events

BODY_LIMIT = 2 * 1024 * 1024
MB = 1_000_000
# An error answer stays small whatever was sent: nothing hostile is echoed back whole.
MAX_ANSWER_BYTES = 2048


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[Server]:
    with serving(database_url, LEDGER_MAX_BODY_BYTES=str(BODY_LIMIT)) as running:
        yield running


@pytest.fixture
async def http(server: Server, tenant: Tenant) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base, headers=tenant.headers, timeout=30) as c:
        yield c


def message(**envelope: Any) -> dict[str, Any]:
    return {
        "type": "message.sent",
        "occurred_at": "2025-01-01T00:00:00Z",
        "data": {"from": "ana", "to": "ben", "kind": "reply"},
        **envelope,
    }


def batch(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def raw(prefix: str, middle: str, suffix: str) -> bytes:
    return (prefix + middle + suffix).encode()


NESTED = "[" * 100_000 + "]" * 100_000
EVENT_HEAD = '{"events": [{"type": "message.sent", "occurred_at": "2025-01-01T00:00:00Z", '

CASES: dict[str, tuple[bytes, int, str | None]] = {
    "body over the limit": (
        batch(message(data={"from": "a" * (3 * MB), "to": "b", "kind": "reply"})),
        413,
        None,
    ),
    "1001 events": (batch(*[message() for _ in range(1001)]), 422, "events"),
    "deeply nested body": (NESTED.encode(), 422, None),
    "deeply nested data": (
        raw(EVENT_HEAD + '"data": {"from": ', NESTED, ', "to": "b", "kind": "reply"}}]}'),
        422,
        "events[0].data.from",
    ),
    "deeply nested metadata": (
        raw(EVENT_HEAD + '"metadata": {"k": ', NESTED, '}, "data": {}}]}'),
        422,
        "events[0].metadata",
    ),
    "invalid UTF-8": (
        b'{"events": [{"type": "message.sent", "occurred_at": "2025-01-01T00:00:00Z", '
        b'"data": {"from": "\xff\xfe", "to": "b", "kind": "reply"}}]}',
        422,
        None,
    ),
    "a lone UTF-16 surrogate": (
        raw(EVENT_HEAD, '"metadata": {"actor": "\\ud800"}, ', '"data": {}}]}'),
        422,
        None,
    ),
    "1 MB person": (
        batch(message(data={"from": "a" * MB, "to": "b", "kind": "reply"})),
        422,
        "events[0].data.from",
    ),
    "1 MB type": (batch(message(type="x" * MB)), 422, "events[0].type"),
    "1 MB metadata value": (
        batch(message(metadata={"actor": "x" * MB})),
        422,
        "events[0].metadata",
    ),
    "1 MB id": (batch(message(id="x" * MB)), 422, "events[0].id"),
    "year 9999": (batch(message(occurred_at="9999-12-31T23:59:59Z")), 422, "events[0].occurred_at"),
    "year 9999 west of UTC": (
        batch(message(occurred_at="9999-12-31T23:00:00-14:00")),
        422,
        "events[0].occurred_at",
    ),
    "year 1 east of UTC": (
        batch(message(occurred_at="0001-01-01T00:00:00+14:00")),
        422,
        "events[0].occurred_at",
    ),
    "a time without a zone": (
        batch(message(occurred_at="2025-01-01T00:00:00")),
        422,
        "events[0].occurred_at",
    ),
    "an unknown event type": (batch(message(type="favor.stolen")), 422, "events[0].type"),
    "NUL in a metadata value": (
        batch(message(metadata={"actor": "crm\x00"})),
        422,
        "events[0].metadata.actor",
    ),
    "NUL in a metadata key": (
        batch(message(metadata={"a\x00": "x"})),
        422,
        "events[0].metadata",
    ),
    "NUL in a display name": (
        batch(
            {
                "type": "person.registered",
                "occurred_at": "2025-01-01T00:00:00Z",
                "data": {"person": "ana", "display_name": "An\x00a"},
            }
        ),
        422,
        "events[0].data.display_name",
    ),
    "not JSON": (b"events=1", 422, None),
    "no events": (b'{"events": []}', 422, "events"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
async def test_hostile_bodies_are_refused_clearly_and_write_nothing(
    http: httpx.AsyncClient, pool: Pool, case: str
) -> None:
    body, status, field = CASES[case]
    before = await total_events(pool)
    response = await http.post(
        "/v1/events", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/problem+json")
    assert len(response.content) <= MAX_ANSWER_BYTES, response.text[:500]
    problem = response.json()
    assert problem["status"] == status
    assert problem["detail"]
    assert problem.get("field") == field, problem
    if field is not None:
        assert problem["pointer"].startswith("/events")
    assert await total_events(pool) == before
    assert (await http.get("/health")).status_code == 200


async def test_a_long_unknown_field_name_is_named_but_not_echoed_whole(
    http: httpx.AsyncClient, pool: Pool
) -> None:
    before = await total_events(pool)
    response = await http.post("/v1/events", content=batch({**message(), "x" * MB: 1}))
    assert response.status_code == 422
    assert len(response.content) <= MAX_ANSWER_BYTES
    assert response.json()["field"].startswith("events[0].xxxx")
    assert await total_events(pool) == before


async def test_an_unknown_type_lists_the_known_ones(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/events", content=batch(message(type="favor.stolen")))
    assert "known types: person.registered" in response.json()["detail"]


async def test_a_literal_backslash_u0000_is_text_and_is_stored(
    http: httpx.AsyncClient, pool: Pool, tenant: Tenant
) -> None:
    """Only a real NUL is refused; the six characters ``\\u0000`` are ordinary text."""
    one = message(id=str(uuid.uuid4()), metadata={"note": "\\u0000"})
    response = await http.post("/v1/events", content=batch(one))
    assert response.status_code == 201, response.text
    stored = (await http.get(f"/v1/events/{one['id']}")).json()
    assert stored["metadata"] == {"note": "\\u0000"}


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/people/a%00b", "person"),
        ("/v1/people/a%00b/balances", "person"),
        ("/v1/relationships/ana/b%00", "b"),
        ("/v1/streams/s%00/events", "stream"),
        ("/v1/events?person=a%00", "person"),
    ],
)
async def test_nul_in_a_path_or_query_parameter_is_a_422_naming_it(
    http: httpx.AsyncClient, path: str, field: str
) -> None:
    response = await http.get(path)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert "pointer" not in response.json()
    assert (await http.get("/health")).status_code == 200


async def test_a_form_body_is_a_415(http: httpx.AsyncClient, pool: Pool) -> None:
    before = await total_events(pool)
    response = await http.post(
        "/v1/events",
        content=batch(message()),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415
    assert response.json()["field"] == "Content-Type"
    assert await total_events(pool) == before


def crafted(prefix: str, raw: bytes) -> str:
    return prefix + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


MAX_U64 = 2**64 - 1


@pytest.mark.parametrize(
    "path",
    [
        "/v1/events?cursor=" + crafted("c1", struct.pack(">QQ", MAX_U64, MAX_U64)),
        "/v1/events?cursor=" + crafted("c1", struct.pack(">QQ", 1, MAX_U64)),
        "/v1/streams/messages-ana/events?cursor=" + crafted("v1", MAX_U64.to_bytes(8, "big")),
        "/v1/people/ana/timeline?cursor=" + crafted("t1", struct.pack(">qQ", 0, MAX_U64)),
        "/v1/people/ana/relationships?cursor=" + crafted("o1", b"-5"),
    ],
)
async def test_forged_cursors_beyond_any_real_value_are_422s(
    http: httpx.AsyncClient, path: str
) -> None:
    """A cursor decodes to numbers; ones no ledger could issue must not reach SQL."""
    posted = await http.post("/v1/events", content=batch(message(id=str(uuid.uuid4()))))
    # Read once the projections know ana, so the cursor is what gets refused.
    response = await http.get(path, headers={"Ledger-Min-Cursor": posted.json()["cursor"]})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "cursor"
    assert (await http.get("/health")).status_code == 200


@pytest.mark.parametrize(
    ("path", "field", "takes"),
    [
        ("/v1/events?limt=5", "limt", "cursor, limit, person, type"),
        ("/v1/people/ana/relationships?=0.0", "(a name left empty)", "as_of, cursor, limit, sort"),
        ("/v1/events/horizon?" + "x" * 5000 + "=1", "x" * 80, "none"),
    ],
)
async def test_a_query_parameter_the_route_does_not_take_is_a_422_naming_it(
    http: httpx.AsyncClient, path: str, field: str, takes: str
) -> None:
    """Silently ignored, ``?limt=5`` would leave the client believing it paged."""
    response = await http.get(path)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["field"] == field
    assert problem["detail"].endswith(f"it takes {takes}")
    assert len(response.content) <= MAX_ANSWER_BYTES


async def test_a_chunked_body_over_the_limit_is_a_413_and_writes_nothing(
    http: httpx.AsyncClient, pool: Pool
) -> None:
    """Without Content-Length the limit is enforced while the body streams in."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"events": [{"type": "message.sent", "occurred_at": "2025-01-01T00:00:00Z", '
        yield b'"data": {"from": "'
        for _ in range(3 * BODY_LIMIT // 65536):
            yield b"a" * 65536
        yield b'", "to": "b", "kind": "reply"}}]}'

    before = await total_events(pool)
    response = await http.post(
        "/v1/events", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413, response.text[:300]
    assert response.json()["type"] == "urn:ledger:problem:payload-too-large"
    assert await total_events(pool) == before
    assert (await http.get("/health")).status_code == 200
