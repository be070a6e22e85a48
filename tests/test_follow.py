"""The generic follower on its own: any cursor-paged source, a signal, heartbeats."""

from __future__ import annotations

import asyncio

from ledger.feeds.follow import HEARTBEAT, Heartbeat, Item, follow
from ledger.feeds.wakeups import Wakeups


class Source:
    """A growing list paged by index cursors, as a violations table would be."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.fetches = 0

    async def fetch(self, after: str | None) -> list[Item[str]]:
        self.fetches += 1
        start = 0 if after is None else int(after) + 1
        return [Item(value, str(i)) for i, value in enumerate(self.items[start : start + 2], start)]


async def test_it_pages_through_the_source_then_wakes_for_new_items() -> None:
    source = Source()
    source.items = ["a", "b", "c"]
    wakeups = Wakeups()
    followed = follow(
        source.fetch, after=None, signal=wakeups.signal("ch", 1), heartbeat=60, poll=60
    )
    got = [await anext(followed) for _ in range(3)]
    assert [(i.value, i.cursor) for i in got if isinstance(i, Item)] == [
        ("a", "0"),
        ("b", "1"),
        ("c", "2"),
    ]
    waiting = asyncio.ensure_future(anext(followed))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # nothing new: it waits (poll and heartbeat are a minute)
    source.items.append("d")
    wakeups.notify("ch", 2)  # another tenant: not woken
    await asyncio.sleep(0.05)
    assert not waiting.done()
    wakeups.notify("ch", 1)
    item = await asyncio.wait_for(waiting, 5)
    assert isinstance(item, Item)
    assert (item.value, item.cursor) == ("d", "3")
    await followed.aclose()


async def test_it_resumes_after_a_cursor_and_beats_when_quiet() -> None:
    source = Source()
    source.items = ["a", "b", "c"]
    followed = follow(
        source.fetch, after="1", signal=Wakeups().signal("ch", 1), heartbeat=0.05, poll=0.01
    )
    first = await anext(followed)
    assert isinstance(first, Item)
    assert first.value == "c"
    beat = await asyncio.wait_for(anext(followed), 5)
    assert isinstance(beat, Heartbeat)
    assert beat == HEARTBEAT
    source.items.append("d")  # no wakeup at all: the poll finds it
    later = await asyncio.wait_for(anext(followed), 5)
    while isinstance(later, Heartbeat):
        later = await asyncio.wait_for(anext(followed), 5)
    assert later.value == "d"
    await followed.aclose()
