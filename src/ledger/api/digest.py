"""``/v1/audit/digest``: the tamper-evidence digest of the tenant's log."""

from __future__ import annotations

from typing import Annotated, Any, Final

from litestar import Request, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from ledger.api.state import pool_of
from ledger.audit.digest_store import DigestReport, current, recompute
from ledger.store.cursor import Cursor
from ledger.tenants.keys import Principal


@get(
    "/v1/audit/digest",
    opt={"scope": "audit"},
    summary="The hash-chain digest of the tenant's log",
    description=(
        "Without `cursor`: the digest of the whole readable log, hashing only the events after "
        "the newest stored checkpoint (fast; trusts the checkpoints). With `cursor`: the digest "
        "of the log up to and including that event, recomputed from the first event and checked "
        "against every stored checkpoint on the way (O(events); `mismatch` names the first "
        "checkpoint the log no longer hashes to, i.e. an event at or before it was altered). "
        "Keep a digest and its cursor; asking again later with that cursor must give the same "
        "digest. Position, tx_id and recorded_at are not hashed, so an export imported into a "
        "fresh tenant has the identical digest."
    ),
)
async def audit_digest(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    cursor: Annotated[
        str | None,
        QueryParameter(description="Digest up to this event's cursor, recomputed in full."),
    ] = None,
) -> DigestReport:
    until = None if cursor is None else Cursor.decode(cursor)
    async with pool_of(request).acquire() as conn:
        if until is None:
            return await current(conn, principal.tenant_id)
        return await recompute(conn, principal.tenant_id, until=until)


ROUTES: Final = [audit_digest]
