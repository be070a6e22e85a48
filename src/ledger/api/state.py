"""What the app keeps between requests: the connection pools.

``app.state.pool`` serves work across tenants (the projector, dispatchers) as
``ledger_worker``. Requests get connections from ``app.state.tenant_pool``, as
``ledger_app``, through :func:`pool_of`: the one place that binds a connection
to the request's tenant, so row-level security (migration 0006) confines every
query of the request to that tenant's rows, whatever its ``WHERE`` says.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

from litestar import Request
from litestar.datastructures import State

from ledger.store.database import Connection, Pool

TENANT_SETTING: Final = "ledger.tenant_id"
# Session-level: asyncpg's reset on release (RESET ALL) clears it, so a pooled
# connection never carries one request's tenant into the next.
_BIND_TENANT: Final = "SELECT set_config('ledger.tenant_id', $1, false)"


class TenantPool:
    """A pool whose connections are bound to one tenant (or to none, before auth)."""

    def __init__(self, pool: Pool, tenant_id: int | None) -> None:
        self.pool = pool
        self.tenant_id = tenant_id

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Connection]:
        async with self.pool.acquire() as conn:
            if self.tenant_id is not None:
                await conn.execute(_BIND_TENANT, str(self.tenant_id))
            yield conn


def pool_of(request: Request[Any, Any, Any]) -> TenantPool:
    """Connections for this request, bound to its tenant once its key is known."""
    state: State = request.app.state
    pool: Pool = state.get("tenant_pool") or state.pool
    tenant_id: int | None = request.state.get("tenant_id")
    return TenantPool(pool, tenant_id)
