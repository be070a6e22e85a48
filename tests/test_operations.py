"""What an operator sees: /metrics, /ready, request ids and the logs.

Scenario: the ledger serves an app (appends, a retry, a malformed event, a
stranger's key) while Prometheus scrapes and an orchestrator probes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from ledger.api.app import create_app
from ledger.observe import metrics as observe_metrics
from ledger.observe.logs import REQUEST_ID, JsonFormatter
from ledger.observe.metrics import Gauge, gauge_source
from ledger.projections import projector
from ledger.store.database import Connection, Pool
from ledger.store.migrate import upgrade
from tests.conftest import Tenant, with_database
from tests.samples import event
from tests.test_cli import env_with, run, serving

Client = AsyncTestClient[Litestar]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
async def quiet(database_url: str) -> AsyncIterator[Client]:
    """An API without a projector, so that lag stays until the test catches up."""
    app = create_app(database_url, migrate=False, pool_size=4, run_projector=False)
    async with AsyncTestClient(app=app, raise_server_exceptions=False) as client:
        yield client


async def scrape(client: Client) -> Samples:
    answer = await client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def message(at: int = 0) -> dict[str, Any]:
    return event("message.sent", {"from": "ana", "to": "ben", "kind": "check_in"}, at=at)


async def test_metrics_count_appends_retries_and_rejections(quiet: Client, tenant: Tenant) -> None:
    before = await scrape(quiet)
    batch = {"events": [message(), message(1)]}
    assert (await quiet.post("/v1/events", json=batch, headers=tenant.headers)).status_code == 201
    assert (await quiet.post("/v1/events", json=batch, headers=tenant.headers)).status_code == 200
    bad = {"events": [event("favor.granted", {"favor_id": "f", "receiver": "ana", "kind": "x"})]}
    assert (await quiet.post("/v1/events", json=bad, headers=tenant.headers)).status_code == 422
    stranger = {"Authorization": "Bearer ldg_nope_nope"}
    assert (await quiet.get("/v1/events", headers=stranger)).status_code == 401
    after = await scrape(quiet)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("ledger_appends_total", outcome="created") == 1
    assert grew("ledger_appends_total", outcome="replayed") == 1
    assert grew("ledger_appends_total", outcome="rejected") == 1
    assert grew("ledger_append_duration_seconds_count") == 3
    assert grew("ledger_rejected_requests_total", reason="invalid-input", status="422") == 1
    assert grew("ledger_rejected_requests_total", reason="unauthorized", status="401") == 1
    assert grew("ledger_http_requests_total", method="GET", route="/v1/events", status="401") == 1
    assert all(up == 1 for (name, _), up in after.items() if name == "ledger_gauge_source_up")
    assert ("ledger_horizon_age_seconds", ()) in after
    labels = {value for _, pairs in after for _, value in pairs}
    assert tenant.name not in labels, "no metric is labelled by tenant"


async def test_projection_lag_is_reported_per_projection(
    quiet: Client, tenant: Tenant, pool: Pool
) -> None:
    batch = {"events": [message(), message(1), message(2)]}
    assert (await quiet.post("/v1/events", json=batch, headers=tenant.headers)).status_code == 201
    network = (("projection", "network"),)
    behind = await scrape(quiet)
    assert behind[("ledger_projection_lag_events", network)] >= 3
    assert behind[("ledger_projection_lag_seconds", network)] > 0
    assert behind[("ledger_projection_tenants_behind", network)] >= 1
    deadline = time.monotonic() + 30  # the commit horizon may hold events back a moment
    while (caught_up := await scrape(quiet))[("ledger_projection_lag_events", network)] > 0:
        assert time.monotonic() < deadline, "the projections never caught up"
        async with pool.acquire() as conn:
            for tenant_id in await projector.tenants_behind(conn):
                await projector.catch_up(conn, tenant_id, worker="test")
        await asyncio.sleep(0.05)
    assert caught_up[("ledger_projection_lag_events", network)] == 0
    assert caught_up[("ledger_projection_lag_seconds", network)] == 0
    assert caught_up[("ledger_projection_tenants_behind", network)] == 0


async def test_other_capabilities_plug_in_their_gauges(quiet: Client) -> None:
    """How a capability adds gauges of its own (webhooks do: ledger.webhooks.metrics)."""

    async def example(conn: Connection) -> list[Gauge]:
        pending = await conn.fetchval("SELECT 7")
        return [
            Gauge(name="ledger_example_backlog", help="Deliveries waiting", value=pending),
            Gauge(
                name="ledger_example_failures_total",
                help="Deliveries failed",
                value=2,
                labels={"reason": "timeout"},
                kind="counter",
            ),
        ]

    async def broken(conn: Connection) -> list[Gauge]:
        await conn.fetchval("SELECT * FROM no_such_table")
        return []

    gauge_source(example)
    gauge_source(broken)
    try:
        samples = await scrape(quiet)
    finally:
        observe_metrics._SOURCES.remove(example)
        observe_metrics._SOURCES.remove(broken)
    assert samples[("ledger_example_backlog", ())] == 7
    assert samples[("ledger_example_failures_total", (("reason", "timeout"),))] == 2
    assert samples[("ledger_gauge_source_up", (("source", "example"),))] == 1
    assert samples[("ledger_gauge_source_up", (("source", "broken"),))] == 0
    assert samples[("ledger_gauge_source_up", (("source", "horizon_age"),))] == 1
    assert samples[("ledger_gauge_source_up", (("source", "outbox"),))] == 1
    assert samples[("ledger_webhook_backlog", ())] >= 0


async def test_request_ids_are_kept_or_made(quiet: Client, tenant: Tenant) -> None:
    given = await quiet.get("/v1/events", headers={**tenant.headers, "X-Request-Id": "app-42.a"})
    assert given.headers["x-request-id"] == "app-42.a"
    for bad in ("has spaces", "x" * 129, tenant.key):
        made = await quiet.get("/v1/events", headers={**tenant.headers, "X-Request-Id": bad})
        assert made.headers["x-request-id"] not in (bad, "")
        assert len(made.headers["x-request-id"]) == 32
    unmatched = await quiet.get("/nowhere", headers={"X-Request-Id": "lost-1"})
    assert (unmatched.status_code, unmatched.headers["x-request-id"]) == (404, "lost-1")


async def test_ready_when_the_database_is_at_head(quiet: Client) -> None:
    answer = await quiet.get("/ready")
    assert answer.status_code == 200, answer.text
    checks = answer.json()["checks"]
    assert answer.json()["status"] == "ready"
    assert checks["database"]["ok"] and checks["migrations"]["ok"]
    assert checks["projector"]["detail"].startswith("external")


async def test_not_ready_when_the_projector_stopped(database_url: str) -> None:
    """A projector task that ended (it only ends on a crash) makes the server unready."""

    async def crashed() -> None:
        raise RuntimeError("the projector crashed")

    app = create_app(database_url, migrate=False, pool_size=2)
    async with AsyncTestClient(app=app) as client:
        assert (await client.get("/ready")).json()["checks"]["projector"]["detail"] == "running"
        running = app.state.projector
        ended = asyncio.ensure_future(crashed())
        await asyncio.wait([ended])
        app.state.projector = ended
        answer = await client.get("/ready")
        app.state.projector = running
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "5"
    assert answer.json()["checks"]["projector"] == {
        "ok": False,
        "detail": "stopped: this server's projector is not running",
    }


@pytest.fixture
async def spare_database(server_url: str) -> AsyncIterator[str]:
    name = f"ledger_test_spare_{secrets.token_hex(5)}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield name
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_not_ready_when_migrations_are_behind(server_url: str, spare_database: str) -> None:
    url = with_database(server_url, spare_database)
    upgrade(url, "0001")
    app = create_app(url, migrate=False, pool_size=2, run_projector=False)
    async with AsyncTestClient(app=app) as client:
        answer = await client.get("/ready")
    assert answer.status_code == 503
    migrations = answer.json()["checks"]["migrations"]
    assert not migrations["ok"]
    assert "database at 0001" in migrations["detail"]
    assert "ledger migrate" in migrations["detail"]


async def test_not_ready_when_the_database_is_unreachable(
    server_url: str, spare_database: str
) -> None:
    app = create_app(
        with_database(server_url, spare_database), migrate=False, pool_size=1, run_projector=False
    )
    async with AsyncTestClient(app=app) as client:
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'ALTER DATABASE "{spare_database}" ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                spare_database,
            )
            answer = await client.get("/ready")
            scraped = await client.get("/metrics")
        finally:
            await admin.execute(f'ALTER DATABASE "{spare_database}" ALLOW_CONNECTIONS true')
            await admin.close()
    assert answer.status_code == 503
    checks = answer.json()["checks"]
    assert not checks["database"]["ok"]
    assert checks["database"]["detail"].startswith("unreachable")
    assert scraped.status_code == 200, "the counters are served while the database is down"
    assert 'ledger_gauge_source_up{source="horizon_age"} 0.0' in scraped.text


@pytest.fixture
def served_with_log(database_url: str, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    env = env_with(LEDGER_DATABASE_URL=database_url)
    key = run(env, "keys", "create", "--tenant", "logged").stdout.strip().splitlines()[-1]
    log = tmp_path / "serve.log"
    with serving(env, log=log) as base:
        yield base, key, log


def test_logs_are_json_with_request_ids_and_never_a_key(
    served_with_log: tuple[str, str, Path],
) -> None:
    base, key, log = served_with_log
    bearer = {"Authorization": f"Bearer {key}"}
    posted = httpx.post(
        f"{base}/v1/events",
        json={"events": [message()]},
        headers={**bearer, "X-Request-Id": "trace-me-1"},
    )
    assert posted.status_code == 201
    # Refused (a parameter the route does not take), and still never logged.
    assert httpx.get(f"{base}/v1/events?api_key={key}", headers=bearer).status_code == 422
    assert httpx.get(f"{base}/v1/events", headers={**bearer, "X-Request-Id": key}).is_success
    wrong = {"Authorization": f"Bearer {key}x"}
    assert httpx.get(f"{base}/v1/events", headers=wrong).status_code == 401
    assert httpx.post(f"{base}/v1/events", content=key, headers=bearer).status_code == 422

    text = log.read_text()
    secret = key.split("_", 2)[2]  # ldg_<hex key id>_<secret>: the secret may hold "_"
    assert secret not in text, "an API key reached the logs"
    plain = [line for line in text.splitlines() if not line.startswith("{")]
    assert all(line.startswith("ledger: ") for line in plain), plain  # the CLI's own banner
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert any(line["logger"].startswith("alembic") for line in lines), "library logs are JSON too"
    requests = [line for line in lines if line.get("logger") == "ledger.access"]
    traced = [line for line in requests if line.get("request_id") == "trace-me-1"]
    assert len(traced) == 1
    assert (traced[0]["method"], traced[0]["path"], traced[0]["status"]) == (
        "POST",
        "/v1/events",
        201,
    )
    assert {line["status"] for line in requests} >= {200, 201, 401, 422}
    assert all(len(line["request_id"]) > 0 for line in requests)


def test_the_formatter_scrubs_anything_shaped_like_a_key() -> None:
    """The second line of defence, for messages the ledger does not control."""
    key = "ldg_k1a2b3_" + secrets.token_urlsafe(24)
    record = logging.LogRecord(
        "ledger.test", logging.WARNING, __file__, 1, "refused %s", (key,), None
    )
    record.header = f"Bearer {key}"
    token = REQUEST_ID.set("req-7")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        REQUEST_ID.reset(token)
    assert line["message"] == "refused ldg_[redacted]"
    assert line["header"] == "Bearer ldg_[redacted]"
    assert (line["level"], line["logger"], line["request_id"]) == (
        "warning",
        "ledger.test",
        "req-7",
    )
