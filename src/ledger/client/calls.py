"""Requests and answers of the v1 API, without any I/O.

The sync and async clients differ only in how they send a :class:`Call` and
wait between tries; what to send, how to read the answer and when to try again
is decided here once for both.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from ledger.client.errors import ProblemError
from ledger.client.events import BATCH_ENCODER, Batch, Event
from ledger.client.wire import (
    AppendResult,
    BalancePage,
    Envelope,
    EventPage,
    Horizon,
    PersonSummary,
    Relationship,
    RelationshipPage,
    SuggestionPage,
    ViolationPage,
)

T = TypeVar("T")
MIN_CURSOR_HEADER: Final = "Ledger-Min-Cursor"
REQUEST_ID_HEADER: Final = "X-Request-Id"
# Answers that say "not now" rather than "no": worth another try.
RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})
# Failures after which the request may or may not have reached the server.
RETRY_ERRORS: Final = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)
Sort = Literal["strength", "last_contact", "overdue"]
MinCursor = str | AppendResult | None


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request, and how to turn its answer into a ``T``."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


@dataclass(frozen=True)
class Retry:
    """How often and how patiently to try again.

    Every request the client makes is safe to repeat: reads trivially, appends
    because their events carry ids chosen before the first try.
    """

    attempts: int = 4
    backoff: float = 0.2
    max_delay: float = 5.0

    def delay(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds to wait before try ``attempt + 1`` (counted from 0), or
        ``None`` to stop. ``response`` is ``None`` when the try got no answer."""
        if attempt + 1 >= self.attempts:
            return None
        if response is not None:
            if response.status_code not in RETRY_STATUSES:
                return None
            try:
                return min(float(response.headers["retry-after"]), self.max_delay)
            except (KeyError, ValueError):
                pass
        # Full jitter, so that many clients failed together do not retry together.
        return random.uniform(0, min(self.backoff * 2**attempt, self.max_delay))  # noqa: S311


def answer(decoder: msgspec.json.Decoder[T]) -> Callable[[httpx.Response], T]:
    def read(response: httpx.Response) -> T:
        if response.status_code >= 400:
            raise ProblemError.from_response(response)
        return decoder.decode(response.content)

    return read


_APPEND: Final = msgspec.json.Decoder(AppendResult)
_ENVELOPE: Final = msgspec.json.Decoder(Envelope)
_EVENT_PAGE: Final = msgspec.json.Decoder(EventPage)
_HORIZON: Final = msgspec.json.Decoder(Horizon)
_PERSON: Final = msgspec.json.Decoder(PersonSummary)
_BALANCES: Final = msgspec.json.Decoder(BalancePage)
_RELATIONSHIP: Final = msgspec.json.Decoder(Relationship)
_RELATIONSHIPS: Final = msgspec.json.Decoder(RelationshipPage)
_SUGGESTIONS: Final = msgspec.json.Decoder(SuggestionPage)
_VIOLATIONS: Final = msgspec.json.Decoder(ViolationPage)


def _read_append(response: httpx.Response) -> AppendResult:
    result = answer(_APPEND)(response)
    return msgspec.structs.replace(result, created=response.status_code == 201)


def _segment(value: str) -> str:
    """A person or stream id as one path segment, whatever characters it has."""
    return quote(value, safe="")


def _page(cursor: str | None, limit: int | None) -> list[tuple[str, str]]:
    params = [] if cursor is None else [("cursor", cursor)]
    return params if limit is None else [*params, ("limit", str(limit))]


def _waiting(min_cursor: MinCursor) -> dict[str, str]:
    if isinstance(min_cursor, AppendResult):
        min_cursor = min_cursor.cursor
    return {} if min_cursor is None else {MIN_CURSOR_HEADER: min_cursor}


def new_request_id() -> str:
    """One id per call, kept across its retries, so the server's logs tie them together."""
    return uuid.uuid4().hex


def append(events: Sequence[Event]) -> Call[AppendResult]:
    body = BATCH_ENCODER.encode(Batch(list(events)))
    headers = {"Content-Type": "application/json"}
    return Call("POST", "/v1/events", _read_append, headers=headers, body=body)


def events(
    *, cursor: str | None, limit: int | None, types: Sequence[str], person: str | None
) -> Call[EventPage]:
    params = _page(cursor, limit) + [("type", t) for t in types]
    if person is not None:
        params.append(("person", person))
    return Call("GET", "/v1/events", answer(_EVENT_PAGE), params=params)


def event(event_id: uuid.UUID | str) -> Call[Envelope]:
    return Call("GET", f"/v1/events/{_segment(str(event_id))}", answer(_ENVELOPE))


def stream(name: str, *, cursor: str | None, limit: int | None) -> Call[EventPage]:
    path = f"/v1/streams/{_segment(name)}/events"
    return Call("GET", path, answer(_EVENT_PAGE), params=_page(cursor, limit))


def horizon() -> Call[Horizon]:
    return Call("GET", "/v1/events/horizon", answer(_HORIZON))


def person(name: str, *, min_cursor: MinCursor) -> Call[PersonSummary]:
    path = f"/v1/people/{_segment(name)}"
    return Call("GET", path, answer(_PERSON), headers=_waiting(min_cursor))


def balances(
    name: str, *, cursor: str | None, limit: int | None, min_cursor: MinCursor
) -> Call[BalancePage]:
    path = f"/v1/people/{_segment(name)}/balances"
    params = _page(cursor, limit)
    return Call("GET", path, answer(_BALANCES), params=params, headers=_waiting(min_cursor))


def relationships(
    name: str, *, sort: Sort, cursor: str | None, limit: int | None, min_cursor: MinCursor
) -> Call[RelationshipPage]:
    path = f"/v1/people/{_segment(name)}/relationships"
    params = [("sort", sort), *_page(cursor, limit)]
    return Call("GET", path, answer(_RELATIONSHIPS), params=params, headers=_waiting(min_cursor))


def reconnect(
    name: str, *, cursor: str | None, limit: int | None, min_cursor: MinCursor
) -> Call[SuggestionPage]:
    path = f"/v1/people/{_segment(name)}/reconnect"
    params = _page(cursor, limit)
    return Call("GET", path, answer(_SUGGESTIONS), params=params, headers=_waiting(min_cursor))


def timeline(
    name: str, *, cursor: str | None, limit: int | None, min_cursor: MinCursor
) -> Call[EventPage]:
    path = f"/v1/people/{_segment(name)}/timeline"
    params = _page(cursor, limit)
    return Call("GET", path, answer(_EVENT_PAGE), params=params, headers=_waiting(min_cursor))


def relationship(a: str, b: str, *, min_cursor: MinCursor) -> Call[Relationship]:
    path = f"/v1/relationships/{_segment(a)}/{_segment(b)}"
    return Call("GET", path, answer(_RELATIONSHIP), headers=_waiting(min_cursor))


def pair_timeline(
    a: str, b: str, *, cursor: str | None, limit: int | None, min_cursor: MinCursor
) -> Call[EventPage]:
    path = f"/v1/relationships/{_segment(a)}/{_segment(b)}/timeline"
    params = _page(cursor, limit)
    return Call("GET", path, answer(_EVENT_PAGE), params=params, headers=_waiting(min_cursor))


def violations(
    *,
    person: str | None,
    offender: str | None,
    codes: Sequence[str],
    severities: Sequence[str],
    cursor: str | None,
    limit: int | None,
    min_cursor: MinCursor,
) -> Call[ViolationPage]:
    """The tenant's violations; ``person`` as offender or affected."""
    params = _page(cursor, limit) + [("code", c) for c in codes]
    params += [("severity", s) for s in severities]
    params += [
        (name, value) for name, value in (("person", person), ("offender", offender)) if value
    ]
    return Call(
        "GET", "/v1/violations", answer(_VIOLATIONS), params=params, headers=_waiting(min_cursor)
    )
