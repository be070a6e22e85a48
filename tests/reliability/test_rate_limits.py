"""Per-key rate limits: a token bucket per API key, 429 with ``Retry-After`` beyond it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from ledger.api.app import create_app
from ledger.config import Settings
from ledger.ratelimit import IDLE_BUCKETS_KEPT, RateLimiter, retry_after_seconds
from ledger.store.database import Pool
from tests.conftest import Tenant, make_tenant
from tests.reliability.conftest import Server, serving, total_events
from tests.samples import event


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_grants_its_burst_then_refills_at_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(2.0, 3, clock=clock)
    assert [limiter.wait_for("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait_for("k") == pytest.approx(0.5)
    clock.now += 0.25
    assert limiter.wait_for("k") == pytest.approx(0.25)
    clock.now += 0.25
    assert limiter.wait_for("k") == 0.0
    assert limiter.wait_for("k") == pytest.approx(0.5)
    clock.now += 60  # idle: the bucket refills to its burst, not beyond
    assert [limiter.wait_for("k") for _ in range(4)][-1] == pytest.approx(0.5)


def test_keys_have_buckets_of_their_own() -> None:
    limiter = RateLimiter(1.0, 1, clock=Clock())
    assert limiter.wait_for("a") == 0.0
    assert limiter.wait_for("a") > 0
    assert limiter.wait_for("b") == 0.0


def test_zero_per_second_is_off() -> None:
    limiter = RateLimiter(0.0, 1, clock=Clock())
    assert not limiter.enabled
    assert all(limiter.wait_for("k") == 0.0 for _ in range(1000))


def test_idle_buckets_are_forgotten_so_memory_stays_bounded() -> None:
    clock = Clock()
    limiter = RateLimiter(10.0, 1, clock=clock)
    for i in range(IDLE_BUCKETS_KEPT):
        limiter.wait_for(f"k{i}")
    clock.now += 1  # every bucket has refilled
    limiter.wait_for("new")
    assert len(limiter._buckets) == 1


@pytest.mark.parametrize(("wait", "header"), [(0.01, 1), (1.0, 1), (1.2, 2), (30.0, 30)])
def test_retry_after_is_whole_seconds_rounded_up(wait: float, header: int) -> None:
    assert retry_after_seconds(wait) == header


def test_settings_read_the_limits_with_generous_defaults() -> None:
    default = Settings.from_env({})
    assert default.rate_limit_per_second == 1000.0
    assert default.rate_limit_burst == 2000
    tiny = Settings.from_env(
        {"LEDGER_RATE_LIMIT_PER_SECOND": "0.5", "LEDGER_RATE_LIMIT_BURST": "2"}
    )
    assert (tiny.rate_limit_per_second, tiny.rate_limit_burst) == (0.5, 2)
    assert Settings.from_env({"LEDGER_RATE_LIMIT_PER_SECOND": "0"}).rate_limit_per_second == 0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LEDGER_RATE_LIMIT_PER_SECOND": "lots"}, "must be a number of requests"),
        ({"LEDGER_RATE_LIMIT_PER_SECOND": "-1"}, "must not be negative"),
        ({"LEDGER_RATE_LIMIT_BURST": "1.5"}, "must be a whole number"),
    ],
)
def test_bad_limit_settings_say_what_is_wrong(env: dict[str, str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        Settings.from_env(env)


@pytest.fixture(scope="module")
def limited(database_url: str) -> Iterator[Server]:
    """A server allowing each key 3 requests at once, then one every 5 seconds (slow
    enough that a loaded machine cannot refill a token between the first requests)."""
    with serving(
        database_url, LEDGER_RATE_LIMIT_PER_SECOND="0.2", LEDGER_RATE_LIMIT_BURST="3"
    ) as running:
        yield running


async def test_a_key_beyond_its_burst_gets_429_with_retry_after_then_recovers(
    limited: Server, pool: Pool, tenant: Tenant
) -> None:
    other = await make_tenant(pool)
    async with httpx.AsyncClient(base_url=limited.base, timeout=10) as http:
        for _ in range(3):
            ok = await http.get("/v1/events", headers=tenant.headers)
            assert ok.status_code == 200, ok.text
        before = await total_events(pool)
        refused = await http.post(
            "/v1/events",
            json={"events": [event("message.sent", {"from": "a", "to": "b", "kind": "reply"})]},
            headers=tenant.headers,
        )
        assert refused.status_code == 429
        assert refused.headers["content-type"].startswith("application/problem+json")
        retry_after = int(refused.headers["retry-after"])
        assert 1 <= retry_after <= 5
        problem = refused.json()
        assert problem["type"] == "urn:ledger:problem:rate-limited"
        assert problem["field"] == "Authorization"
        assert "0.2 requests per second (bursts of 3)" in problem["detail"]
        assert await total_events(pool) == before

        # Another key (here another tenant's) has its own bucket.
        assert (await http.get("/v1/events", headers=other.headers)).status_code == 200
        # Health needs no key and is never limited.
        assert (await http.get("/health")).status_code == 200

        # The same key is served again once its bucket refills: a bounded wait.
        deadline = time.monotonic() + 10 * retry_after
        while True:
            again = await http.get("/v1/events", headers=tenant.headers)
            if again.status_code == 200:
                break
            assert again.status_code == 429
            assert time.monotonic() < deadline, "the key was never served again"
            await asyncio.sleep(int(again.headers["retry-after"]))


async def test_unknown_keys_are_401_not_429(limited: Server) -> None:
    async with httpx.AsyncClient(base_url=limited.base, timeout=10) as http:
        for _ in range(5):
            response = await http.get("/v1/events", headers={"Authorization": "Bearer nope"})
            assert response.status_code == 401


async def test_without_limits_a_key_is_never_refused(database_url: str, tenant: Tenant) -> None:
    app: Litestar = create_app(database_url, migrate=False, pool_size=2, run_projector=False)
    async with AsyncTestClient(app=app) as client:
        statuses = {
            (await client.get("/v1/events/horizon", headers=tenant.headers)).status_code
            for _ in range(50)
        }
    assert statuses == {200}
