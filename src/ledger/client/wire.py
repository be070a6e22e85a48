"""What the v1 API answers, as the client decodes it.

The client depends on the wire contract (PRODUCT.md section 6b), not on the
server's storage modules, so it imports neither asyncpg nor Litestar. The
projection views are pure msgspec types already, so they are reused as they
are; the log's envelope and the pages are declared here.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

import msgspec

from ledger.projections.views import Balance, PersonSummary, Relationship, Suggestion

__all__ = [
    "AppendResult",
    "Appended",
    "Balance",
    "BalancePage",
    "Envelope",
    "EventPage",
    "Horizon",
    "PersonSummary",
    "Problem",
    "Relationship",
    "RelationshipPage",
    "Suggestion",
    "SuggestionPage",
]


class Appended(msgspec.Struct, frozen=True):
    id: uuid.UUID
    stream: str
    version: int
    position: int


class AppendResult(msgspec.Struct, frozen=True, kw_only=True):
    """An append's answer. ``created`` is false when the server had every event
    already (a retry answered ``200``): the same positions, nothing written."""

    events: list[Appended]
    cursor: str
    created: bool = True


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    type: str
    stream: str
    version: int
    position: int
    occurred_at: datetime
    recorded_at: datetime
    data: dict[str, Any]
    metadata: dict[str, Any]
    cursor: str | None = None


class EventPage(msgspec.Struct, frozen=True):
    items: list[Envelope]
    next_cursor: str | None


class BalancePage(msgspec.Struct, frozen=True):
    items: list[Balance]
    next_cursor: str | None


class RelationshipPage(msgspec.Struct, frozen=True):
    items: list[Relationship]
    next_cursor: str | None


class SuggestionPage(msgspec.Struct, frozen=True):
    items: list[Suggestion]
    next_cursor: str | None


class Violation(msgspec.Struct, frozen=True, kw_only=True):
    """An etiquette violation as ``GET /v1/violations`` lists it."""

    id: uuid.UUID
    code: str
    severity: str
    offender: str
    affected: list[str]
    evidence: list[uuid.UUID]
    occurred_at: datetime
    explanation: str


class ViolationPage(msgspec.Struct, frozen=True):
    items: list[Violation]
    next_cursor: str | None


class Horizon(msgspec.Struct, frozen=True):
    cursor: str | None
    pending_events: int
    oldest_transaction_age_seconds: float | None


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """An RFC 9457 problem as the ledger sends it; extension members the client
    does not know yet are kept in :attr:`ProblemError.body`."""

    type: str = "about:blank"
    title: str = ""
    status: int = 0
    detail: str = ""
    instance: str | None = None
    field: str | None = None
    pointer: str | None = None
    stream: str | None = None
    expected_version: int | None = None
    actual_version: int | None = None
    limit: int | None = None
    required_scope: str | None = None
    ledger_cursor: str | None = None


PROBLEM_DECODER: Final = msgspec.json.Decoder(Problem)
BODY_DECODER: Final = msgspec.json.Decoder(dict[str, Any])
