"""CloudEvents 1.0 producers post to the ledger, with the official SDK as the client."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from cloudevents.core.bindings.http import to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from litestar import Litestar
from litestar.testing import AsyncTestClient

from ledger.events.cloudevents import BATCH, ID_NAMESPACE, ledger_id
from ledger.store.database import Pool
from tests.conftest import Tenant
from tests.test_api_events import assert_problem, count_events

Client = AsyncTestClient[Litestar]
FORMAT = JSONFormat()
WHEN = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def cloudevent(
    type_: str, data: dict[str, Any], *, id_: str | None = None, at: int = 0, **extra: Any
) -> CloudEvent:
    attributes = {
        "type": type_,
        "source": "/crm/acme",
        "id": id_ or str(uuid.uuid4()),
        "time": WHEN + timedelta(hours=at),
        **extra,
    }
    return CloudEvent(attributes=attributes, data=data)


def granted(favor: str, **extra: Any) -> CloudEvent:
    data = {"favor_id": favor, "giver": "ben", "receiver": "ana", "kind": "advice"}
    return cloudevent("ledger.favor.granted", data, **extra)


async def post_one(client: Client, tenant: Tenant, event: CloudEvent) -> Any:
    message = to_structured(event, FORMAT)
    return await client.post(
        "/v1/events", content=message.body, headers={**tenant.headers, **message.headers}
    )


def batch_body(events: list[CloudEvent]) -> bytes:
    return b"[" + b",".join(FORMAT.write(event) for event in events) + b"]"


async def post_batch(client: Client, tenant: Tenant, body: bytes) -> Any:
    return await client.post(
        "/v1/events", content=body, headers={**tenant.headers, "Content-Type": BATCH}
    )


async def test_a_structured_cloudevent_becomes_a_ledger_event(
    client: Client, tenant: Tenant, pool: Pool
) -> None:
    event_id = str(uuid.uuid4())
    event = granted("f-ce-1", id_=event_id, subject="ana", correlationid="c-7", appname="crm")
    response = await post_one(client, tenant, event)
    assert response.status_code == 201, response.text
    assert response.json()["events"][0]["id"] == event_id
    assert response.json()["events"][0]["stream"] == "favor-f-ce-1"

    stored = (await client.get(f"/v1/events/{event_id}", headers=tenant.headers)).json()
    assert stored["type"] == "favor.granted"
    assert datetime.fromisoformat(stored["occurred_at"]) == WHEN
    assert stored["data"] == {
        "favor_id": "f-ce-1",
        "giver": "ben",
        "receiver": "ana",
        "kind": "advice",
    }
    assert stored["metadata"] == {
        "ce_id": event_id,
        "ce_source": "/crm/acme",
        "ce_subject": "ana",
        "correlation_id": "c-7",
        "appname": "crm",
    }

    retried = await post_one(client, tenant, event)
    assert retried.status_code == 200, retried.text
    assert retried.json() == response.json()
    assert await count_events(pool, tenant) == 1


async def test_non_uuid_ids_map_deterministically_so_retries_do_not_duplicate(
    client: Client, tenant: Tenant, pool: Pool
) -> None:
    event = cloudevent(
        "message.sent", {"from": "ana", "to": "ben", "kind": "check_in"}, id_="order-42"
    )
    first = await post_one(client, tenant, event)
    assert first.status_code == 201, first.text
    expected = uuid.uuid5(ID_NAMESPACE, '["/crm/acme","order-42"]')
    assert (
        first.json()["events"][0]["id"] == str(expected) == str(ledger_id("/crm/acme", "order-42"))
    )

    again = await post_one(client, tenant, event)
    assert again.status_code == 200
    assert again.json() == first.json()

    # The same id from another source is another event.
    other = CloudEvent(
        attributes={**event.get_attributes(), "source": "/crm/other"}, data=event.get_data()
    )
    response = await post_one(client, tenant, other)
    assert response.status_code == 201, response.text
    assert response.json()["events"][0]["id"] != str(expected)
    assert await count_events(pool, tenant) == 2


async def test_a_batch_is_appended_atomically_and_retried_safely(
    client: Client, tenant: Tenant, pool: Pool
) -> None:
    events = [
        cloudevent(
            "ledger.favor.requested",
            {"favor_id": "f-b", "requester": "ana", "asked_of": "ben", "kind": "advice"},
            id_="req-1",
        ),
        cloudevent(
            "favor.granted",
            {"favor_id": "f-b", "giver": "ben", "receiver": "ana", "kind": "advice"},
            id_="grant-1",
            at=1,
        ),
        cloudevent("gratitude.expressed", {"from": "ana", "to": "ben"}, id_="thanks-1", at=2),
    ]
    body = batch_body(events)
    response = await post_batch(client, tenant, body)
    assert response.status_code == 201, response.text
    placed = response.json()["events"]
    assert [p["id"] for p in placed] == [
        str(ledger_id("/crm/acme", i)) for i in ("req-1", "grant-1", "thanks-1")
    ]
    assert [p["stream"] for p in placed[:2]] == ["favor-f-b", "favor-f-b"]
    assert [p["version"] for p in placed[:2]] == [1, 2]

    retried = await post_batch(client, tenant, body)
    assert retried.status_code == 200
    assert retried.json() == response.json()
    assert await count_events(pool, tenant) == 3


async def test_errors_name_the_cloudevents_attribute_and_write_nothing(
    client: Client, tenant: Tenant, pool: Pool
) -> None:
    misnamed = FORMAT.write(granted("f-x")).replace(b'"source"', b'"Source_URI"')
    response = await client.post(
        "/v1/events",
        content=misnamed,
        headers={**tenant.headers, "Content-Type": "application/cloudevents+json"},
    )
    assert_problem(response, 422, "source")  # the required attribute is missing
    response = await client.post(
        "/v1/events",
        content=FORMAT.write(granted("f-x", subject="ana")).replace(b'"subject"', b'"Sub_ject"'),
        headers={**tenant.headers, "Content-Type": "application/cloudevents+json"},
    )
    assert_problem(response, 422, "Sub_ject")  # neither an attribute nor an extension name

    without_time = FORMAT.write(granted("f-x")).replace(b'"time": "2025-06-01T12:00:00Z", ', b"")
    response = await client.post(
        "/v1/events",
        content=without_time,
        headers={**tenant.headers, "Content-Type": "application/cloudevents+json"},
    )
    body = assert_problem(response, 422, "time")
    assert body["pointer"] == "/time"

    bad_data = cloudevent("favor.granted", {"favor_id": "f-y", "receiver": "ana", "kind": "advice"})
    response = await post_batch(client, tenant, batch_body([granted("f-z"), bad_data]))
    body = assert_problem(response, 422, "[1].data.giver")
    assert body["pointer"] == "/1/data/giver"

    unknown = cloudevent("com.example.favor.granted", {"favor_id": "f-u"})
    body = assert_problem(await post_one(client, tenant, unknown), 422, "type")
    assert "favor.granted" in body["detail"]

    future = granted("f-future", time=datetime.now(UTC) + timedelta(days=3))
    assert_problem(await post_one(client, tenant, future), 422, "time")

    binary = CloudEvent(attributes={**granted("f-bin").get_attributes()}, data=b"\x00\x01")
    assert_problem(await post_one(client, tenant, binary), 422, "data_base64")

    xml = granted("f-xml", datacontenttype="application/xml")
    assert_problem(await post_one(client, tenant, xml), 422, "datacontenttype")

    old_spec = FORMAT.write(granted("f-old")).replace(
        b'"specversion": "1.0"', b'"specversion": "0.3"'
    )
    response = await client.post(
        "/v1/events",
        content=old_spec,
        headers={**tenant.headers, "Content-Type": "application/cloudevents+json"},
    )
    assert_problem(response, 422, "specversion")

    assert_problem(await post_batch(client, tenant, b"[]"), 422)
    assert_problem(await post_batch(client, tenant, b"[{"), 422)

    assert await count_events(pool, tenant) == 0


async def test_conflicts_name_the_cloudevents_attribute(
    client: Client, tenant: Tenant, pool: Pool
) -> None:
    first = granted("f-c", id_="grant-c")
    assert (await post_one(client, tenant, first)).status_code == 201

    changed = granted("f-c", id_="grant-c", subject="someone else")
    body = assert_problem(await post_one(client, tenant, changed), 409, "id")
    assert body["pointer"] == "/id"

    stale = granted("f-c2", expectedversion=3)
    body = assert_problem(await post_one(client, tenant, stale), 409, "expectedversion")
    assert body["actual_version"] == 0

    twice = granted("f-c", id_="grant-c-again")
    response = await post_batch(client, tenant, batch_body([granted("f-c3"), twice]))
    body = assert_problem(response, 409)
    assert body["field"].startswith("[1].data."), body
    assert await count_events(pool, tenant) == 1


async def test_other_content_types_are_refused_with_the_accepted_ones(
    client: Client, tenant: Tenant
) -> None:
    response = await client.post(
        "/v1/events", content=b"{}", headers={**tenant.headers, "Content-Type": "text/plain"}
    )
    body = assert_problem(response, 415, "Content-Type")
    assert BATCH in body["detail"]
    assert "pointer" not in body
