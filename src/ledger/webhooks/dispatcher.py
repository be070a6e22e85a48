"""The dispatcher: delivers the outbox over HTTP, with retries and a dead letter.

Any number of dispatchers (one per API process) share the outbox without
coordination beyond PostgreSQL: each claims due deliveries with ``FOR UPDATE
SKIP LOCKED`` and, in the same statement, leases them (pushes their next
attempt past the HTTP timeout) and commits at once. No transaction stays open
while a receiver answers: an open transaction holding row locks would also
hold back the log's commit horizon for every follower. A dispatcher killed
mid-delivery leaves a lease that runs out; the delivery is then tried again
(deliveries are at least once: receivers deduplicate on ``webhook-id``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any, Final

import httpx
import msgspec

from ledger.config import Settings
from ledger.feeds.follow import Signal
from ledger.store.database import Connection, Pool
from ledger.webhooks.core import RetryPolicy, Status, signature_header

_log = logging.getLogger("ledger.webhooks")
USER_AGENT: Final = "ledger-webhooks/1"
MAX_ERROR_CHARS: Final = 500


class DispatchSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How the dispatcher paces itself; every timing is configurable for tests."""

    retry: RetryPolicy = RetryPolicy()
    timeout_seconds: float = 10.0
    poll_seconds: float = 1.0
    batch_size: int = 32

    @property
    def lease_seconds(self) -> float:
        return self.timeout_seconds + 30.0


def dispatch_settings(settings: Settings) -> DispatchSettings | None:
    """The dispatcher as configured by the environment; None when it is switched off."""
    if not settings.webhook_dispatcher:
        return None
    return DispatchSettings(
        retry=RetryPolicy(
            base_seconds=settings.webhook_retry_base,
            cap_seconds=settings.webhook_retry_cap,
            max_attempts=settings.webhook_max_attempts,
        ),
        timeout_seconds=settings.webhook_timeout,
        poll_seconds=settings.webhook_poll,
    )


class Claimed(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: int
    delivery_id: uuid.UUID
    attempts: int
    url: str
    body: bytes
    secrets: list[str]


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    claimed: Claimed
    status: Status
    delay_seconds: float
    response_status: int | None
    error: str | None


_CLAIM: Final = """
WITH due AS (
    SELECT tenant_id, delivery_id
    FROM webhook_deliveries
    WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries d
SET attempts = d.attempts + 1, last_attempt_at = now(),
    next_attempt_at = now() + make_interval(secs => $2)
FROM due, webhooks w
WHERE d.tenant_id = due.tenant_id AND d.delivery_id = due.delivery_id
  AND w.tenant_id = d.tenant_id AND w.webhook_id = d.webhook_id
RETURNING d.tenant_id, d.delivery_id, d.attempts, w.url, d.payload::text AS body,
          array_remove(ARRAY[w.secret, CASE WHEN w.previous_secret_expires_at > now()
                                            THEN w.previous_secret END], NULL) AS secrets
"""

# Guarded by the attempt number: a slow dispatcher whose lease ran out must not
# overwrite what the one that took over recorded.
_RECORD: Final = """
UPDATE webhook_deliveries d
SET status = r.status,
    next_attempt_at = now() + make_interval(secs => r.delay),
    last_response_status = r.response_status,
    last_error = r.error,
    delivered_at = CASE WHEN r.status = 'delivered' THEN now() END
FROM unnest($1::bigint[], $2::uuid[], $3::int[], $4::text[], $5::float8[], $6::int[], $7::text[])
     AS r(tenant_id, delivery_id, attempts, status, delay, response_status, error)
WHERE d.tenant_id = r.tenant_id AND d.delivery_id = r.delivery_id
  AND d.attempts = r.attempts AND d.status = 'pending'
"""


async def claim(conn: Connection, settings: DispatchSettings) -> list[Claimed]:
    rows = await conn.fetch(_CLAIM, settings.batch_size, settings.lease_seconds)
    return [
        Claimed(
            tenant_id=row["tenant_id"],
            delivery_id=row["delivery_id"],
            attempts=row["attempts"],
            url=row["url"],
            body=row["body"].encode(),
            secrets=list(row["secrets"]),
        )
        for row in rows
    ]


async def deliver(http: httpx.AsyncClient, claimed: Claimed, policy: RetryPolicy) -> Outcome:
    """One attempt: POST the signed message; a 2xx answer delivers it."""
    message_id = str(claimed.delivery_id)
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(claimed.secrets, message_id, timestamp, claimed.body),
    }
    response_status: int | None = None
    try:
        response = await http.post(claimed.url, content=claimed.body, headers=headers)
        response_status = response.status_code
        if response.is_success:
            return Outcome(
                claimed=claimed,
                status="delivered",
                delay_seconds=0.0,
                response_status=response_status,
                error=None,
            )
        error = f"HTTP {response.status_code}: {response.text[:MAX_ERROR_CHARS]}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
    status, delay = policy.after_failure(claimed.attempts)
    return Outcome(
        claimed=claimed,
        status=status,
        delay_seconds=delay,
        response_status=response_status,
        error=error,
    )


async def record(conn: Connection, outcomes: list[Outcome]) -> None:
    columns: list[list[Any]] = [[], [], [], [], [], [], []]
    for o in outcomes:
        row = (
            o.claimed.tenant_id,
            o.claimed.delivery_id,
            o.claimed.attempts,
            o.status,
            o.delay_seconds,
            o.response_status,
            o.error,
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    await conn.execute(_RECORD, *columns)


async def dispatch_once(pool: Pool, http: httpx.AsyncClient, settings: DispatchSettings) -> int:
    """Claim what is due, deliver it concurrently, record the outcomes; how many were tried."""
    async with pool.acquire() as conn:
        claimed = await claim(conn, settings)
    if not claimed:
        return 0
    outcomes = await asyncio.gather(*(deliver(http, c, settings.retry) for c in claimed))
    async with pool.acquire() as conn:
        await record(conn, list(outcomes))
    for outcome in outcomes:
        if outcome.status == "dead":
            _log.warning(
                "webhook delivery %s is dead after %d attempts: %s",
                outcome.claimed.delivery_id,
                outcome.claimed.attempts,
                outcome.error,
            )
    return len(claimed)


async def run(
    pool: Pool,
    *,
    signal: Signal,
    settings: DispatchSettings,
    stop: asyncio.Event,
) -> None:
    """Deliver until ``stop`` is set; woken by appends and enqueues, polling for retries."""
    async with httpx.AsyncClient(timeout=settings.timeout_seconds) as http:
        while not stop.is_set():
            ticket = signal.ticket()
            try:
                if await dispatch_once(pool, http, settings):
                    continue
            except Exception:
                _log.exception("webhook dispatch pass failed; retrying")
            waiters = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(signal.wait(ticket, settings.poll_seconds)),
            ]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.gather(*waiters, return_exceptions=True)
