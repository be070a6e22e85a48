"""Schemathesis against the committed ``openapi/v1.json``, on a live server over loopback,
authenticated with a real key: no 5xx, and every answer conforms to the document.

Bounded: a fixed number of examples per operation, derandomised, so the module
runs in the same short time on every machine.

Every check runs but one, ``positive_data_acceptance``, which expects any
schema-valid request to succeed. The ledger validates more than a schema can say,
and answers such requests with a documented 422 problem: a relationship needs two
different people, cursors are opaque tokens the ledger issued, meetings list
each participant once, lifecycles order a favor's steps. Those rules have their
own tests (tests/test_api_events.py, test_hostile_input.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from litestar import Router, get, post
from schemathesis import checks
from schemathesis.core.result import Ok

from ledger.api.guards import with_options
from tests.reliability.conftest import Server, serving, streaming_operations
from tests.samples import story
from tests.test_cli import env_with, run

DOCUMENT: Final = Path(__file__).resolve().parents[2] / "openapi" / "v1.json"
EXAMPLES_PER_OPERATION: Final = 25


def fuzzable(document: dict[str, Any]) -> schemathesis.BaseSchema:
    """The document's operations as schemathesis sees them, less the never-ending
    event streams (a request/response fuzzer would wait on them forever)."""
    loaded = schemathesis.openapi.from_dict(document)
    streaming = sorted({path for _, path in streaming_operations(document)})
    return loaded.exclude(method="GET", path=streaming) if streaming else loaded


schema = fuzzable(json.loads(DOCUMENT.read_text()))


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[Server]:
    with serving(database_url, LEDGER_RATE_LIMIT_PER_SECOND="0") as running:
        yield running


@pytest.fixture(scope="module")
def auth(database_url: str, server: Server) -> dict[str, str]:
    """A real key of a tenant with a little history, so reads find something."""
    created = run(env_with(LEDGER_DATABASE_URL=database_url), "keys", "create", "--tenant", "fuzz")
    headers = {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}
    seeded = httpx.post(f"{server.base}/v1/events", json={"events": story()}, headers=headers)
    assert seeded.status_code == 201, seeded.text
    return headers


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_keeps_its_documented_contract(
    case: schemathesis.Case[Any], server: Server, auth: dict[str, str]
) -> None:
    case.call_and_validate(
        base_url=server.base, headers=auth, excluded_checks=[checks.positive_data_acceptance]
    )


DOCUMENTED: Final = json.loads(DOCUMENT.read_text())["paths"]


@pytest.mark.parametrize("path", sorted(DOCUMENTED))
def test_options_lists_every_documented_method_of_a_path(server: Server, path: str) -> None:
    # Ids of things (events, webhooks, deliveries) are UUIDs; people and streams any text.
    concrete = re.sub(r"\{\w*_id\}", "00000000-0000-4000-8000-000000000000", path)
    concrete = re.sub(r"\{[^}]+\}", "x", concrete)
    response = httpx.options(f"{server.base}{concrete}")
    assert response.status_code == 204
    allowed = {m.strip().lower() for m in response.headers["allow"].split(",")}
    assert set(DOCUMENTED[path]) <= allowed, response.headers["allow"]


def test_only_paths_with_several_handlers_get_an_options_handler() -> None:
    @get("/x", sync_to_thread=False)
    def read() -> None: ...

    @post("/x", sync_to_thread=False)
    def write() -> None: ...

    @get("/y", sync_to_thread=False)
    def other() -> None: ...

    router = Router("/z", route_handlers=[other])
    listed = with_options([read, write, other, router])
    assert listed[1:] == [read, write, other, router]
    [added] = listed[:1]
    assert added.paths == {"/x"}
    assert added.http_methods == {"OPTIONS"}


def test_event_streams_are_left_to_their_own_tests() -> None:
    document = json.loads(DOCUMENT.read_text())
    document["paths"]["/v1/feed"] = {
        "get": {"responses": {"200": {"description": "", "content": {"text/event-stream": {}}}}}
    }
    found = list(fuzzable(document).get_all_operations())
    assert all(isinstance(f, Ok) for f in found)
    paths = {f.ok().path for f in found if isinstance(f, Ok)}
    assert "/v1/feed" not in paths
    streams = {
        path
        for path, item in json.loads(DOCUMENT.read_text())["paths"].items()
        if "text/event-stream"
        in item.get("get", {}).get("responses", {}).get("200", {}).get("content", {})
    }
    assert streams == {"/v1/events/feed", "/v1/violations/feed"}
    assert paths == set(json.loads(DOCUMENT.read_text())["paths"]) - streams
