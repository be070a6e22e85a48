"""``/v1/people`` and ``/v1/relationships``: what the projections say.

Every read carries ``Ledger-Cursor`` (the log cursor the projections reflect).
With ``as_of`` (see :mod:`ledger.api.asof`) a read replays the log instead.
A request with ``Ledger-Min-Cursor`` (a cursor from an append) first waits,
bounded, until the projections include it: read-your-writes on demand.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec
from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from ledger.api.asof import AsOf, answer, past_of, timeline_page
from ledger.api.events import Limit, PageCursor
from ledger.api.state import pool_of
from ledger.errors import InvalidInput, NotFound, Unavailable
from ledger.policy import Policy
from ledger.projections import read
from ledger.projections.core import EMPTY, key
from ledger.projections.projector import PROJECTION
from ledger.projections.views import (
    Balance,
    PersonSummary,
    Relationship,
    Side,
    Suggestion,
    balances,
    rank_of,
    reconnect,
    relationship,
    relationships_of,
    side_of,
    summary,
)
from ledger.store.cursor import Cursor
from ledger.store.database import Connection
from ledger.store.read import EventPage
from ledger.tenants.keys import Principal

MIN_CURSOR_HEADER: Final = "Ledger-Min-Cursor"
CURSOR_HEADER: Final = "Ledger-Cursor"
DEFAULT_WAIT_SECONDS: Final = 5.0
_POLL_SECONDS: Final = 0.02
T = TypeVar("T")


class BalancePage(msgspec.Struct, frozen=True):
    items: list[Balance]
    next_cursor: str | None


class RelationshipPage(msgspec.Struct, frozen=True):
    items: list[Relationship]
    next_cursor: str | None


class SuggestionPage(msgspec.Struct, frozen=True):
    items: list[Suggestion]
    next_cursor: str | None


@asynccontextmanager
async def consistent(
    request: Request[Any, Any, Any], tenant_id: int, projection: str = PROJECTION
) -> AsyncIterator[tuple[Connection, read.Snapshot]]:
    """A connection reading one snapshot of a projection, after any wait asked for."""
    wanted_header = request.headers.get(MIN_CURSOR_HEADER)
    wanted = (
        None if wanted_header is None else Cursor.decode(wanted_header, field=MIN_CURSOR_HEADER)
    )
    wait = float(request.app.state.get("min_cursor_wait", DEFAULT_WAIT_SECONDS))
    async with pool_of(request).acquire() as conn:
        if wanted is not None:
            deadline = time.monotonic() + wait
            while (current := await read.checkpoint_of(conn, tenant_id, projection)) < wanted:
                if time.monotonic() >= deadline:
                    raise Unavailable(
                        f"the projections have not reached {wanted_header} within {wait:g} s "
                        f"(they reflect {current.encode()}); retry shortly",
                        field=MIN_CURSOR_HEADER,
                        in_body=False,
                        ledger_cursor=current.encode(),
                    )
                await asyncio.sleep(_POLL_SECONDS)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            yield conn, await read.snapshot(conn, tenant_id, projection)


def reflecting(body: T, snapshot: read.Snapshot) -> Response[T]:
    """``body`` with the log cursor the projection snapshot reflects."""
    return Response(body, headers={CURSOR_HEADER: snapshot.checkpoint.encode()})


def _page(items: Sequence[T], cursor: str | None, limit: int) -> tuple[list[T], str | None]:
    """Offset pages for lists that are sorted after they are read (by strength, ...)."""
    start = 0 if cursor is None else _offset(cursor)
    end = start + limit
    following = (
        "o1" + base64.urlsafe_b64encode(str(end).encode()).decode().rstrip("=")
        if end < len(items)
        else None
    )
    return list(items[start:end]), following


def _offset(cursor: str) -> int:
    try:
        if not cursor.startswith("o1"):
            raise ValueError(cursor)
        start = int(base64.urlsafe_b64decode(cursor[2:] + "==").decode())
        if start < 0:
            raise ValueError(cursor)
    except ValueError:
        raise _foreign_cursor() from None
    return start


def _foreign_cursor() -> InvalidInput:
    return InvalidInput(
        "cursor is not one this list issued; use next_cursor from the previous page",
        field="cursor",
        in_body=False,
    )


async def _sides(
    conn: Connection, tenant_id: int, snapshot: read.Snapshot, person: str, field: str = "person"
) -> list[Any]:
    """A person's relationships, each from their side; 404 for someone never seen."""
    pairs = await read.pairs_of(conn, tenant_id, snapshot.generation, person)
    if not pairs:
        await _known(conn, tenant_id, snapshot, person, field)
    return [side_of(person, a, b, pair) for a, b, pair in pairs]


async def _known(
    conn: Connection, tenant_id: int, snapshot: read.Snapshot, person: str, field: str
) -> None:
    if not await read.known(conn, tenant_id, snapshot.generation, person):
        raise NotFound(
            f"no events involve {person!r} (yet); check the id, or wait for your append "
            f"with the {MIN_CURSOR_HEADER} header",
            field=field,
            in_body=False,
        )


def _now() -> datetime:
    return datetime.now(UTC)


@get("/v1/people/{person:str}", opt={"scope": "projections:read"}, summary="A person's totals")
async def get_person(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    person: FromPath[str],
    as_of: AsOf = None,
) -> Response[PersonSummary]:
    if as_of is not None:
        past, bound = await past_of(request, principal, as_of, (person,), {person: "person"})
        return answer(
            summary(person, past.sides_of(person), bound.now, past.policies.latest()), bound
        )
    async with consistent(request, principal.tenant_id) as (conn, snap):
        sides = await _sides(conn, principal.tenant_id, snap, person)
    return reflecting(summary(person, sides, _now(), snap.policy.latest()), snap)


@get(
    "/v1/people/{person:str}/balances",
    opt={"scope": "projections:read"},
    summary="What a person has given to and received from each counterparty",
)
async def get_balances(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    person: FromPath[str],
    cursor: PageCursor = None,
    limit: Limit = 100,
    as_of: AsOf = None,
) -> Response[BalancePage]:
    after, skip = _balance_cursor(cursor)
    if as_of is not None:
        past, bound = await past_of(request, principal, as_of, (person,), {person: "person"})
        later = [b for b in balances(past.sides_of(person)) if b.counterparty > after]
        return answer(_balance_page(later[skip : skip + limit + 1], limit), bound)
    async with consistent(request, principal.tenant_id) as (conn, snap):
        found = await read.balances(
            conn, principal.tenant_id, snap.generation, person, after, skip, limit + 1
        )
        if not found:
            await _known(conn, principal.tenant_id, snap, person, "person")
    return reflecting(_balance_page(found, limit), snap)


# Balance cursors name the last counterparty seen (keyset: a page costs its own
# rows). "o1" offsets, which balances were paged by before, are still honoured.
_BALANCE_CURSOR: Final = "b1"
_LAST_OFFSET: Final = 2**62  # past any list; keeps OFFSET + LIMIT within bigint


def _balance_cursor(cursor: str | None) -> tuple[str, int]:
    """(counterparty to continue after, balances to skip past it)."""
    if cursor is None:
        return "", 0
    if cursor.startswith("o1"):
        return "", min(_offset(cursor), _LAST_OFFSET)
    body = cursor[len(_BALANCE_CURSOR) :]
    try:
        if not cursor.startswith(_BALANCE_CURSOR):
            raise ValueError(cursor)
        after = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
        if not after or "\x00" in after:
            raise ValueError(cursor)
    except ValueError:
        raise _foreign_cursor() from None
    return after, 0


def _balance_page(following: Sequence[Balance], limit: int) -> BalancePage:
    """The page out of up to ``limit + 1`` balances after the cursor; the extra one
    says whether another page follows."""
    items = list(following[:limit])
    if len(following) <= limit:
        return BalancePage(items, None)
    last = items[-1].counterparty.encode()
    return BalancePage(items, _BALANCE_CURSOR + base64.urlsafe_b64encode(last).decode().rstrip("="))


Sort = Literal["strength", "last_contact", "overdue"]


@get(
    "/v1/people/{person:str}/relationships",
    opt={"scope": "projections:read"},
    summary="A person's relationships, strongest first (or most recent, or most overdue)",
)
async def get_relationships(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    person: FromPath[str],
    sort: Annotated[
        Sort, QueryParameter(description="strength, last_contact or overdue")
    ] = "strength",
    cursor: PageCursor = None,
    limit: Limit = 100,
    as_of: AsOf = None,
) -> Response[RelationshipPage]:
    if as_of is not None:
        past, bound = await past_of(request, principal, as_of, (person,), {person: "person"})
        ranked = _sorted(person, past.sides_of(person), bound.now, past.policies.latest(), sort)
        items, following = _page(ranked, cursor, limit)
        return answer(RelationshipPage(items, following), bound)
    async with consistent(request, principal.tenant_id) as (conn, snap):
        sides = await _sides(conn, principal.tenant_id, snap, person)
    items, following = _page(
        _sorted(person, sides, _now(), snap.policy.latest(), sort), cursor, limit
    )
    return reflecting(RelationshipPage(items, following), snap)


def _sorted(
    person: str, sides: Sequence[Side], now: datetime, policy: Policy, sort: Sort
) -> list[Relationship]:
    ranked = relationships_of(person, sides, now, policy)
    if sort == "last_contact":
        ranked.sort(
            key=lambda r: (r.last_contact_at or datetime.min.replace(tzinfo=UTC), r.b), reverse=True
        )
    elif sort == "overdue":
        ranked.sort(key=lambda r: (-(r.overdue_days or 0.0), r.b))
    return ranked


@get(
    "/v1/people/{person:str}/reconnect",
    opt={"scope": "projections:read"},
    summary="Relationships overdue for contact, strongest and most overdue first",
)
async def get_reconnect(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    person: FromPath[str],
    cursor: PageCursor = None,
    limit: Limit = 100,
    as_of: AsOf = None,
) -> Response[SuggestionPage]:
    if as_of is not None:
        past, bound = await past_of(request, principal, as_of, (person,), {person: "person"})
        sides = past.sides_of(person)
        suggested = reconnect(relationships_of(person, sides, bound.now, past.policies.latest()))
        items, following = _page(suggested, cursor, limit)
        return answer(SuggestionPage(items, following), bound)
    async with consistent(request, principal.tenant_id) as (conn, snap):
        sides = await _sides(conn, principal.tenant_id, snap, person)
    suggestions = reconnect(relationships_of(person, sides, _now(), snap.policy.latest()))
    items, following = _page(suggestions, cursor, limit)
    return reflecting(SuggestionPage(items, following), snap)


@get(
    "/v1/people/{person:str}/timeline",
    opt={"scope": "projections:read"},
    summary="A person's events in the order they happened",
)
async def get_person_timeline(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    person: FromPath[str],
    cursor: PageCursor = None,
    limit: Limit = 100,
    as_of: AsOf = None,
) -> Response[EventPage]:
    after = read.TIMELINE_START if cursor is None else read.decode_timeline_cursor(cursor)
    if as_of is not None:
        past, bound = await past_of(request, principal, as_of, (person,), {person: "person"})
        page = await timeline_page(request, principal, past.timeline((person,)), after, limit)
        return answer(page, bound)
    async with consistent(request, principal.tenant_id) as (conn, snap):
        items, following = await read.timeline(
            conn, principal.tenant_id, snap.generation, (person,), after, limit
        )
        if not items and cursor is None:
            await _known(conn, principal.tenant_id, snap, person, "person")
    return reflecting(EventPage(items, following), snap)


@get(
    "/v1/relationships/{a:str}/{b:str}",
    opt={"scope": "projections:read"},
    summary="Two people's relationship, from a's side",
)
async def get_relationship(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    a: FromPath[str],
    b: FromPath[str],
    as_of: AsOf = None,
) -> Response[Relationship]:
    if a == b:
        raise InvalidInput(
            "a relationship is between two different people", field="b", in_body=False
        )
    if as_of is not None:
        past, bound = await past_of(request, principal, as_of, (a,), {a: "a", b: "b"})
        sides = past.sides_of(a)
        side = next((s for s in sides if s.counterparty == b), None)
        found = _relationship(a, b, side, rank_of(sides, b), bound.now, past.policies.latest())
        return answer(found, bound)
    async with consistent(request, principal.tenant_id) as (conn, snap):
        tenant_id, generation = principal.tenant_id, snap.generation
        pair = await read.pair(conn, tenant_id, generation, a, b)
        if pair is None:
            await _known(conn, tenant_id, snap, a, "a")
        await _known(conn, tenant_id, snap, b, "b")
        side, rank = None, None
        if pair is not None:
            side = side_of(a, *key(a, b), pair)
            rank = await read.rank(conn, tenant_id, generation, a, b, pair)
    return reflecting(_relationship(a, b, side, rank, _now(), snap.policy.latest()), snap)


def _relationship(
    a: str, b: str, side: Side | None, rank: int | None, now: datetime, policy: Policy
) -> Relationship:
    """a's relationship with b; ``rank`` (among a's relationships, by strength) sets
    its cadence. Without a side they are strangers."""
    if side is None:
        return relationship(a, side_of(a, *key(a, b), EMPTY), now, policy, None)
    return relationship(a, side, now, policy, rank)


@get(
    "/v1/relationships/{a:str}/{b:str}/timeline",
    opt={"scope": "projections:read"},
    summary="The events two people share, in the order they happened",
)
async def get_pair_timeline(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    a: FromPath[str],
    b: FromPath[str],
    cursor: PageCursor = None,
    limit: Limit = 100,
    as_of: AsOf = None,
) -> Response[EventPage]:
    after = read.TIMELINE_START if cursor is None else read.decode_timeline_cursor(cursor)
    if as_of is not None:
        past, bound = await past_of(request, principal, as_of, (a, b), {a: "a", b: "b"})
        page = await timeline_page(request, principal, past.timeline((a, b)), after, limit)
        return answer(page, bound)
    async with consistent(request, principal.tenant_id) as (conn, snap):
        items, following = await read.timeline(
            conn, principal.tenant_id, snap.generation, (a, b), after, limit
        )
        if not items and cursor is None:
            await _known(conn, principal.tenant_id, snap, a, "a")
            await _known(conn, principal.tenant_id, snap, b, "b")
    return reflecting(EventPage(items, following), snap)


ROUTES: Final = [
    get_person,
    get_balances,
    get_relationships,
    get_reconnect,
    get_person_timeline,
    get_relationship,
    get_pair_timeline,
]
