"""``/v1/audit``: how a number came to be, and whether the projections still say
what the log says. Every route needs the ``audit`` scope."""

from __future__ import annotations

from typing import Any, Final

from litestar import Request, Response, post
from litestar.di import NamedDependency

from ledger.api.state import pool_of
from ledger.audit.verify import Report, verify
from ledger.tenants.keys import Principal

AUDIT_SCOPE: Final = "audit"


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


ROUTES: Final = [post_verify]
