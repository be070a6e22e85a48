"""Webhooks end to end: a real receiver on loopback verifies every signature with
the `standardwebhooks` library; it is stopped, restarted, made to fail."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks.webhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from ledger.api.app import create_app
from ledger.events.envelope import decode_batch, prepare
from ledger.store.append import append
from ledger.store.database import Pool
from ledger.webhooks.core import RetryPolicy, new_secret, sign
from ledger.webhooks.dispatcher import DispatchSettings
from ledger.webhooks.store import enqueue_violations
from tests.conftest import Tenant, make_tenant
from tests.samples import event, story
from tests.test_api_events import assert_problem
from tests.test_cli import free_port

Client = AsyncTestClient[Litestar]
DEADLINE_S = 30
MAX_ATTEMPTS = 6
FAST = DispatchSettings(
    retry=RetryPolicy(base_seconds=0.1, cap_seconds=1.0, max_attempts=MAX_ATTEMPTS),
    timeout_seconds=2.0,
    poll_seconds=0.05,
)


class Receiver:
    """An HTTP endpoint that verifies Standard Webhooks signatures, as an app's would."""

    def __init__(self) -> None:
        self.port = free_port()
        self.secrets: list[str] = []
        self.fail_with: int | None = None
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.raw: list[tuple[bytes, dict[str, str]]] = []
        self.refused = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver.take(body, headers)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def stop(self) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    def take(self, body: bytes, headers: dict[str, str]) -> int:
        with self._lock:
            self.raw.append((body, headers))
            if self.fail_with is not None:
                return self.fail_with
            for secret in self.secrets:
                try:
                    payload = Verifier(secret).verify(body, headers)
                except WebhookVerificationError:
                    continue
                self.received.append((headers["webhook-id"], payload))
                return 204
            self.refused += 1
            return 401

    def ids(self) -> list[str]:
        with self._lock:
            return [message_id for message_id, _ in self.received]

    def payloads(self) -> list[dict[str, Any]]:
        with self._lock:
            return [payload for _, payload in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    yield r
    if r._server is not None:
        r.stop()


@pytest.fixture(scope="module")
async def hooks(database_url: str) -> AsyncIterator[Client]:
    app = create_app(database_url, migrate=False, pool_size=8, webhooks=FAST)
    async with AsyncTestClient(app=app, raise_server_exceptions=False) as test_client:
        yield test_client


async def subscribe(client: Client, tenant: Tenant, receiver: Receiver, **body: Any) -> Any:
    response = await client.post(
        "/v1/webhooks", json={"url": receiver.url, **body}, headers=tenant.headers
    )
    assert response.status_code == 201, response.text
    created = response.json()
    receiver.secrets.append(created["secret"])
    return created


async def post_events(client: Client, tenant: Tenant, events: list[dict[str, Any]]) -> None:
    response = await client.post("/v1/events", json={"events": events}, headers=tenant.headers)
    assert response.status_code == 201, response.text


async def until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.02)


async def deliveries(client: Client, tenant: Tenant, webhook_id: str, **params: Any) -> Any:
    response = await client.get(
        f"/v1/webhooks/{webhook_id}/deliveries", params=params, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def settled(client: Client, tenant: Tenant, webhook_id: str) -> Any:
    """The deliveries once every one is recorded as delivered (recording follows the answer)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        listed = await deliveries(client, tenant, webhook_id)
        if {d["status"] for d in listed} == {"delivered"}:
            return listed
        assert time.monotonic() < deadline, listed
        await asyncio.sleep(0.02)


async def test_deliveries_are_signed_per_standard_webhooks_and_filtered_by_type(
    hooks: Client, tenant: Tenant, receiver: Receiver
) -> None:
    created = await subscribe(hooks, tenant, receiver, event_types=["favor.granted"])
    assert created["secret"].startswith("whsec_")
    events = story()
    granted = [e["id"] for e in events if e["type"] == "favor.granted"]
    assert granted
    await post_events(hooks, tenant, events)

    await until(lambda: len(receiver.ids()) == len(granted), "the granted favors")
    payloads = receiver.payloads()
    assert [p["data"]["id"] for p in payloads] == granted
    for payload in payloads:
        assert payload["type"] == "favor.granted"
        assert payload["timestamp"]
        assert payload["data"]["type"] == "favor.granted"
        assert payload["data"]["stream"].startswith("favor-")
        assert payload["data"]["cursor"].startswith("c1")
    assert len(set(receiver.ids())) == len(granted)
    assert receiver.refused == 0

    listed = await settled(hooks, tenant, created["id"])
    assert [d["payload"]["data"]["id"] for d in listed] == granted
    assert {d["id"] for d in listed} == set(receiver.ids())
    # The payload's data is the envelope readers get, log cursor included.
    for payload in payloads:
        path = f"/v1/events/{payload['data']['id']}"
        stored = (await hooks.get(path, headers=tenant.headers)).json()
        assert payload["data"]["cursor"] == stored["cursor"]
        assert payload["data"]["data"] == stored["data"]
        assert payload["data"]["position"] == stored["position"]


async def test_a_receiver_stopped_and_restarted_gets_every_delivery(
    hooks: Client, tenant: Tenant, receiver: Receiver, pool: Pool
) -> None:
    created = await subscribe(hooks, tenant, receiver, event_types=["*"])
    receiver.stop()
    events = [
        event("message.sent", {"from": "ana", "to": "ben", "kind": "check_in"}, at=i)
        for i in range(10)
    ]
    await post_events(hooks, tenant, events[:5])
    await post_events(hooks, tenant, events[5:])

    async def failed_attempts() -> int:
        async with pool.acquire() as conn:
            n: int = await conn.fetchval(
                "SELECT count(*) FROM webhook_deliveries WHERE tenant_id = $1 "
                "AND last_error IS NOT NULL AND status = 'pending'",
                tenant.id,
            )
        return n

    deadline = time.monotonic() + DEADLINE_S
    while await failed_attempts() < len(events):
        assert time.monotonic() < deadline, "the dispatcher never tried the stopped receiver"
        await asyncio.sleep(0.02)
    receiver.start()

    await until(lambda: len(receiver.ids()) == len(events), "every delivery after the restart")
    assert sorted(p["data"]["id"] for p in receiver.payloads()) == sorted(e["id"] for e in events)
    listed = await settled(hooks, tenant, created["id"])
    assert all(d["attempts"] >= 2 for d in listed)  # failed while the receiver was down
    assert all(d["last_error"] is None and d["last_response_status"] == 204 for d in listed)


async def test_the_last_failed_retry_is_dead_visible_and_replayable(
    hooks: Client, tenant: Tenant, receiver: Receiver
) -> None:
    created = await subscribe(hooks, tenant, receiver, event_types=["gratitude.expressed"])
    receiver.fail_with = 500
    await post_events(hooks, tenant, [event("gratitude.expressed", {"from": "ana", "to": "ben"})])

    webhook_id = created["id"]
    dead: list[Any] = []
    deadline = time.monotonic() + DEADLINE_S
    while not dead:
        assert time.monotonic() < deadline, "the delivery never went dead"
        await asyncio.sleep(0.05)
        dead = await deliveries(hooks, tenant, webhook_id, status="dead")
    assert dead[0]["attempts"] == MAX_ATTEMPTS
    assert dead[0]["last_response_status"] == 500
    assert dead[0]["next_attempt_at"] is None
    assert await deliveries(hooks, tenant, webhook_id, status="pending") == []
    assert receiver.ids() == []
    scraped = {
        sample.name: sample.value
        for family in text_string_to_metric_families((await hooks.get("/metrics")).text)
        for sample in family.samples
    }
    assert scraped["ledger_webhook_dead"] >= 1
    assert scraped["ledger_webhook_failures_total"] >= MAX_ATTEMPTS
    assert "ledger_webhook_backlog" in scraped

    receiver.fail_with = None
    replayed = await hooks.post(
        f"/v1/webhooks/{webhook_id}/deliveries/{dead[0]['id']}/replay", headers=tenant.headers
    )
    assert replayed.status_code == 202, replayed.text
    assert replayed.json()["status"] == "pending"
    assert replayed.json()["attempts"] == 0
    await until(lambda: receiver.ids() == [dead[0]["id"]], "the replayed delivery")
    assert (await settled(hooks, tenant, webhook_id))[0]["attempts"] == 1


async def test_the_whole_dead_letter_is_replayed_at_once(
    hooks: Client, tenant: Tenant, receiver: Receiver
) -> None:
    created = await subscribe(hooks, tenant, receiver, event_types=["message.sent"])
    receiver.fail_with = 503
    messages = [
        event("message.sent", {"from": "ben", "to": "ana", "kind": "reply"}, at=i) for i in range(3)
    ]
    await post_events(hooks, tenant, messages)
    webhook_id = created["id"]
    deadline = time.monotonic() + DEADLINE_S
    while len(await deliveries(hooks, tenant, webhook_id, status="dead")) < 3:
        assert time.monotonic() < deadline, "the deliveries never went dead"
        await asyncio.sleep(0.05)
    receiver.fail_with = None
    response = await hooks.post(
        f"/v1/webhooks/{webhook_id}/deliveries/replay-dead", headers=tenant.headers
    )
    assert response.status_code == 202
    assert response.json() == {"replayed": 3}
    await until(lambda: len(receiver.ids()) == 3, "the replayed dead letter")


async def test_a_rotated_secret_signs_beside_the_previous_one_until_it_expires(
    hooks: Client, tenant: Tenant, receiver: Receiver
) -> None:
    created = await subscribe(hooks, tenant, receiver, event_types=["message.sent"])
    old = created["secret"]
    path = f"/v1/webhooks/{created['id']}/rotate-secret"
    rotated = await hooks.post(path, headers=tenant.headers)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new != old
    assert rotated.json()["previous_secret_expires_at"] is not None

    receiver.secrets = [old]  # a receiver that has not switched yet
    await post_events(
        hooks, tenant, [event("message.sent", {"from": "a", "to": "b", "kind": "other"})]
    )
    await until(lambda: len(receiver.ids()) == 1, "a delivery the old secret verifies")
    assert (await settled(hooks, tenant, created["id"]))[0]["attempts"] == 1
    body, headers = receiver.raw[-1]
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert Verifier(new).verify(body, headers)["type"] == "message.sent"
    got = (await hooks.get(f"/v1/webhooks/{created['id']}", headers=tenant.headers)).json()
    assert got["previous_secret_expires_at"] == rotated.json()["previous_secret_expires_at"]
    assert "secret" not in got

    # Rotating with no grace period: the old secret no longer verifies.
    again = await hooks.post(path, json={"keep_previous_for_seconds": 0}, headers=tenant.headers)
    assert again.status_code == 200
    assert again.json()["previous_secret_expires_at"] is None
    await post_events(
        hooks, tenant, [event("message.sent", {"from": "c", "to": "d", "kind": "other"})]
    )
    await until(lambda: receiver.refused >= 1, "a delivery the old secret refuses")
    receiver.secrets = [again.json()["secret"]]
    await until(lambda: len(receiver.ids()) == 2, "the retried delivery under the new secret")


async def test_violations_are_queued_in_the_callers_transaction(
    hooks: Client, tenant: Tenant, receiver: Receiver, pool: Pool
) -> None:
    e104 = await subscribe(hooks, tenant, receiver, violation_codes=["E104"])
    everything = await subscribe(hooks, tenant, receiver, violation_codes=["*"])
    await subscribe(hooks, tenant, receiver, event_types=["favor.granted"])  # no violations
    name_dropped = {
        "id": "v-1",
        "code": "E104",
        "severity": "high",
        "offender": "ana",
        "affected": ["ben", "cleo"],
        "evidence": ["0b6f2a4e-4c8e-4f57-9d1a-7c3e2f1a0009"],
        "occurred_at": "2026-03-02T09:30:00Z",
        "explanation": "ana used ben's name with cleo without ben's consent",
    }
    first_ask = {**name_dropped, "id": "v-2", "code": "E101", "explanation": "first contact"}

    async with pool.acquire() as conn:
        failing = conn.transaction()  # the projector's transaction, which then fails
        await failing.start()
        assert await enqueue_violations(conn, tenant.id, [name_dropped]) == 2
        await failing.rollback()
        count = "SELECT count(*) FROM webhook_deliveries WHERE tenant_id = $1"
        assert await conn.fetchval(count, tenant.id) == 0
        async with conn.transaction():
            queued = await enqueue_violations(conn, tenant.id, [name_dropped, first_ask])
        assert queued == 3
        assert await enqueue_violations(conn, tenant.id, []) == 0

    await until(lambda: len(receiver.ids()) == 3, "the violation deliveries")
    assert {p["type"] for p in receiver.payloads()} == {"violation.detected"}
    assert sorted(p["data"]["id"] for p in receiver.payloads()) == ["v-1", "v-1", "v-2"]
    assert next(p for p in receiver.payloads() if p["data"]["id"] == "v-2")["data"] == first_ask
    assert len(await deliveries(hooks, tenant, e104["id"])) == 1
    assert len(await deliveries(hooks, tenant, everything["id"])) == 2


async def test_the_outbox_is_written_by_the_append_transaction_itself(
    hooks: Client, tenant: Tenant, receiver: Receiver, pool: Pool
) -> None:
    await subscribe(hooks, tenant, receiver, event_types=["message.sent"])
    batch = {"events": [event("message.sent", {"from": "x", "to": "y", "kind": "other"})]}
    events = prepare(decode_batch(json.dumps(batch).encode()))
    count = "SELECT count(*) FROM webhook_deliveries WHERE tenant_id = $1"
    async with pool.acquire() as conn:
        rolled_back = conn.transaction()
        await rolled_back.start()
        await append(conn, tenant.id, events)
        assert await conn.fetchval(count, tenant.id) == 1
        await rolled_back.rollback()
        assert await conn.fetchval(count, tenant.id) == 0
        await append(conn, tenant.id, events)
        assert await conn.fetchval(count, tenant.id) == 1
        await append(conn, tenant.id, events)  # an idempotent retry queues nothing more
        assert await conn.fetchval(count, tenant.id) == 1
    await until(lambda: len(receiver.ids()) == 1, "the committed append's delivery")


async def test_several_dispatchers_deliver_each_message_once(
    hooks: Client, tenant: Tenant, receiver: Receiver, pool: Pool
) -> None:
    import httpx

    from ledger.webhooks.dispatcher import dispatch_once

    await subscribe(hooks, tenant, receiver, event_types=["message.sent"])
    events = [
        event("message.sent", {"from": f"p{i}", "to": "q", "kind": "other"}) for i in range(40)
    ]
    await post_events(hooks, tenant, events)
    small = DispatchSettings(retry=FAST.retry, timeout_seconds=2.0, batch_size=3)
    async with httpx.AsyncClient(timeout=2.0) as http:

        async def worker() -> None:
            while len(receiver.ids()) < len(events):
                if not await dispatch_once(pool, http, small):
                    await asyncio.sleep(0.01)

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(4))), DEADLINE_S)
    assert len(receiver.ids()) == len(set(receiver.ids())) == len(events)


async def test_subscriptions_are_listed_read_and_deleted_without_secrets(
    hooks: Client, tenant: Tenant, other_tenant: Tenant, receiver: Receiver
) -> None:
    first = await subscribe(hooks, tenant, receiver, event_types=["favor.granted", "favor.granted"])
    second = await subscribe(
        hooks, tenant, receiver, violation_codes=["E101"], description="etiquette alerts"
    )
    assert first["event_types"] == ["favor.granted"]
    page = (await hooks.get("/v1/webhooks", params={"limit": 1}, headers=tenant.headers)).json()
    assert [w["id"] for w in page["items"]] == [first["id"]]
    rest = await hooks.get(
        "/v1/webhooks", params={"cursor": page["next_cursor"]}, headers=tenant.headers
    )
    assert [w["id"] for w in rest.json()["items"]] == [second["id"]]
    assert rest.json()["next_cursor"] is None
    assert all("secret" not in w for w in page["items"] + rest.json()["items"])
    assert rest.json()["items"][0]["description"] == "etiquette alerts"

    path = f"/v1/webhooks/{first['id']}"
    assert (await hooks.get(path, headers=other_tenant.headers)).status_code == 404
    assert (await hooks.get("/v1/webhooks", headers=other_tenant.headers)).json()["items"] == []
    assert (await hooks.delete(path, headers=other_tenant.headers)).status_code == 404
    assert (await hooks.delete(path, headers=tenant.headers)).status_code == 204
    assert_problem(await hooks.get(path, headers=tenant.headers), 404, "webhook_id")
    assert_problem(await hooks.delete(path, headers=tenant.headers), 404, "webhook_id")
    assert_problem(await hooks.post(path + "/rotate-secret", headers=tenant.headers), 404)
    assert_problem(await hooks.get(path + "/deliveries", headers=tenant.headers), 404)
    assert_problem(await hooks.post(path + "/deliveries/replay-dead", headers=tenant.headers), 404)
    missing = f"/v1/webhooks/{second['id']}/deliveries/{first['id']}/replay"
    assert_problem(await hooks.post(missing, headers=tenant.headers), 404, "delivery_id")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.org/x", "event_types": ["*"]}, "url"),
        ({"url": "/relative", "event_types": ["*"]}, "url"),
        (
            {"url": "https://example.org/x", "event_types": ["favor.granted", "favor.given"]},
            "event_types[1]",
        ),
        ({"url": "https://example.org/x", "violation_codes": ["E1"]}, "violation_codes[0]"),
        ({"url": "https://example.org/x"}, "event_types"),
        ({"url": "https://example.org/x", "event_types": ["*"], "colour": "red"}, "colour"),
        ({"event_types": ["*"]}, "url"),
        ({"url": "https://example.org/x", "event_types": "favor.granted"}, "event_types"),
    ],
)
async def test_bad_subscriptions_name_the_field_and_write_nothing(
    hooks: Client, tenant: Tenant, body: dict[str, Any], field: str
) -> None:
    response = await hooks.post("/v1/webhooks", json=body, headers=tenant.headers)
    problem = assert_problem(response, 422, field)
    assert problem["pointer"].startswith("/")
    assert (await hooks.get("/v1/webhooks", headers=tenant.headers)).json()["items"] == []


async def test_bad_parameters_and_bodies_elsewhere_are_problems(
    hooks: Client, tenant: Tenant, receiver: Receiver
) -> None:
    created = await subscribe(hooks, tenant, receiver, event_types=["*"])
    base = f"/v1/webhooks/{created['id']}"
    assert_problem(
        await hooks.get(base + "/deliveries", params={"status": "lost"}, headers=tenant.headers),
        422,
    )
    assert_problem(
        await hooks.get(base + "/deliveries", params={"cursor": "x"}, headers=tenant.headers),
        422,
        "cursor",
    )
    assert_problem(
        await hooks.get("/v1/webhooks", params={"cursor": "k1%%%"}, headers=tenant.headers),
        422,
        "cursor",
    )
    too_long = {"keep_previous_for_seconds": 10**9}
    assert_problem(
        await hooks.post(base + "/rotate-secret", json=too_long, headers=tenant.headers),
        422,
        "keep_previous_for_seconds",
    )
    assert_problem(await hooks.post("/v1/webhooks", content=b"{", headers=tenant.headers), 422)


async def test_managing_webhooks_needs_the_admin_scope(hooks: Client, pool: Pool) -> None:
    reader = await make_tenant(pool, ["events:read", "events:write"])
    body = {"url": "https://example.org/x", "event_types": ["*"]}
    response = await hooks.post("/v1/webhooks", json=body, headers=reader.headers)
    assert assert_problem(response, 403)["required_scope"] == "admin"
    assert (await hooks.get("/v1/webhooks", headers=reader.headers)).status_code == 403
    assert (await hooks.get("/v1/webhooks")).status_code == 401


def test_signatures_match_the_reference_library() -> None:
    secret = new_secret()
    body = b'{"type": "favor.granted", "data": {}}'
    header = sign(secret, "msg_1", int(time.time()), body)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": header,
    }
    assert Verifier(secret).verify(body, headers) == {"type": "favor.granted", "data": {}}
    with pytest.raises(WebhookVerificationError):
        Verifier(new_secret()).verify(body, headers)


def test_retries_back_off_exponentially_up_to_a_cap_then_die() -> None:
    policy = RetryPolicy(base_seconds=5, cap_seconds=60, max_attempts=6)
    assert [policy.delay(n) for n in range(1, 6)] == [5, 10, 20, 40, 60]
    assert policy.after_failure(5) == ("pending", 60)
    assert policy.after_failure(6) == ("dead", 0)


def test_the_dispatcher_is_configured_or_switched_off_by_the_environment() -> None:
    from ledger.config import Settings
    from ledger.webhooks.dispatcher import dispatch_settings

    assert dispatch_settings(Settings.from_env({"LEDGER_WEBHOOK_DISPATCHER": "0"})) is None
    configured = dispatch_settings(
        Settings.from_env({"LEDGER_WEBHOOK_RETRY_BASE": "0.5", "LEDGER_WEBHOOK_MAX_ATTEMPTS": "3"})
    )
    assert configured is not None
    assert configured.retry.base_seconds == 0.5
    assert configured.retry.max_attempts == 3
    with pytest.raises(SystemExit, match="LEDGER_WEBHOOK_TIMEOUT"):
        Settings.from_env({"LEDGER_WEBHOOK_TIMEOUT": "soon"})


async def test_the_violations_projector_sends_each_new_violation_once(
    hooks: Client, tenant: Tenant, receiver: Receiver
) -> None:
    """Wired end to end: events in, the projector judges, deliveries go out signed."""
    from tests.test_rules import history, message, name_invoked

    await subscribe(hooks, tenant, receiver, violation_codes=["E104", "E101"])
    dropped = history((24, name_invoked("ana", "ben", "cleo")))
    await post_events(hooks, tenant, dropped)
    await until(lambda: len(receiver.ids()) == 1, "the E104 delivery")
    (first,) = receiver.payloads()
    assert first["type"] == "violation.detected"
    assert first["data"]["code"] == "E104" and first["data"]["offender"] == "ana"
    assert first["data"]["evidence"] == [dropped[0]["id"]]

    # A late contact changes nothing about E104: re-judged, it is not sent again.
    await post_events(hooks, tenant, history((0, message("ana", "cleo"))))
    later = history((48, name_invoked("dev", "ben", "cleo", "not_given")))
    await post_events(hooks, tenant, later)
    await until(lambda: len(receiver.ids()) == 2, "the second E104")
    await asyncio.sleep(0.3)
    assert [p["data"]["offender"] for p in receiver.payloads()] == ["ana", "dev"]
    assert len(set(receiver.ids())) == 2
