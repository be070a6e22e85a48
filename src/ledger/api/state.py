"""What the app keeps between requests: the connection pools.

``app.state.pool`` serves work across tenants (the projector, dispatchers) as
``ledger_worker``. Requests get connections from ``app.state.tenant_pool``, as
``ledger_app``, through :func:`pool_of`: the one place that binds a connection
to the request's tenant (or unbinds it, before the key is known), so row-level
security (migration 0006) confines every query of the request to that tenant's
rows, whatever its ``WHERE`` says.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

from litestar import Request
from litestar.datastructures import State

from ledger.store.database import Connection, Pool
from ledger.store.group import GroupCommit

TENANT_SETTING: Final = "ledger.tenant_id"
_BIND_TENANT: Final = "SELECT set_config('ledger.tenant_id', $1, false)"
_UNBOUND: Final = ""


class Bindings:
    """Which tenant each connection of the request pool is bound to.

    The request pool skips asyncpg's full reset on release (see
    :func:`ledger.store.database.create_pool`), so a binding outlives its
    borrower; it is checked, and changed when it differs, at every borrow.
    Requests of one tenant in a row thus pay no round trip for it, and a
    connection never serves a request with another request's tenant. Keyed by
    backend pid, each new connection registered as unbound (a reused pid
    cannot inherit a stale entry).
    """

    def __init__(self) -> None:
        self._bound: dict[int, str] = {}

    async def on_connect(self, conn: Connection) -> None:
        self._bound[conn.get_server_pid()] = _UNBOUND

    def bound_to(self, pid: int) -> str | None:
        """The tenant (as set, "" for none) the connection of backend ``pid`` is bound to."""
        return self._bound.get(pid)

    async def bind(self, conn: Connection, tenant_id: int | None) -> None:
        wanted = _UNBOUND if tenant_id is None else str(tenant_id)
        pid = conn.get_server_pid()
        if self._bound.get(pid) != wanted:
            self._bound.pop(pid, None)  # unknown until the statement succeeds
            await conn.execute(_BIND_TENANT, wanted)
            self._bound[pid] = wanted


class TenantPool:
    """A pool whose connections are bound to one tenant (or to none, before auth).

    Without ``bindings`` (a pool with asyncpg's full reset) every borrow sets
    the binding.
    """

    def __init__(
        self,
        pool: Pool,
        tenant_id: int | None,
        bindings: Bindings | None = None,
        *,
        any_binding: bool = False,
    ) -> None:
        self.pool = pool
        self.tenant_id = tenant_id
        self.bindings = bindings
        self.any_binding = any_binding

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Connection]:
        async with self.pool.acquire() as conn:
            if self.any_binding:
                pass
            elif self.bindings is not None:
                await self.bindings.bind(conn, self.tenant_id)
            else:
                await conn.execute(
                    _BIND_TENANT, _UNBOUND if self.tenant_id is None else str(self.tenant_id)
                )
            yield conn


def pool_of(request: Request[Any, Any, Any]) -> TenantPool:
    """Connections for this request, bound to its tenant once its key is known."""
    state: State = request.app.state
    tenant_id: int | None = request.state.get("tenant_id")
    return TenantPool(_request_pool(state), tenant_id, state.get("bindings"))


def _request_pool(state: State) -> Pool:
    pool: Pool = state.get("tenant_pool") or state.pool
    return pool


def appends_of(request: Request[Any, Any, Any]) -> GroupCommit:
    """Where this server's appends go: concurrent ones share transactions."""
    appends: GroupCommit = request.app.state.appends
    return appends
