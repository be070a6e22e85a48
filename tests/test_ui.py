"""The /ui page in headless Chromium against a real `ledger serve`.

Ana has coffee with Ben; they help each other (a connection). She messages
Cleo, and Dan does her a favor she has not returned. Someone opens the page,
pastes a key, and looks at Ana. A screenshot lands in tests/artifacts/.

One test reads Ana's violations from the real rules; the others serve the
violations route's edge states (404 from an older server, an empty list)
through Playwright's request routing, in the documented shape.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from ledger.client import (
    FavorGranted,
    Ledger,
    MeetingHeld,
    MessageSent,
    NameInvoked,
    event,
)
from tests.test_cli import env_with, run, serving

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
NOW = datetime.now(UTC).replace(microsecond=0)


def chromium_path() -> str:
    """The system Chromium (Playwright's own downloads are not used)."""
    path = os.environ.get("LEDGER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(
            "the /ui test needs Chromium: `apt-get install -y chromium` (Debian; `make chromium` "
            "does it), or set LEDGER_CHROMIUM to a Chromium binary"
        )
    return path


@pytest.fixture(scope="module")
def env(database_url: str) -> dict[str, str]:
    return env_with(LEDGER_DATABASE_URL=database_url)


@pytest.fixture(scope="module")
def server(env: dict[str, str]) -> Iterator[str]:
    with serving(env) as base:
        yield base


@pytest.fixture
def key(env: dict[str, str]) -> str:
    """A tenant of its own per test. Made by the CLI: Playwright's sync API holds the
    thread's event loop, so the suite's async fixtures cannot run beside it."""
    created = run(env, "keys", "create", "--tenant", f"ui-{uuid.uuid4().hex[:8]}")
    return created.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    opened = browser.new_page(viewport={"width": 1280, "height": 900})
    yield opened
    opened.close()


def ana_network(base: str, key: str) -> None:
    def days_ago(days: int) -> datetime:
        return NOW - timedelta(days=days)

    ids = uuid.uuid4().hex[:6]
    with Ledger(base, key) as ledger:
        appended = ledger.append(
            event(
                MeetingHeld(
                    meeting_id=f"m-{ids}",
                    participants=("ana", "ben"),
                    initiated_by="ana",
                    channel="coffee",
                    purpose="catch_up",
                ),
                occurred_at=days_ago(20),
            ),
            event(
                FavorGranted(
                    favor_id=f"f1-{ids}", giver="ben", receiver="ana", kind="introduction"
                ),
                occurred_at=days_ago(15),
            ),
            event(
                FavorGranted(favor_id=f"f2-{ids}", giver="ana", receiver="ben", kind="review"),
                occurred_at=days_ago(10),
            ),
            event(MessageSent(from_="ana", to="cleo", kind="check_in"), occurred_at=days_ago(5)),
            event(
                FavorGranted(favor_id=f"f3-{ids}", giver="dan", receiver="ana", kind="advice"),
                occurred_at=days_ago(2),
            ),
        )
        ledger.person("ana", min_cursor=appended)  # the projections include it all


def violations_answer(status: int, body: object) -> Callable[[Route], None]:
    def fulfil(route: Route) -> None:
        route.fulfill(
            status=status,
            content_type="application/problem+json" if status >= 400 else "application/json",
            body=json.dumps(body),
        )

    return fulfil


def look_at(page: Page, base: str, key: str, person: str) -> None:
    page.goto(f"{base}/ui")
    page.fill("#key", key)
    page.fill("#person", person)
    page.click("button[type=submit]")


def test_a_person_s_network_balances_timeline_and_violations(
    server: str, key: str, page: Page
) -> None:
    ana_network(server, key)
    violation = {
        "id": str(uuid.uuid4()),
        "code": "E111",
        "severity": "low",
        "offender": "ana",
        "affected": ["dan"],
        "evidence": [str(uuid.uuid4())],
        "occurred_at": NOW.isoformat(),
        "explanation": "Dan has given Ana help that only flows one way.",
    }
    page.route(
        "**/v1/people/*/violations*",
        violations_answer(200, {"items": [violation], "next_cursor": None}),
    )
    look_at(page, server, key, "ana")
    page.wait_for_selector("#graph .node")

    nodes = page.locator("#graph g.node")
    people = nodes.evaluate_all("gs => gs.map(g => g.getAttribute('data-person'))")
    assert sorted(people) == ["ben", "cleo", "dan"]
    stages = page.locator("#graph g.node").evaluate_all(
        "gs => gs.map(g => g.dataset.person + ':' + g.firstChild.getAttribute('class'))"
    )
    assert "ben:connection" in stages
    assert "cleo:acquaintance" in stages

    rows = page.locator("#balances tbody tr").all_inner_texts()
    assert [" ".join(row.split()) for row in rows] == ["ben 2 3 -1", "dan 0 1 -1"]

    page.locator("#graph g.node[data-person=cleo]").click()
    page.wait_for_selector("#timeline li[data-type='message.sent']")
    assert page.locator("#timeline li").count() == 1
    assert page.inner_text("#pair") == "ana & cleo"
    page.locator("#graph g.node[data-person=ben]").click()
    page.wait_for_function("document.querySelectorAll('#timeline li').length === 3")
    types = page.locator("#timeline li").evaluate_all("ls => ls.map(l => l.dataset.type)")
    assert types == ["meeting.held", "favor.granted", "favor.granted"]

    page.wait_for_selector("#violations li[data-code=E111]")
    assert "only flows one way" in page.inner_text("#violations")
    assert "offender ana" in page.inner_text("#violations")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui.png"), full_page=True)
    assert (ARTIFACTS / "ui.png").stat().st_size > 10_000


def test_real_violations_with_their_explanations(server: str, key: str, page: Page) -> None:
    ana_network(server, key)
    with Ledger(server, key) as ledger:
        dropped = ledger.append(
            event(
                NameInvoked(invoker="ana", referrer="ben", contacted="cleo", consent="not_given"),
                occurred_at=NOW - timedelta(days=1),
            )
        )
        listed = ledger.violations(person="ana", codes=["E104"], min_cursor=dropped)
        assert [v.offender for v in listed.items] == ["ana"]
    look_at(page, server, key, "ana")
    page.wait_for_selector("#violations li[data-code=E104]")
    text = page.inner_text("#violations")
    assert "ana used ben's name to approach cleo without consent (ben said no)" in text
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-violations.png"), full_page=True)


def test_violations_not_available_is_said_plainly(server: str, key: str, page: Page) -> None:
    ana_network(server, key)
    page.route(
        "**/v1/people/*/violations*",
        violations_answer(404, {"type": "urn:ledger:problem:not-found", "status": 404}),
    )
    look_at(page, server, key, "ana")
    page.wait_for_function(
        "document.getElementById('violations-state').textContent.includes('not available')"
    )
    assert page.locator("#violations li").count() == 0


def test_no_violations_is_said_plainly(server: str, key: str, page: Page) -> None:
    ana_network(server, key)
    page.route(
        "**/v1/people/*/violations*", violations_answer(200, {"items": [], "next_cursor": None})
    )
    look_at(page, server, key, "ana")
    page.wait_for_function(
        "document.getElementById('violations-state').textContent === 'No violations.'"
    )


def test_a_refused_key_and_an_unknown_person_are_explained(
    server: str, key: str, page: Page
) -> None:
    look_at(page, server, key + "x", "ana")
    page.wait_for_selector("#message.error")
    assert page.inner_text("#message").startswith("The API key was refused")
    assert page.locator("#panels").is_hidden()

    look_at(page, server, key, "nobody-here")
    page.wait_for_function("document.getElementById('message').textContent.startsWith('404')")
    assert "no events involve 'nobody-here'" in page.inner_text("#message")
    assert page.locator("#panels").is_hidden()


def test_the_page_needs_nothing_from_outside(server: str, page: Page) -> None:
    """No CDN: every request the page makes goes to the ledger itself."""
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{server}/ui")
    page.wait_for_load_state("networkidle")
    assert requested, "the page loaded nothing"
    assert all(url.startswith(server) for url in requested), requested
    assert {url.rsplit("/", 1)[1] for url in requested} >= {"ui", "style.css", "app.js"}
