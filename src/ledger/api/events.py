"""``/v1/events`` and ``/v1/streams``: append, follow the log, read a stream."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Final

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from ledger.api.state import appends_of, pool_of
from ledger.errors import InvalidInput, LedgerError, NotFound, UnsupportedMediaType
from ledger.events import cloudevents
from ledger.events.envelope import decode_batch, prepare
from ledger.events.vocabulary import EVENT_TYPES
from ledger.store.append import AppendResult
from ledger.store.cursor import Cursor, decode_version_cursor
from ledger.store.read import (
    Envelope,
    EventPage,
    Horizon,
    get_event,
    horizon,
    read_log,
    read_stream,
)
from ledger.tenants.keys import Principal

JSON_TYPES: Final = ("application/json", "")
CLOUDEVENT_TYPES: Final = (cloudevents.SINGLE, cloudevents.BATCH)
Limit = Annotated[
    int, QueryParameter(ge=1, le=1000, description="Items per page (default 100, at most 1000).")
]
TypeFilter = Annotated[
    list[str] | None, QueryParameter(name="type", description="Only these event types.")
]
PersonFilter = Annotated[
    str | None, QueryParameter(description="Only events that involve this person.")
]
PageCursor = Annotated[
    str | None,
    QueryParameter(
        description="Resume after this cursor (from `next_cursor` or an item's `cursor`)."
    ),
]


@post(
    "/v1/events",
    opt={"scope": "events:write", "request_body": "EventBatch"},
    summary="Append events (one or a batch, atomically)",
    description=(
        "All or nothing: any invalid event refuses the whole batch and nothing is written. "
        "Answers 201 when something was appended, 200 when every event was already stored "
        "(a retry), with the same positions. Also takes CloudEvents 1.0: one event as "
        "`application/cloudevents+json`, a batch as `application/cloudevents-batch+json` "
        "(`type` bare or prefixed `ledger.`, `time` -> `occurred_at`, non-UUID ids -> "
        "UUIDv5 of [source, id]); errors then name CloudEvents attributes."
    ),
    status_code=201,
)
async def append_events(
    request: Request[Any, Any, Any], principal: NamedDependency[Principal]
) -> Response[AppendResult]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in CLOUDEVENT_TYPES:
        return await _append_cloudevents(request, principal, content_type)
    if content_type not in JSON_TYPES:
        raise UnsupportedMediaType(
            f"content type {content_type!r} is not accepted; send application/json, "
            f"{cloudevents.SINGLE} or {cloudevents.BATCH}",
            field="Content-Type",
            in_body=False,
        )
    events = prepare(decode_batch(await request.body()))
    result, created = await appends_of(request).append(principal.tenant_id, events)
    return Response(result, status_code=201 if created else 200)


async def _append_cloudevents(
    request: Request[Any, Any, Any], principal: Principal, content_type: str
) -> Response[AppendResult]:
    """The same append, with errors naming the CloudEvents attribute at fault."""
    batch = content_type == cloudevents.BATCH
    try:
        events = prepare(cloudevents.decode_cloudevents(await request.body(), content_type))
        result, created = await appends_of(request).append(principal.tenant_id, events)
    except LedgerError as exc:
        raise cloudevents.renamed(exc, batch=batch) from None
    return Response(result, status_code=201 if created else 200)


def checked_types(types: list[str] | None) -> None:
    """Refuse an unknown ``type`` filter (it would match nothing, silently)."""
    for i, name in enumerate(types or []):
        if name not in EVENT_TYPES:
            raise InvalidInput(
                f"unknown event type {name!r}; known types: {', '.join(EVENT_TYPES)}",
                field=f"type[{i}]" if len(types or []) > 1 else "type",
                in_body=False,
            )


@get(
    "/v1/events",
    opt={"scope": "events:read"},
    summary="Follow the tenant's log",
    description=(
        "Events in the order readers see them. Following `next_cursor` (or the last item's "
        "`cursor`) never misses an event, even when concurrent appends commit out of order."
    ),
)
async def list_events(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    cursor: PageCursor = None,
    limit: Limit = 100,
    types: TypeFilter = None,
    person: PersonFilter = None,
) -> EventPage:
    checked_types(types)
    after = None if cursor is None else Cursor.decode(cursor)
    async with pool_of(request).acquire() as conn:
        return await read_log(
            conn, principal.tenant_id, after=after, limit=limit, types=types, person=person
        )


@get(
    "/v1/events/horizon",
    opt={"scope": "events:read"},
    summary="How far the readable log lags behind committed appends",
    description=(
        "`cursor` is the last event a follower can read now; `pending_events` are committed "
        "but held back until older transactions anywhere in the database finish."
    ),
)
async def log_horizon(
    request: Request[Any, Any, Any], principal: NamedDependency[Principal]
) -> Horizon:
    async with pool_of(request).acquire() as conn:
        return await horizon(conn, principal.tenant_id)


@get("/v1/events/{event_id:uuid}", opt={"scope": "events:read"}, summary="One event by id")
async def get_one_event(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    event_id: FromPath[uuid.UUID],
) -> Envelope:
    async with pool_of(request).acquire() as conn:
        found = await get_event(conn, principal.tenant_id, event_id)
    if found is None:
        raise NotFound(f"no event with id {event_id}", field="event_id", in_body=False)
    return found


@get(
    "/v1/streams/{stream:str}/events",
    opt={"scope": "events:read"},
    summary="A stream's events in version order",
)
async def list_stream_events(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    stream: FromPath[str],
    cursor: PageCursor = None,
    limit: Limit = 100,
) -> EventPage:
    after = 0 if cursor is None else decode_version_cursor(cursor)
    async with pool_of(request).acquire() as conn:
        page = await read_stream(
            conn, principal.tenant_id, stream, after_version=after, limit=limit
        )
    if not page.items and after == 0:
        raise NotFound(f"stream {stream!r} has no events", field="stream", in_body=False)
    return page


ROUTES: Final = [append_events, list_events, log_horizon, get_one_event, list_stream_events]
