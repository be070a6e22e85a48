"""``/health``: 200 once the API can serve (its database answers)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, get

from ledger.api.state import pool_of


class Health(msgspec.Struct, frozen=True):
    status: str


@get("/health", summary="Liveness: 200 when the API and its database answer")
async def health(request: Request[Any, Any, Any]) -> Health:
    async with pool_of(request).acquire() as conn:
        await conn.fetchval("SELECT 1")
    return Health(status="ok")
