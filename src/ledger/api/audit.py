"""``/v1/audit``: how a number came to be, and whether the projections still say
what the log says. Every route needs the ``audit`` scope."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from ledger.api.asof import AUDIT_SCOPE, AsOf, answer, replaying
from ledger.api.events import Limit, PageCursor
from ledger.api.network import consistent
from ledger.api.state import pool_of
from ledger.audit.explain import Step, explain
from ledger.audit.replay import Bound, involving, knows, of_types
from ledger.audit.verify import Report, verify
from ledger.audit.whatif import (
    WEIGHTED_TYPES,
    BalanceChange,
    ViolationChanges,
    balance_changes,
    violation_changes,
)
from ledger.errors import InvalidInput, NotFound
from ledger.events.envelope import split_error
from ledger.events.vocabulary import PolicyChanged
from ledger.projections import read
from ledger.projections.projector import log_until
from ledger.store.database import Connection
from ledger.tenants.keys import Principal


class ExplainPage(msgspec.Struct, frozen=True):
    items: list[Step]
    next_cursor: str | None


@asynccontextmanager
async def _bounded(
    request: Request[Any, Any, Any], principal: Principal, as_of: str | None
) -> AsyncIterator[tuple[Connection, Bound]]:
    """The live projections' bound (their checkpoint), or the one ``as_of`` names."""
    if as_of is not None:
        async with replaying(request, principal, as_of) as found:
            yield found
        return
    async with consistent(request, principal.tenant_id) as (conn, snap):
        yield conn, Bound(cursor=snap.checkpoint, happened_by=None, now=datetime.now(UTC))


@get(
    "/v1/audit/relationships/{a:str}/{b:str}/explain",
    opt={"scope": AUDIT_SCOPE},
    summary="Every event that moved two people's balance, with weights and running totals",
    description=(
        "Items in the order the events happened, each with the weight it added, where the "
        "weight came from (the event, or the policy version in force then) and the running "
        "totals from a's side: the last item's totals are the balance. Reflects the live "
        "projections' checkpoint (Ledger-Cursor), or `as_of`."
    ),
)
async def get_explain(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    a: FromPath[str],
    b: FromPath[str],
    cursor: PageCursor = None,
    limit: Limit = 100,
    as_of: AsOf = None,
) -> Response[ExplainPage]:
    if a == b:
        raise InvalidInput("a balance is between two different people", field="b", in_body=False)
    after = read.TIMELINE_START if cursor is None else read.decode_timeline_cursor(cursor)
    async with _bounded(request, principal, as_of) as (conn, bound):
        for person, field in ((a, "a"), (b, "b")):
            if not await knows(conn, principal.tenant_id, person, bound):
                raise NotFound(
                    f"no events involve {person!r} (within this read); check the id",
                    field=field,
                    in_body=False,
                )
        replay = await involving(conn, principal.tenant_id, (a, b), bound)
    steps = [
        s
        for s in explain(a, b, replay.events, replay.policies)
        if (s.occurred_at, s.position) > after
    ]
    page = steps[:limit]
    following = (
        read.encode_timeline_cursor(page[-1].occurred_at, page[-1].position)
        if len(steps) > limit
        else None
    )
    return answer(ExplainPage(page, following), bound)


_POLICY: Final = msgspec.json.Decoder(PolicyChanged)
_WHAT_IF_PREFIX: Final = "w1"


class WhatIfPage(msgspec.Struct, frozen=True, kw_only=True):
    """Balances that would differ, and how much of the log was replayed to say so."""

    checked_events: int
    items: list[BalanceChange]
    next_cursor: str | None
    # On the first page only (null on the next ones): the rules judged both ways.
    violations: ViolationChanges | None = None


def _policy_of(body: bytes) -> PolicyChanged:
    try:
        return _POLICY.decode(body)
    except msgspec.ValidationError as exc:
        message, field = split_error(str(exc))
        raise InvalidInput(
            f"{message}; send the fields of a policy.changed event's data", field=field
        ) from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"The body is not valid JSON: {exc}") from None


def _after_pair(cursor: str | None) -> tuple[str, str] | None:
    if cursor is None:
        return None
    try:
        if not cursor.startswith(_WHAT_IF_PREFIX):
            raise ValueError(cursor)
        body = cursor[len(_WHAT_IF_PREFIX) :]
        a, b = msgspec.json.decode(
            base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)), type=tuple[str, str]
        )
    except (ValueError, msgspec.DecodeError):
        raise InvalidInput(
            "cursor is not one this list issued; use next_cursor from the previous page",
            field="cursor",
            in_body=False,
        ) from None
    return a, b


@post(
    "/v1/audit/what-if",
    opt={"scope": AUDIT_SCOPE, "request_body": "PolicyChanged"},
    summary="The balances that would differ under another policy (nothing is written)",
    description=(
        "The body has the shape of a policy.changed event's data. The fields it names are laid "
        "over every policy in the tenant's history (as if they had always held); the others keep "
        "the tenant's own values. Items are the pairs whose balance would change, from a's side "
        "(a < b), current (the live projections' checkpoint, Ledger-Cursor) and what-if."
    ),
    status_code=200,
)
async def post_what_if(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    cursor: PageCursor = None,
    limit: Limit = 100,
) -> Response[WhatIfPage]:
    change = _policy_of(await request.body())
    after = _after_pair(cursor)
    async with _bounded(request, principal, None) as (conn, bound):
        replay = await of_types(conn, principal.tenant_id, WEIGHTED_TYPES, bound)
        judged = None
        if cursor is None:
            logged = [
                e
                async for batch in log_until(conn, principal.tenant_id, bound.cursor)
                for e in batch
            ]
            judged = violation_changes(logged, replay.policies, change)
    changes = [
        c
        for c in balance_changes(replay.events, replay.policies, change)
        if after is None or (c.a, c.b) > after
    ]
    page = changes[:limit]
    following = None
    if len(changes) > limit:
        token = base64.urlsafe_b64encode(msgspec.json.encode((page[-1].a, page[-1].b)))
        following = _WHAT_IF_PREFIX + token.decode().rstrip("=")
    body = WhatIfPage(
        checked_events=len(replay.events), items=page, next_cursor=following, violations=judged
    )
    return answer(body, bound)


@post(
    "/v1/audit/verify",
    opt={"scope": AUDIT_SCOPE},
    summary="Re-derive every projection from the log and list each difference from the live rows",
    description=(
        "Each projection is replayed up to its own checkpoint and compared row by row with "
        "its tables; `differences` is empty on a healthy tenant. Writes nothing."
    ),
    status_code=200,
)
async def post_verify(
    request: Request[Any, Any, Any], principal: NamedDependency[Principal]
) -> Response[Report]:
    async with pool_of(request).acquire() as conn:
        report = await verify(conn, principal.tenant_id)
    return Response(report)


ROUTES: Final = [get_explain, post_what_if, post_verify]
