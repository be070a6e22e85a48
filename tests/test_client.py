"""The Python client against a real `ledger serve` on loopback.

Ana meets Ben, asks him for an introduction, and Ben makes it: the app tells
the ledger through the client, loses an answer on the way, retries, and reads
its own writes.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from ledger.client import (
    AsyncLedger,
    Envelope,
    FavorGranted,
    FavorRequested,
    Ledger,
    MeetingHeld,
    MessageSent,
    ProblemError,
    Retry,
    event,
)
from ledger.client.events import Event
from tests.conftest import Tenant
from tests.proxy import DroppingProxy
from tests.test_cli import env_with, serving

START = datetime.now(UTC).replace(microsecond=0) - timedelta(days=30)
NO_WAIT = Retry(attempts=3, backoff=0.01, max_delay=0.05)


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[str]:
    with serving(env_with(LEDGER_DATABASE_URL=database_url)) as base:
        yield base


def introduction_story() -> list[Event]:
    favor = f"f-{uuid.uuid4().hex[:8]}"
    return [
        event(
            MeetingHeld(
                meeting_id=f"m-{uuid.uuid4().hex[:8]}",
                participants=("ana", "ben"),
                initiated_by="ana",
                channel="coffee",
                purpose="get_to_know",
            ),
            occurred_at=START,
        ),
        event(
            FavorRequested(favor_id=favor, requester="ana", asked_of="ben", kind="introduction"),
            occurred_at=START + timedelta(days=8),
        ),
        event(
            FavorGranted(favor_id=favor, giver="ben", receiver="ana", kind="introduction"),
            occurred_at=START + timedelta(days=10),
            metadata={"actor": "crm-sync"},
        ),
    ]


def followed(base: str, key: str, count: int) -> list[Envelope]:
    """The tenant's log once it shows ``count`` events (bounded wait): the commit
    horizon holds new events back while any older transaction in the cluster runs
    (on a PostgreSQL shared with other test runs, that can be a while)."""
    deadline = time.monotonic() + 90
    with Ledger(base, key) as ledger:
        while True:
            log = list(ledger.iterate(ledger.events, limit=1))
            if len(log) >= count or time.monotonic() > deadline:
                return log
            time.sleep(0.05)


def test_typed_events_append_and_read_back(server: str, tenant: Tenant) -> None:
    story = introduction_story()
    with Ledger(server, tenant.key, read_your_writes=True) as ledger:
        appended = ledger.append(*story)
        assert appended.created
        assert [e.id for e in appended.events] == [e.id for e in story]
        assert [e.version for e in appended.events] == [1, 1, 2]

        balances = ledger.balances("ana").items
        assert [(b.counterparty, b.given, b.received, b.net) for b in balances] == [
            ("ben", 0.0, 3.0, -3.0)
        ]
        assert ledger.person("ben").favors_given == 1
        relationship = ledger.relationship("ben", "ana")
        assert (relationship.stage, relationship.given) == ("acquaintance", 3.0)

        log = followed(server, tenant.key, 3)
        assert [e.id for e in log] == [e.id for e in story]
        assert log[2].metadata == {"actor": "crm-sync"}
        assert log[2].data["giver"] == "ben"
        timeline = list(ledger.iterate(ledger.pair_timeline, "ana", "ben", limit=2))
        assert [e.type for e in timeline] == ["meeting.held", "favor.requested", "favor.granted"]
        assert ledger.event(story[1].id).stream == appended.events[1].stream
        assert [e.version for e in ledger.stream(appended.events[1].stream).items] == [1, 2]
        assert ledger.horizon().cursor == log[-1].cursor == appended.cursor


async def test_the_async_client_reads_its_own_writes(server: str, tenant: Tenant) -> None:
    story = introduction_story()
    async with AsyncLedger(server, tenant.key) as ledger:
        appended = await ledger.append(*story)
        summary = await ledger.person("ana", min_cursor=appended)
        assert (summary.received, summary.relationships) == (3.0, 1)
        related = [r.b async for r in ledger.iterate(ledger.relationships, "ana", limit=1)]
        assert related == ["ben"]
        timeline = [e.id async for e in ledger.iterate(ledger.timeline, "ben", limit=1)]
        assert timeline == [e.id for e in story]
        assert (await ledger.balances("ben")).items[0].given == 3.0
        assert (await ledger.reconnect("ana")).next_cursor is None
        followed(server, tenant.key, 3)
        granted = [e.id async for e in ledger.iterate(ledger.events, types=["favor.granted"])]
        assert granted == [story[2].id]


def test_a_retry_after_a_dropped_answer_writes_nothing_twice(server: str, tenant: Tenant) -> None:
    story = introduction_story()
    with (
        DroppingProxy(server, drop=1) as proxy,
        Ledger(proxy.url, tenant.key, retry=NO_WAIT) as ledger,
    ):
        appended = ledger.append(*story)
        assert (proxy.requests, proxy.dropped) == (2, 1)
        assert not appended.created, "the retry found the first try's events: answered 200"
    stored = followed(server, tenant.key, 3)
    assert [e.id for e in stored] == [e.id for e in story]
    assert [e.position for e in stored] == [e.position for e in appended.events]


async def test_the_async_client_retries_with_the_same_ids(server: str, tenant: Tenant) -> None:
    story = introduction_story()
    with DroppingProxy(server, drop=2) as proxy:
        async with AsyncLedger(proxy.url, tenant.key, retry=NO_WAIT) as ledger:
            appended = await ledger.append(*story)
    stored = followed(server, tenant.key, 3)
    assert (proxy.requests, proxy.dropped) == (3, 2)
    assert not appended.created
    assert [e.id for e in stored] == [e.id for e in story]


def test_it_gives_up_after_its_attempts(server: str, tenant: Tenant) -> None:
    story = introduction_story()
    with (
        DroppingProxy(server, drop=10) as proxy,
        Ledger(proxy.url, tenant.key, retry=NO_WAIT) as ledger,
    ):
        with pytest.raises(httpx.RemoteProtocolError):
            ledger.append(*story)
        assert proxy.requests == 3
    assert len(followed(server, tenant.key, 3)) == 3, "the first try was written, once"


def test_errors_are_problems_with_their_fields(server: str, tenant: Tenant) -> None:
    story = introduction_story()
    with DroppingProxy(server) as proxy, Ledger(proxy.url, tenant.key, retry=NO_WAIT) as ledger:
        ledger.append(*story)
        again = event(
            FavorRequested(
                favor_id=story[1].data.favor_id,  # type: ignore[attr-defined]
                requester="ana",
                asked_of="cleo",
                kind="advice",
            ),
            occurred_at=START,
            expected_version=0,
        )
        with pytest.raises(ProblemError) as conflict:
            ledger.append(again)
        assert (conflict.value.status, conflict.value.slug) == (409, "version-conflict")
        assert conflict.value.problem.actual_version == 2
        assert conflict.value.body["stream"] == story[1].data.stream()
        assert proxy.requests == 2, "a 409 is an answer, not a failure: not retried"

        with pytest.raises(ProblemError) as unknown:
            ledger.balances("nobody-at-all")
        assert (unknown.value.status, unknown.value.field) == (404, "person")

        with pytest.raises(ProblemError) as bad_limit:
            ledger.events(limit=0)
        assert (bad_limit.value.status, bad_limit.value.field) == (422, "limit")

    with Ledger(server, "ldg_nope_nope") as stranger, pytest.raises(ProblemError) as denied:
        stranger.events()
    assert (denied.value.status, denied.value.slug) == (401, "unauthorized")
    assert denied.value.headers["www-authenticate"] == "Bearer"


def test_events_are_checked_before_they_are_sent() -> None:
    with pytest.raises(ValueError, match=r"giver"):
        event(FavorGranted(favor_id="f", giver="ana", receiver="ana", kind="advice"))
    with pytest.raises(ValueError, match=r"kind"):
        event(MessageSent(from_="ana", to="ben", kind="shout"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="time zone"):
        event(MessageSent(from_="ana", to="ben", kind="reply"), occurred_at=datetime(2025, 1, 1))
    first, second = (
        event(MessageSent(from_="a", to="b", kind="reply")),
        event(MessageSent(from_="a", to="b", kind="reply")),
    )
    assert first.id != second.id, "each event gets its own id when it is made"


def test_the_example_runs_as_documented(server: str, tenant: Tenant) -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "client_quickstart.py"
    env = env_with(LEDGER_URL=server, LEDGER_KEY=tenant.key)
    result = subprocess.run(
        [sys.executable, str(example)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "appended 3 events" in result.stdout
    assert "ana and ben: net -1" in result.stdout
    assert "ana and ben: acquaintance" in result.stdout


class Flaky(http.server.BaseHTTPRequestHandler):
    """A loopback stand-in for a ledger behind a struggling proxy: it answers from
    ``script`` in turn and records what each try sent."""

    script: ClassVar[list[tuple[int, dict[str, str], bytes]]] = []
    seen: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Flaky.seen.append((dict(self.headers), body))
        status, headers, answer = Flaky.script.pop(0)
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(answer))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def flaky() -> Iterator[str]:
    Flaky.script, Flaky.seen = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_busy_answers_are_retried_then_reported(flaky: str) -> None:
    busy = (503, {"Retry-After": "0"}, b'{"status": 503, "title": "busy", "detail": "later"}')
    html = (502, {"Content-Type": "text/html"}, b"<html>bad gateway</html>")
    Flaky.script = [busy, (429, {}, b"{}"), html]
    story = introduction_story()
    with Ledger(flaky, "ldg_a_b", retry=NO_WAIT) as ledger, pytest.raises(ProblemError) as failed:
        ledger.append(*story)
    assert (failed.value.status, failed.value.problem.title) == (502, "Bad Gateway")
    assert "bad gateway" in failed.value.detail, "a body that is no problem+json is kept as text"
    assert len(Flaky.seen) == 3
    assert len({headers["X-Request-Id"] for headers, _ in Flaky.seen}) == 1, "one id per call"
    assert len({body for _, body in Flaky.seen}) == 1, "every try sends the same events"
    sent = json.loads(Flaky.seen[0][1])["events"]
    assert [e["id"] for e in sent] == [str(e.id) for e in story]


def test_a_refusal_is_not_retried(flaky: str) -> None:
    problem = b'{"type": "urn:ledger:problem:payload-too-large", "status": 413, "limit": 65536}'
    Flaky.script = [(413, {"Content-Type": "application/problem+json"}, problem)]
    with Ledger(flaky, "ldg_a_b", retry=NO_WAIT) as ledger, pytest.raises(ProblemError) as refused:
        ledger.append(*introduction_story())
    assert (refused.value.slug, refused.value.problem.limit) == ("payload-too-large", 65536)
    assert len(Flaky.seen) == 1


def test_retry_delays_follow_retry_after_and_back_off() -> None:
    retry = Retry(attempts=3, backoff=0.5, max_delay=4.0)
    request = httpx.Request("GET", "http://ledger.invalid/")
    later = httpx.Response(503, headers={"Retry-After": "30"}, request=request)
    assert retry.delay(0, later) == 4.0, "Retry-After, capped by max_delay"
    assert retry.delay(0, httpx.Response(400, request=request)) is None
    jittered = retry.delay(1, None)
    assert jittered is not None
    assert 0 <= jittered <= 1.0, "jittered within backoff * 2**attempt"
    assert retry.delay(2, None) is None, "three attempts in all"


def test_the_client_imports_nothing_of_the_server() -> None:
    """An app that only talks to the ledger needs neither a database driver nor Litestar."""
    probe = "import sys, ledger.client; print(sorted({'asyncpg', 'litestar'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
