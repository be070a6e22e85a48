"""The committed OpenAPI document is what the code generates."""

from __future__ import annotations

from pathlib import Path

from litestar import Litestar
from litestar.testing import AsyncTestClient

from ledger.api.app import create_app
from ledger.api.openapi import render

COMMITTED = Path(__file__).resolve().parents[1] / "openapi" / "v1.json"


def test_committed_openapi_matches_the_code() -> None:
    generated = render(create_app("postgresql://unused"))
    assert COMMITTED.read_bytes() == generated, (
        "openapi/v1.json is stale: run `make openapi` and commit the result"
    )


async def test_the_document_is_served_and_describes_the_events_api(
    client: AsyncTestClient[Litestar],
) -> None:
    response = await client.get("/v1/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    append = document["paths"]["/v1/events"]["post"]
    assert append["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EventBatch"
    }
    assert {"200", "201", "default"} <= set(append["responses"])
    assert append["security"] == [{"apiKey": []}]
    assert "FavorGrantedEvent" in document["components"]["schemas"]
