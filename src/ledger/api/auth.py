"""Bearer API keys: which tenant a request acts for, and whether it may."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from litestar import Request

from ledger.errors import Forbidden, RateLimited, Unauthorized, Unavailable
from ledger.ratelimit import RateLimiter, retry_after_seconds
from ledger.store.database import Connection
from ledger.tenants.keys import Principal, authenticate_hashes, hash_key


class KeyLookups:
    """Concurrent requests look their keys up in one query.

    Under load most requests arrive while another's lookup is on its way to the
    database; each used to borrow a connection and pay a round trip of its own
    (a seventh of the server's CPU at 64 clients). One reader at a time takes
    every key queued while its previous query ran and looks them all up at
    once, as group commit does for appends. A request's lookup always starts
    after the request arrived, so a key revoked before then is refused, as
    before: nothing is cached.
    """

    def __init__(self, acquire: Callable[[], AbstractAsyncContextManager[Connection]]) -> None:
        self._acquire = acquire
        self._queue: list[tuple[bytes, asyncio.Future[Principal | None]]] = []
        self._reader: asyncio.Task[None] | None = None

    async def principal(self, key: str) -> Principal | None:
        """The key's principal, or None when it is unknown or revoked."""
        answer: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._queue.append((hash_key(key), answer))
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())
        return await answer

    async def _read(self) -> None:
        taken: list[tuple[bytes, asyncio.Future[Principal | None]]] = []
        try:
            while self._queue:
                taken, self._queue = self._queue, []
                try:
                    async with self._acquire() as conn:
                        found = await authenticate_hashes(conn, list({d for d, _ in taken}))
                except Exception as failed:  # every request of the round answers with it
                    for _, answer in taken:
                        if not answer.done():
                            answer.set_exception(failed)
                    continue
                for digest, answer in taken:
                    if not answer.done():  # its client may have left
                        answer.set_result(found.get(digest))
        finally:
            # Only a cancelled reader (the server stopping) leaves requests unanswered.
            for _, answer in [*taken, *self._queue]:
                if not answer.done():
                    answer.set_exception(Unavailable("the server is stopping; retry the request"))
            self._queue = []
            self._reader = None


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
    lookups: KeyLookups = request.app.state.key_lookups
    found = await lookups.principal(key.strip())
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
