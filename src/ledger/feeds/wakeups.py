"""One LISTEN connection per process, fanned out to every follower of a tenant.

A feed per client must not hold a database connection while it waits: that
would cap clients at the pool size. Instead one connection listens on the
channels appends (and later projectors) notify, with the tenant id as payload,
and wakes the followers of that tenant. A missed notification (the listening
connection lost) only delays followers until their next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

from ledger.store.database import Pool

_log = logging.getLogger("ledger.feeds")
Key = tuple[str, int]
ANYTHING: Key = ("*", 0)


class Wakeups:
    """Counts notifications per (channel, tenant) and wakes whoever waits on them."""

    def __init__(self) -> None:
        self._counts: defaultdict[Key, int] = defaultdict(int)
        self._events: dict[Key, asyncio.Event] = {}

    def notify(self, channel: str, tenant_id: int) -> None:
        for key in ((channel, tenant_id), ANYTHING):
            self._counts[key] += 1
            event = self._events.pop(key, None)
            if event is not None:
                event.set()

    def signal(self, channel: str, tenant_id: int) -> TenantSignal:
        return TenantSignal(self, (channel, tenant_id))

    def anything(self) -> TenantSignal:
        """Any notification on any channel, for any tenant (for the webhook dispatcher)."""
        return TenantSignal(self, ANYTHING)

    def _ticket(self, key: Key) -> int:
        return self._counts.get(key, 0)

    async def _wait(self, key: Key, ticket: int, at_most: float) -> None:
        if self._ticket(key) != ticket:
            return
        event = self._events.setdefault(key, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), at_most)


class TenantSignal:
    """A :class:`ledger.feeds.follow.Signal` for one tenant's channel."""

    def __init__(self, wakeups: Wakeups, key: Key) -> None:
        self._wakeups = wakeups
        self._key = key

    def ticket(self) -> int:
        return self._wakeups._ticket(self._key)

    async def wait(self, ticket: int, at_most: float) -> None:
        await self._wakeups._wait(self._key, ticket, at_most)


@contextlib.asynccontextmanager
async def listening(pool: Pool, channels: list[str]) -> AsyncIterator[Wakeups]:
    """Wakeups fed by LISTEN on ``channels`` for as long as the context lasts."""
    wakeups = Wakeups()

    def notified(_conn: Any, _pid: int, channel: str, payload: object) -> None:
        try:
            wakeups.notify(channel, int(str(payload)))
        except ValueError:
            _log.warning("ignoring a notification on %s without a tenant id", channel)

    conn = await pool.acquire()
    try:
        for channel in channels:
            await conn.add_listener(channel, notified)
    except Exception:
        await pool.release(conn)
        raise
    try:
        yield wakeups
    finally:
        for channel in channels:
            with contextlib.suppress(Exception):
                await conn.remove_listener(channel, notified)
        with contextlib.suppress(Exception):
            await pool.release(conn)
