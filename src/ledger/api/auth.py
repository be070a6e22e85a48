"""Bearer API keys: which tenant a request acts for, and whether it may."""

from __future__ import annotations

from typing import Any

from litestar import Request

from ledger.api.state import keyring_of
from ledger.errors import Forbidden, RateLimited, Unauthorized
from ledger.ratelimit import RateLimiter, retry_after_seconds
from ledger.tenants.keys import Principal, authenticate


async def principal(request: Request[Any, Any, Any]) -> Principal:
    """Resolve the key, then check the scope the route declares in ``opt``."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized(
            "send an API key as `Authorization: Bearer <key>`; `ledger keys create --tenant NAME` "
            "makes one",
            field="Authorization",
            in_body=False,
        )
    async with keyring_of(request).acquire() as conn:
        found = await authenticate(conn, key.strip())
    if found is None:
        raise Unauthorized(
            "this API key is unknown or revoked", field="Authorization", in_body=False
        )
    limiter: RateLimiter | None = request.app.state.get("rate_limiter")
    if limiter is not None and (wait := limiter.wait_for(found.key_id)) > 0:
        raise RateLimited(
            f"this API key may send {limiter.per_second:g} requests per second "
            f"(bursts of {limiter.burst}); retry after {wait:.2f} s",
            retry_after=retry_after_seconds(wait),
        )
    needed: str | None = request.route_handler.opt.get("scope")
    if needed is not None and needed not in found.scopes:
        raise Forbidden(
            f"this key's scopes are {', '.join(sorted(found.scopes))}; this needs {needed!r}",
            required_scope=needed,
        )
    request.state.tenant_id = found.tenant_id  # binds the request's connections (pool_of)
    return found
