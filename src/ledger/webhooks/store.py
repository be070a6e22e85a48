"""Webhook subscriptions and the delivery outbox in PostgreSQL (asyncpg).

Deliveries are written in the transaction of what causes them: for events,
by a CTE folded into the append's INSERT (:data:`EVENT_OUTBOX`, no extra
round trip, nothing at all to do for a tenant without subscriptions); for
violations, by :func:`enqueue_violations`, which the violations projector
calls with its own connection inside its own transaction. Either the cause
and its deliveries commit together or neither does.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

import msgspec

from ledger.errors import InvalidInput
from ledger.store.database import Connection
from ledger.webhooks.core import (
    VIOLATION_MESSAGE,
    Delivery,
    DeliveryPage,
    RotatedSecret,
    Status,
    Webhook,
    WebhookCreated,
    WebhookIn,
    WebhookPage,
    new_secret,
)

WEBHOOKS_CHANNEL: Final = "ledger_webhooks"

# The log cursor of an event, as ledger.store.cursor encodes it ("c1" and the
# unpadded base64url of tx_id and position, 8 bytes each, big-endian).
_CURSOR_SQL: Final = (
    "'c1' || rtrim(translate(encode(int8send(i.tx_id) || int8send(i.position), 'base64'), "
    "'+/', '-_'), '=')"
)

# Folded into the append's INSERT as a data-modifying CTE over `inserted`
# (which returns the envelope columns, tx_id as bigint); $1 is the tenant.
# Payloads follow the Standard Webhooks shape: type, timestamp, data.
EVENT_OUTBOX: Final = f"""
    INSERT INTO webhook_deliveries (tenant_id, delivery_id, webhook_id, message_type, payload)
    SELECT w.tenant_id, gen_random_uuid(), w.webhook_id, i.type,
           jsonb_build_object('type', i.type, 'timestamp', i.recorded_at, 'data',
               jsonb_build_object('id', i.id, 'type', i.type, 'stream', i.stream,
                                  'version', i.version, 'position', i.position,
                                  'occurred_at', i.occurred_at, 'recorded_at', i.recorded_at,
                                  'data', i.data, 'metadata', i.metadata,
                                  'cursor', {_CURSOR_SQL}))
    FROM inserted i
    JOIN webhooks w ON w.tenant_id = $1
                   AND (i.type = ANY (w.event_types) OR '*' = ANY (w.event_types))
"""

_ENQUEUE_VIOLATIONS: Final = f"""
WITH queued AS (
    INSERT INTO webhook_deliveries (tenant_id, delivery_id, webhook_id, message_type, payload)
    SELECT w.tenant_id, gen_random_uuid(), w.webhook_id, '{VIOLATION_MESSAGE}',
           jsonb_build_object('type', '{VIOLATION_MESSAGE}', 'timestamp', now(), 'data', v.payload)
    FROM unnest($2::text[], $3::jsonb[]) AS v(code, payload)
    JOIN webhooks w ON w.tenant_id = $1
                   AND (v.code = ANY (w.violation_codes) OR '*' = ANY (w.violation_codes))
    RETURNING 1
)
SELECT (SELECT count(*) FROM queued) AS queued, pg_notify('{WEBHOOKS_CHANNEL}', $1::text)
"""

_WEBHOOK_COLUMNS: Final = """webhook_id, url, event_types, violation_codes, description, created_at,
       CASE WHEN previous_secret_expires_at > now() THEN previous_secret_expires_at END
           AS previous_secret_expires_at"""

_CREATE: Final = f"""
INSERT INTO webhooks (tenant_id, webhook_id, url, event_types, violation_codes, description, secret)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING {_WEBHOOK_COLUMNS}
"""

_LIST: Final = f"""
SELECT {_WEBHOOK_COLUMNS}
FROM webhooks
WHERE tenant_id = $1 AND (created_at, webhook_id) > ($2, $3)
ORDER BY created_at, webhook_id
LIMIT $4
"""

_GET: Final = f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = $1 AND webhook_id = $2"

_DELETE: Final = "DELETE FROM webhooks WHERE tenant_id = $1 AND webhook_id = $2 RETURNING 1"

_ROTATE: Final = """
UPDATE webhooks
SET previous_secret = secret, secret = $3,
    previous_secret_expires_at = now() + make_interval(secs => $4)
WHERE tenant_id = $1 AND webhook_id = $2
RETURNING previous_secret_expires_at
"""

_DELIVERY_COLUMNS: Final = """delivery_id, webhook_id, message_type, status, attempts,
       next_attempt_at, last_attempt_at, last_response_status, last_error, created_at,
       delivered_at, payload"""

_DELIVERIES: Final = {
    with_status: f"""
SELECT {_DELIVERY_COLUMNS}
FROM webhook_deliveries
WHERE tenant_id = $1 AND webhook_id = $2 AND (created_at, delivery_id) > ($3, $4)
  {"AND status = $6" if with_status else ""}
ORDER BY created_at, delivery_id
LIMIT $5
"""
    for with_status in (False, True)
}

_REPLAY: Final = f"""
WITH replayed AS (
    UPDATE webhook_deliveries
    SET status = 'pending', attempts = 0, next_attempt_at = now(), delivered_at = NULL
    WHERE tenant_id = $1 AND webhook_id = $2 AND delivery_id = $3
    RETURNING {_DELIVERY_COLUMNS}
)
SELECT *, pg_notify('{WEBHOOKS_CHANNEL}', $1::text) FROM replayed
"""

_REPLAY_DEAD: Final = f"""
WITH replayed AS (
    UPDATE webhook_deliveries
    SET status = 'pending', attempts = 0, next_attempt_at = now()
    WHERE tenant_id = $1 AND webhook_id = $2 AND status = 'dead'
    RETURNING 1
)
SELECT (SELECT count(*) FROM replayed) AS replayed, pg_notify('{WEBHOOKS_CHANNEL}', $1::text)
"""

_START: Final = (datetime.fromisoformat("1970-01-01T00:00:00+00:00"), uuid.UUID(int=0))


def webhook_of(row: Any) -> Webhook:
    return Webhook(
        id=row["webhook_id"],
        url=row["url"],
        event_types=list(row["event_types"]),
        violation_codes=list(row["violation_codes"]),
        description=row["description"],
        created_at=row["created_at"],
        previous_secret_expires_at=row["previous_secret_expires_at"],
    )


def delivery_of(row: Any) -> Delivery:
    return Delivery(
        id=row["delivery_id"],
        webhook_id=row["webhook_id"],
        type=row["message_type"],
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"] if row["status"] == "pending" else None,
        last_attempt_at=row["last_attempt_at"],
        last_response_status=row["last_response_status"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        delivered_at=row["delivered_at"],
        payload=row["payload"],
    )


async def create_webhook(conn: Connection, tenant_id: int, new: WebhookIn) -> WebhookCreated:
    secret = new_secret()
    row = await conn.fetchrow(
        _CREATE,
        tenant_id,
        uuid.uuid4(),
        new.url,
        sorted(set(new.event_types)),
        sorted(set(new.violation_codes)),
        new.description,
        secret,
    )
    webhook = webhook_of(row)
    return WebhookCreated(**msgspec.structs.asdict(webhook), secret=secret)


async def list_webhooks(
    conn: Connection, tenant_id: int, *, after: str | None, limit: int
) -> WebhookPage:
    at, last = _START if after is None else _decode_key(after)
    rows = await conn.fetch(_LIST, tenant_id, at, last, limit)
    items = [webhook_of(row) for row in rows]
    next_cursor = _encode_key(items[-1].created_at, items[-1].id) if len(items) == limit else None
    return WebhookPage(items=items, next_cursor=next_cursor)


async def get_webhook(conn: Connection, tenant_id: int, webhook_id: uuid.UUID) -> Webhook | None:
    row = await conn.fetchrow(_GET, tenant_id, webhook_id)
    return None if row is None else webhook_of(row)


async def delete_webhook(conn: Connection, tenant_id: int, webhook_id: uuid.UUID) -> bool:
    """Delete a subscription with its deliveries, pending ones included."""
    return await conn.fetchval(_DELETE, tenant_id, webhook_id) is not None


async def rotate_secret(
    conn: Connection, tenant_id: int, webhook_id: uuid.UUID, keep_previous_for: int
) -> RotatedSecret | None:
    secret = new_secret()
    row = await conn.fetchrow(_ROTATE, tenant_id, webhook_id, secret, float(keep_previous_for))
    if row is None:
        return None
    expires = row["previous_secret_expires_at"] if keep_previous_for > 0 else None
    return RotatedSecret(secret=secret, previous_secret_expires_at=expires)


async def list_deliveries(
    conn: Connection,
    tenant_id: int,
    webhook_id: uuid.UUID,
    *,
    status: Status | None,
    after: str | None,
    limit: int,
) -> DeliveryPage:
    at, last = _START if after is None else _decode_key(after)
    args: list[Any] = [tenant_id, webhook_id, at, last, limit]
    if status is not None:
        args.append(status)
    rows = await conn.fetch(_DELIVERIES[status is not None], *args)
    items = [delivery_of(row) for row in rows]
    next_cursor = _encode_key(items[-1].created_at, items[-1].id) if len(items) == limit else None
    return DeliveryPage(items=items, next_cursor=next_cursor)


async def replay_delivery(
    conn: Connection, tenant_id: int, webhook_id: uuid.UUID, delivery_id: uuid.UUID
) -> Delivery | None:
    """Deliver a message again from the first attempt (a dead one, or any other)."""
    row = await conn.fetchrow(_REPLAY, tenant_id, webhook_id, delivery_id)
    return None if row is None else delivery_of(row)


async def replay_dead(conn: Connection, tenant_id: int, webhook_id: uuid.UUID) -> int:
    replayed: int = await conn.fetchval(_REPLAY_DEAD, tenant_id, webhook_id)
    return replayed


async def enqueue_violations(conn: Connection, tenant_id: int, violations: Iterable[object]) -> int:
    """Queue a ``violation.detected`` message per new violation and matching subscription.

    For the violations projector: call it with the connection and inside the
    transaction that stores the violations, so a violation and its deliveries
    commit (or roll back) together. Each violation is a msgspec Struct or a
    mapping with at least ``code`` (``E101``...); it is sent as the message's
    ``data`` as is. Returns how many deliveries were queued.
    """
    payloads = [msgspec.to_builtins(v) for v in violations]
    if not payloads:
        return 0
    codes = [str(p["code"]) for p in payloads]
    encoded = [msgspec.json.encode(p) for p in payloads]
    queued: int = await conn.fetchval(_ENQUEUE_VIOLATIONS, tenant_id, codes, encoded)
    return queued


def _encode_key(at: datetime, key: uuid.UUID) -> str:
    raw = msgspec.json.encode([at, key])
    return "k1" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode_key(token: str) -> tuple[datetime, uuid.UUID]:
    bad = InvalidInput(
        "cursor is not a cursor this list issued; use next_cursor from an earlier page",
        field="cursor",
        in_body=False,
    )
    if not token.startswith("k1"):
        raise bad
    body = token[2:]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        at, key = msgspec.json.decode(raw, type=tuple[datetime, uuid.UUID])
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise bad from None
    return at, key
