"""What webhooks decide, without I/O: subscriptions, signatures, retries.

Signatures follow the Standard Webhooks spec (standardwebhooks.com), so a
receiver can verify them with any of its libraries: the signed content is
``{webhook-id}.{webhook-timestamp}.{body}``, signed with HMAC-SHA256 under the
base64-decoded part of a ``whsec_...`` secret, sent as ``v1,<base64>``.
During a rotation both secrets sign, space-separated in one header, so a
receiver still holding the old secret keeps verifying until it switches.

Retries back off exponentially (``base * 2**(attempt-1)``, capped) until the
last attempt, after which a delivery is dead: kept, listed, and replayable.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import uuid
from datetime import datetime
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from ledger.errors import InvalidInput
from ledger.events.envelope import decode_body
from ledger.events.vocabulary import EVENT_TYPES

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES: Final = 32
EVERYTHING: Final = "*"
VIOLATION_CODE: Final = re.compile(r"^E\d{3}$")
VIOLATION_MESSAGE: Final = "violation.detected"
MAX_URL_LENGTH: Final = 2000

Status = Literal["pending", "delivered", "dead"]


class WebhookIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A subscription as an app asks for it."""

    url: Annotated[str, Meta(min_length=1, max_length=MAX_URL_LENGTH)]
    event_types: Annotated[list[str], Meta(max_length=100)] = msgspec.field(default_factory=list)
    violation_codes: Annotated[list[str], Meta(max_length=100)] = msgspec.field(
        default_factory=list
    )
    description: Annotated[str, Meta(max_length=500)] = ""


class RotateIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How long the replaced secret keeps signing beside the new one."""

    keep_previous_for_seconds: Annotated[int, Meta(ge=0, le=7 * 24 * 3600)] = 24 * 3600


class Webhook(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    url: str
    event_types: list[str]
    violation_codes: list[str]
    description: str
    created_at: datetime
    previous_secret_expires_at: datetime | None


class WebhookCreated(Webhook, frozen=True, kw_only=True):
    """Answered once, on creation: the only time the secret is shown (rotate for a new one)."""

    secret: str


class WebhookPage(msgspec.Struct, frozen=True):
    items: list[Webhook]
    next_cursor: str | None


class RotatedSecret(msgspec.Struct, frozen=True):
    secret: str
    previous_secret_expires_at: datetime | None


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One message to one subscription, and where its delivery stands."""

    id: uuid.UUID
    webhook_id: uuid.UUID
    type: str
    status: Status
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_response_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any]


class DeliveryPage(msgspec.Struct, frozen=True):
    items: list[Delivery]
    next_cursor: str | None


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """When to try again; configurable so tests (and impatient operators) go fast."""

    base_seconds: float = 5.0
    cap_seconds: float = 6 * 3600.0
    max_attempts: int = 12

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.cap_seconds, self.base_seconds * 2 ** (attempt - 1)))

    def after_failure(self, attempt: int) -> tuple[Status, float]:
        """``dead`` once the last attempt failed, else ``pending`` with the wait."""
        if attempt >= self.max_attempts:
            return "dead", 0.0
        return "pending", self.delay(attempt)


_WEBHOOK_DECODER: Final = msgspec.json.Decoder(WebhookIn)
_ROTATE_DECODER: Final = msgspec.json.Decoder(RotateIn)


def decode_webhook(body: bytes) -> WebhookIn:
    """Decode and check a subscription, naming the field at fault."""
    webhook = decode_body(_WEBHOOK_DECODER, body)
    parts = urlsplit(webhook.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(
            f"url {webhook.url!r} is not an absolute http(s) URL, e.g. https://example.org/hooks",
            field="url",
        )
    for i, name in enumerate(webhook.event_types):
        if name != EVERYTHING and name not in EVENT_TYPES:
            raise InvalidInput(
                f"unknown event type {name!r}; known types: {', '.join(EVENT_TYPES)} "
                f"(or {EVERYTHING!r} for all)",
                field=f"event_types[{i}]",
            )
    for i, code in enumerate(webhook.violation_codes):
        if code != EVERYTHING and not VIOLATION_CODE.match(code):
            raise InvalidInput(
                f"{code!r} is not a violation code; codes read E101, E102, ... "
                f"(or {EVERYTHING!r} for all)",
                field=f"violation_codes[{i}]",
            )
    if not webhook.event_types and not webhook.violation_codes:
        raise InvalidInput(
            f"subscribe to something: event_types and/or violation_codes ({EVERYTHING!r} for all)",
            field="event_types",
        )
    return webhook


def decode_rotation(body: bytes) -> RotateIn:
    return decode_body(_ROTATE_DECODER, body) if body.strip() else RotateIn()


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 256 random bits in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``id.timestamp.body`` under ``secret``."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    content = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(
    secrets_in_force: list[str], message_id: str, timestamp: int, body: bytes
) -> str:
    """One signature per secret in force (two during a rotation), space-separated."""
    return " ".join(sign(s, message_id, timestamp, body) for s in secrets_in_force)
