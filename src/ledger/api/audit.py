"""``/v1/audit``: how a number came to be, and whether the projections still say
what the log says. Every route needs the ``audit`` scope."""

from __future__ import annotations

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
from ledger.audit.replay import Bound, involving, knows
from ledger.audit.verify import Report, verify
from ledger.errors import InvalidInput, NotFound
from ledger.projections import read
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


ROUTES: Final = [get_explain, post_verify]
