"""The ``as_of`` query parameter of projection reads: replay instead of the live rows.

Reading the past is an audit: ``as_of`` needs the ``audit`` scope in addition
to the route's own (``projections:read``), so a key that may read today's
numbers cannot replay history unless it was granted that too. Answers carry
``Ledger-Cursor``: the place in the log the replay reflects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Final, TypeVar

from litestar import Request, Response
from litestar.params import QueryParameter

from ledger.api.state import pool_of
from ledger.audit.asof import Past, page_after, parse_as_of
from ledger.audit.replay import Bound, envelopes, involving, knows, resolve
from ledger.errors import Forbidden, NotFound
from ledger.projections.core import TimelineEntry
from ledger.projections.read import encode_timeline_cursor
from ledger.store.database import Connection
from ledger.store.read import EventPage
from ledger.tenants.keys import Principal

AUDIT_SCOPE: Final = "audit"
CURSOR_HEADER: Final = "Ledger-Cursor"
T = TypeVar("T")

AsOf = Annotated[
    str | None,
    QueryParameter(
        description=(
            "Replay history instead of reading the live projections: a cursor (what the ledger "
            "knew at that place in the log) or an RFC 3339 time with zone (what had happened by "
            "then). Needs the `audit` scope."
        )
    ),
]


def require_audit(principal: Principal) -> None:
    if AUDIT_SCOPE not in principal.scopes:
        raise Forbidden(
            f"as_of replays history, which needs the {AUDIT_SCOPE!r} scope; this key's scopes "
            f"are {', '.join(sorted(principal.scopes))}",
            required_scope=AUDIT_SCOPE,
        )


@asynccontextmanager
async def replaying(
    request: Request[Any, Any, Any], principal: Principal, as_of: str
) -> AsyncIterator[tuple[Connection, Bound]]:
    """A connection on one snapshot and the bound ``as_of`` stands for (403, 422 first)."""
    require_audit(principal)
    when = parse_as_of(as_of)
    async with (
        pool_of(request).acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        yield conn, await resolve(conn, principal.tenant_id, when)


async def past_of(
    request: Request[Any, Any, Any],
    principal: Principal,
    as_of: str,
    people: tuple[str] | tuple[str, str],
    known: dict[str, str],
) -> tuple[Past, Bound]:
    """The replayed projections of a person or a pair (``people``); 404 naming the
    field when someone in ``known`` (person: field) is in no event within as_of."""
    async with replaying(request, principal, as_of) as (conn, bound):
        replay = await involving(conn, principal.tenant_id, people, bound)
        past = Past(replay.fold(), replay.policies)
        for person, field in known.items():
            if not past.knows(person) and not await knows(conn, principal.tenant_id, person, bound):
                raise NotFound(
                    f"no events involving {person!r} are within as_of={as_of}",
                    field=field,
                    in_body=False,
                )
    return past, bound


async def timeline_page(
    request: Request[Any, Any, Any],
    principal: Principal,
    entries: list[TimelineEntry],
    after: tuple[datetime, int],
    limit: int,
) -> EventPage:
    """A page of replayed timeline entries as full events, paginated like the live timelines."""
    page, more = page_after(entries, after, limit)
    async with pool_of(request).acquire() as conn:
        items = await envelopes(conn, principal.tenant_id, [e.event_id for e in page])
    last = page[-1] if more else None
    following = None if last is None else encode_timeline_cursor(last.occurred_at, last.position)
    return EventPage(items, following)


def answer(body: T, bound: Bound) -> Response[T]:
    return Response(body, headers={CURSOR_HEADER: bound.cursor.encode()})
