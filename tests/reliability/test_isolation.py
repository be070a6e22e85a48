"""Tenant isolation, route by route: another tenant's key can neither read nor infer
the first tenant's data.

The routes come from the committed OpenAPI document, so a route added later is
checked without touching this file. For each, the second tenant asks about the
first tenant's real ids, people and streams, then about ids nobody has ever
used: both answers must be the same (up to the echoed values). Any difference,
a 403 instead of a 404 say, or a count, would tell the second tenant something.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any, Final

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from ledger.store.database import Pool
from tests.conftest import Tenant, make_tenant
from tests.reliability.conftest import streaming_operations
from tests.samples import event, story

Client = AsyncTestClient[Litestar]
DOCUMENT: Final = json.loads(
    (Path(__file__).resolve().parents[2] / "openapi" / "v1.json").read_text()
)
METHODS: Final = {"get", "post", "put", "patch", "delete"}
STREAMING: Final = streaming_operations(DOCUMENT)
OPERATIONS: Final = [
    (method, path, operation)
    for path, item in DOCUMENT["paths"].items()
    for method, operation in item.items()
    if method in METHODS and (method, path) not in STREAMING
]
KNOWN_PARAMETERS: Final = {"event_id", "person", "a", "b", "stream"}
_PARAM: Final = re.compile(r"\{([^}]+)\}")


class Owner:
    """The first tenant and what it wrote: the values a snoop would try."""

    def __init__(self, tenant: Tenant, events: list[dict[str, Any]], answer: Any) -> None:
        self.tenant = tenant
        self.events = events
        self.ids = [e["id"] for e in events]
        self.streams = [placed["stream"] for placed in answer["events"]]
        self.cursor: str = answer["cursor"]

    def values(self) -> dict[str, str]:
        """Path parameter values from the owner's log, by parameter name."""
        return {
            "event_id": self.ids[3],
            "person": "ana",
            "a": "ana",
            "b": "ben",
            "stream": self.streams[3],
        }


def fresh_values() -> dict[str, str]:
    """Values of the same shapes that no tenant has ever used."""
    tag = uuid.uuid4().hex[:8]
    return {
        "event_id": str(uuid.uuid4()),
        "person": f"nobody-{tag}",
        "a": f"nobody-{tag}",
        "b": f"noone-{tag}",
        "stream": f"favor-f-{tag}",
    }


def parameter_value(
    operation: dict[str, Any], name: str, values: dict[str, str], fallback: dict[str, str]
) -> str:
    """A value for a path parameter; unknown names get the owner's person or event id."""
    if name in values:
        return values[name]
    spec: dict[str, Any] = next(
        (p for p in operation.get("parameters", []) if p["name"] == name), {}
    )
    return (
        fallback["event_id"]
        if spec.get("schema", {}).get("format") == "uuid"
        else fallback["person"]
    )


def fill(path: str, operation: dict[str, Any], values: dict[str, str]) -> str:
    return _PARAM.sub(lambda m: parameter_value(operation, m[1], values, values), path)


def normalised(text: str, values: dict[str, str]) -> Any:
    """The answer with the values asked about replaced, parsed when it is JSON."""
    for value in sorted(values.values(), key=len, reverse=True):
        text = text.replace(value, "<value>")
    try:
        return json.loads(text)
    except ValueError:
        return text


def same_where_stable(probe: Any, control: Any, again: Any) -> bool:
    """Whether ``probe`` equals ``control`` wherever two controls agree.

    Two answers about never-used ids can still differ in what changes by itself
    (a clock, a lag): those places say nothing about the owner and are skipped.
    Everything else (a status, a count, an item, a message) must be the same.
    """
    if control == again:
        return bool(probe == control)
    if isinstance(control, dict) and isinstance(again, dict) and control.keys() == again.keys():
        return (
            isinstance(probe, dict)
            and probe.keys() == control.keys()
            and all(same_where_stable(probe[k], control[k], again[k]) for k in control)
        )
    if isinstance(control, list) and isinstance(again, list) and len(control) == len(again):
        return (
            isinstance(probe, list)
            and len(probe) == len(control)
            and all(
                same_where_stable(p, c, a) for p, c, a in zip(probe, control, again, strict=True)
            )
        )
    return type(probe) is type(control)


@pytest.fixture
async def owner(client: Client, tenant: Tenant) -> Owner:
    events = story()
    response = await client.post("/v1/events", json={"events": events}, headers=tenant.headers)
    assert response.status_code == 201, response.text
    return Owner(tenant, events, response.json())


def query_for(operation: dict[str, Any], values: dict[str, str]) -> dict[str, str]:
    """Query parameters that name a person are filled too (filters must not leak)."""
    names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
    return {"person": values["person"]} if "person" in names else {}


@pytest.mark.parametrize(
    ("method", "path", "operation"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS]
)
async def test_another_tenant_learns_nothing_from_any_route(
    client: Client, pool: Pool, owner: Owner, method: str, path: str, operation: dict[str, Any]
) -> None:
    snoop = await make_tenant(pool)
    mine, theirs, others = owner.values(), fresh_values(), fresh_values()
    mine_path = fill(path, operation, mine)
    required_query = [
        p for p in operation.get("parameters", []) if p["in"] == "query" and p.get("required")
    ]
    if method == "get" and set(_PARAM.findall(path)) <= KNOWN_PARAMETERS and not required_query:
        # The owner sees its own data here (so the values are real and projected).
        seen = await client.get(
            mine_path,
            params=query_for(operation, mine),
            headers={**owner.tenant.headers, "Ledger-Min-Cursor": owner.cursor},
        )
        assert seen.status_code == 200, (mine_path, seen.text)

    async def ask(values: dict[str, str]) -> Any:
        body = {"events": [event("message.sent", {"from": "zed", "to": "yan", "kind": "reply"})]}
        return await client.request(
            method.upper(),
            fill(path, operation, values),
            params=query_for(operation, values),
            headers=snoop.headers,
            json=body if method != "get" else None,
        )

    probe, control, again = await ask(mine), await ask(theirs), await ask(others)
    assert probe.status_code == control.status_code, (mine_path, probe.text, control.text)
    assert probe.status_code < 500, probe.text
    assert same_where_stable(
        normalised(probe.text, mine),
        normalised(control.text, theirs),
        normalised(again.text, others),
    ), (mine_path, probe.text, control.text)
    leaked = [i for i in owner.ids if i in probe.text and i not in mine.values()]
    assert leaked == [], f"{mine_path} showed the owner's event ids to another tenant"
    for person in ("ana", "ben", "cleo"):
        if person not in mine_path and person not in str(query_for(operation, mine)):
            assert person not in probe.text, f"{mine_path} named {person!r}"


async def test_another_tenant_may_reuse_the_owners_event_ids_and_streams(
    client: Client, pool: Pool, owner: Owner
) -> None:
    """Ids and streams are per tenant: a 409 here would confirm the owner's id exists."""
    snoop = await make_tenant(pool)
    before = await client.get(f"/v1/events/{owner.ids[0]}", headers=owner.tenant.headers)
    stolen = {**owner.events[0], "data": {**owner.events[0]["data"], "display_name": "Snoop"}}
    first = {**owner.events[3], "expected_version": 0}
    response = await client.post(
        "/v1/events", json={"events": [stolen, first]}, headers=snoop.headers
    )
    assert response.status_code == 201, response.text
    placed = response.json()["events"]
    assert [p["id"] for p in placed] == [owner.ids[0], owner.ids[3]]
    assert [p["version"] for p in placed] == [1, 1]
    mine = await client.get(f"/v1/events/{owner.ids[0]}", headers=owner.tenant.headers)
    # The owner's registration is as it was (erased: the story forgets ana), not the snoop's.
    assert mine.json() == before.json() and mine.json()["data"]["display_name"] != "Snoop"


def test_every_operation_of_the_document_is_covered() -> None:
    """Guards the parametrisation itself: an empty document would check nothing."""
    paths = {path for _, path, _ in OPERATIONS}
    assert {"/v1/events", "/v1/events/{event_id}", "/v1/people/{person}"} <= paths
    assert len(OPERATIONS) + len(STREAMING) == sum(
        1 for item in DOCUMENT["paths"].values() for m in item if m in METHODS
    )


def test_only_the_places_that_change_by_themselves_are_skipped() -> None:
    control = {"items": [], "lag_seconds": 0.1, "count": 0}
    again = {"items": [], "lag_seconds": 0.3, "count": 0}
    assert same_where_stable({"items": [], "lag_seconds": 9.0, "count": 0}, control, again)
    assert not same_where_stable({"items": [], "lag_seconds": 0.1, "count": 3}, control, again)
    assert not same_where_stable({"items": ["x"], "lag_seconds": 0.1, "count": 0}, control, again)
    assert not same_where_stable("other", "same", "same")
