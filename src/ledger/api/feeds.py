"""Change feeds as Server-Sent Events: ``GET /v1/events/feed``.

Each SSE message is one event: ``id:`` is the event's log cursor and ``data:``
its envelope as JSON. A client that loses the connection reconnects with
``Last-Event-ID`` (browsers' EventSource do it by themselves) and resumes
right after the last event it received: nothing missed, nothing repeated,
because the feed reads the log exactly as ``GET /v1/events`` does, up to the
commit horizon. Quiet periods carry ``: heartbeat`` comments.

Another feed is one more route: a fetch function returning
:class:`~ledger.feeds.follow.Item` pages after a cursor, handed to
:func:`sse_stream` with the channel its writers notify.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Annotated, Any, Final, TypeVar

import msgspec
from litestar import Request, get
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from ledger.api.events import PersonFilter, TypeFilter, checked_types
from ledger.api.state import pool_of
from ledger.errors import InvalidInput
from ledger.feeds.follow import Heartbeat, Item, follow
from ledger.feeds.wakeups import Wakeups
from ledger.rules import feed as violations_feed
from ledger.rules.catalogue import RULES
from ledger.store.append import NOTIFY_CHANNEL
from ledger.store.cursor import Cursor
from ledger.store.read import Envelope, read_log
from ledger.tenants.keys import Principal

T = TypeVar("T")
PAGE_SIZE: Final = 100
RECONNECT_MS: Final = 1000
_ENCODER: Final = msgspec.json.Encoder()


class FeedSettings(msgspec.Struct, frozen=True):
    """Seconds between heartbeats, and the longest wait for an event without a wakeup."""

    heartbeat: float = 15.0
    poll: float = 1.0


def resume_point(cursor: str | None, last_event_id: str | None) -> Cursor | None:
    """``Last-Event-ID`` wins over ``cursor``: a reconnecting EventSource repeats
    the URL it started with (and its ``cursor``) but sends where it got to."""
    if last_event_id:
        return Cursor.decode(last_event_id.strip(), field="Last-Event-ID")
    return None if cursor is None else Cursor.decode(cursor)


def sse_stream(
    request: Request[Any, Any, Any],
    fetch: Callable[[str | None], Awaitable[Sequence[Item[T]]]],
    *,
    after: str | None,
    channel: str,
    tenant_id: int,
) -> ServerSentEvent:
    """Stream a cursor-paged source as SSE: ``id:`` the cursor, ``data:`` the item as JSON."""
    wakeups: Wakeups = request.app.state.wakeups
    settings: FeedSettings = request.app.state.feed_settings
    followed = follow(
        fetch,
        after=after,
        signal=wakeups.signal(channel, tenant_id),
        heartbeat=settings.heartbeat,
        poll=settings.poll,
    )

    async def messages() -> AsyncIterator[ServerSentEventMessage]:
        yield ServerSentEventMessage(data=None, comment="ledger feed", retry=RECONNECT_MS)
        async for entry in followed:
            if isinstance(entry, Heartbeat):
                yield ServerSentEventMessage(data=None, comment="heartbeat")
            else:
                yield ServerSentEventMessage(
                    data=_ENCODER.encode(entry.value).decode(), id=entry.cursor
                )

    return ServerSentEvent(messages())


@get(
    "/v1/events/feed",
    opt={"scope": "events:read"},
    summary="Follow the log live (Server-Sent Events)",
    description=(
        "An SSE stream of the tenant's events in log order, from `cursor` (or `Last-Event-ID`, "
        "which wins) or from the start. Each message's `id:` is the event's cursor and `data:` "
        "its envelope. Reconnecting with the last `id:` as `Last-Event-ID` resumes without a "
        "miss or a repeat. `: heartbeat` comments keep quiet connections alive."
    ),
    media_type="text/event-stream",
)
async def event_feed(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    cursor: Annotated[
        str | None, QueryParameter(description="Start after this cursor (default: the start).")
    ] = None,
    types: TypeFilter = None,
    person: PersonFilter = None,
    last_event_id: Annotated[
        str | None,
        HeaderParameter(name="Last-Event-ID", description="Resume after this event's cursor."),
    ] = None,
) -> ServerSentEvent:
    checked_types(types)
    start = resume_point(cursor, last_event_id)
    pool = pool_of(request)
    tenant_id = principal.tenant_id

    async def fetch(after: str | None) -> list[Item[Envelope]]:
        async with pool.acquire() as conn:
            page = await read_log(
                conn,
                tenant_id,
                after=None if after is None else Cursor.decode(after),
                limit=PAGE_SIZE,
                types=types,
                person=person,
            )
        return [Item(envelope, envelope.cursor) for envelope in page.items]

    return sse_stream(
        request,
        fetch,
        after=None if start is None else start.encode(),
        channel=NOTIFY_CHANNEL,
        tenant_id=tenant_id,
    )


@get(
    "/v1/violations/feed",
    opt={"scope": "projections:read"},
    summary="Follow new violations live (Server-Sent Events)",
    description=(
        "An SSE stream of violations in the order the ledger found them, from `cursor` (or "
        "`Last-Event-ID`, which wins) or from the first. `id:` resumes right after a message; "
        "`data:` is the violation as `GET /v1/violations` lists it. A violation is announced "
        "once, when found; one that a late event takes back is not announced again."
    ),
    media_type="text/event-stream",
)
async def violation_feed(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    cursor: Annotated[
        str | None, QueryParameter(description="Start after this message id (default: the first).")
    ] = None,
    codes: Annotated[
        list[str] | None, QueryParameter(name="code", description="Only these rule codes.")
    ] = None,
    person: Annotated[
        str | None, QueryParameter(description="Only violations with this offender or affected.")
    ] = None,
    last_event_id: Annotated[
        str | None,
        HeaderParameter(name="Last-Event-ID", description="Resume after this message's id."),
    ] = None,
) -> ServerSentEvent:
    for i, code in enumerate(codes or []):
        if code not in RULES:
            raise InvalidInput(
                f"unknown rule code {code!r}; known codes: {', '.join(sorted(RULES))}",
                field="code" if len(codes or []) == 1 else f"code[{i}]",
                in_body=False,
            )
    if last_event_id:
        start = violations_feed.decode_cursor(last_event_id.strip(), field="Last-Event-ID")
    else:
        start = 0 if cursor is None else violations_feed.decode_cursor(cursor)
    pool = pool_of(request)
    tenant_id = principal.tenant_id

    async def fetch(after: str | None) -> list[Item[msgspec.Raw]]:
        seq = 0 if after is None else violations_feed.decode_cursor(after)
        async with pool.acquire() as conn:
            found = await violations_feed.announced_after(
                conn, tenant_id, seq, codes=codes, person=person, limit=PAGE_SIZE
            )
        return [Item(body, at) for at, body in found]

    return sse_stream(
        request,
        fetch,
        after=violations_feed.encode_cursor(start) if start else None,
        channel=violations_feed.CHANNEL,
        tenant_id=tenant_id,
    )


ROUTES: Final = [event_feed, violation_feed]
