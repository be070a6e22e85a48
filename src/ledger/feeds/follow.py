"""Follow any cursor-paged source and stream what it yields, forever.

The change feeds (``/v1/events/feed``, and the violations feed to come) are
the same loop: fetch the page after the last cursor sent, send it, and when
nothing is left, wait for a wakeup or a poll interval, with a heartbeat when
the line has been quiet too long. Correctness lives in the source: as long as
``fetch(after)`` never skips an item (the log reader follows the commit
horizon), resuming from the last item's cursor neither misses nor repeats one.

Pure asyncio: no database, no HTTP; the adapters pass a fetch function and a
:class:`Signal`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Final, Generic, Protocol, TypeVar

import msgspec

T = TypeVar("T")


class Signal(Protocol):
    """Wakes a follower when its source may have grown."""

    def ticket(self) -> int:
        """Taken before a fetch; :meth:`wait` returns at once if anything came since."""

    async def wait(self, ticket: int, at_most: float) -> None:
        """Until a wakeup newer than ``ticket``, or ``at_most`` seconds."""


class Heartbeat(msgspec.Struct, frozen=True):
    """Nothing new for a while: a sign of life for the client and the proxies between."""


HEARTBEAT: Final = Heartbeat()


class Item(msgspec.Struct, Generic[T], frozen=True):
    """One item of the source and the cursor that resumes right after it."""

    value: T
    cursor: str


async def follow(
    fetch: Callable[[str | None], Awaitable[Sequence[Item[T]]]],
    *,
    after: str | None,
    signal: Signal,
    heartbeat: float,
    poll: float,
) -> AsyncGenerator[Item[T] | Heartbeat, None]:
    """Items after ``after`` in the source's order, then new ones as they come.

    ``fetch(cursor)`` returns the next page after ``cursor`` (None: from the
    start), empty when there is nothing more for now. ``poll`` bounds how long
    an item that became readable without a wakeup (held back by the commit
    horizon, or written by another process) waits to be sent.
    """
    cursor = after
    quiet_since = time.monotonic()
    while True:
        ticket = signal.ticket()
        page = await fetch(cursor)
        for item in page:
            yield item
            cursor = item.cursor
        if page:
            quiet_since = time.monotonic()
            continue
        quiet_for = time.monotonic() - quiet_since
        if quiet_for >= heartbeat:
            yield HEARTBEAT
            quiet_since = time.monotonic()
            continue
        await signal.wait(ticket, min(poll, heartbeat - quiet_for))
