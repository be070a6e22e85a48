"""What the app keeps between requests: the connection pool."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import State

from ledger.store.database import Pool


def pool_of(request: Request[Any, Any, Any]) -> Pool:
    state: State = request.app.state
    pool: Pool = state.pool
    return pool
