"""Group commit: concurrent appends of one tenant share a transaction.

An append on its own pays for a lock, a read, an insert and a commit (an fsync
of the WAL), several round trips in all. When many clients append at once,
most of that is the same work done again and again. So the server queues each
tenant's appends and one writer per tenant takes whatever has queued while its
previous transaction ran, and places it all with
:func:`ledger.store.append.append_batches`: one lock statement, one read, one
insert, one commit, however many requests.

Nothing about an append's meaning changes. Each request is still all or
nothing, is checked (idempotency, expected versions, lifecycles) as if the
requests of the group had come one after another in queue order, and gets its
own answer or its own 409. A lone request does not wait for company: when the
writer is idle it starts at once, so a group forms only from requests that
would otherwise have queued for a connection and a commit anyway (the same
idea as PostgreSQL's own group commit of WAL flushes).

Two requests with an event id in common never share a group (the second one's
retry must see the first one stored), and a request that forgets a person goes
alone, because forgetting destroys a key that a later request in the same
group might otherwise seal with.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Final

from ledger.audit.keystore import FORGET_TYPE
from ledger.errors import LedgerError, Unavailable
from ledger.events.envelope import NewEvent
from ledger.store.append import AppendResult, Outcome, append_batches
from ledger.store.database import Connection

# A group stops growing at this many events (a single larger batch still goes,
# alone): the insert's arrays, and the time a late request waits, stay bounded.
MAX_GROUP_EVENTS: Final = 1000

Acquire = Callable[[int], AbstractAsyncContextManager[Connection]]


@dataclass
class _Waiting:
    events: list[NewEvent]
    answer: asyncio.Future[Outcome]

    @property
    def alone(self) -> bool:
        return any(event.type == FORGET_TYPE for event in self.events)


@dataclass
class _Tenant:
    queue: deque[_Waiting] = field(default_factory=deque)
    writer: asyncio.Task[None] | None = None


class GroupCommit:
    """The server's way to append; ``acquire(tenant_id)`` lends a connection
    bound to that tenant (row-level security holds inside a group too)."""

    def __init__(self, acquire: Acquire, max_events: int = MAX_GROUP_EVENTS) -> None:
        self._acquire = acquire
        self._max_events = max_events
        self._tenants: dict[int, _Tenant] = {}

    async def append(self, tenant_id: int, events: list[NewEvent]) -> tuple[AppendResult, bool]:
        """As :func:`ledger.store.append.append`, sharing a transaction when others wait."""
        tenant = self._tenants.setdefault(tenant_id, _Tenant())
        waiting = _Waiting(events, asyncio.get_running_loop().create_future())
        tenant.queue.append(waiting)
        if tenant.writer is None:
            tenant.writer = asyncio.create_task(self._write(tenant_id, tenant))
        # Shielded: a client that hangs up does not cancel the group's other
        # requests; its own events are written all the same (a retry with the
        # same ids then finds them stored).
        outcome = await asyncio.shield(waiting.answer)
        if isinstance(outcome, LedgerError):
            raise outcome
        return outcome

    async def close(self) -> None:
        """Stop the writers (the server is stopping): a group in flight rolls back,
        and its requests and those still queued answer 503, to be retried."""
        writers = [t.writer for t in self._tenants.values() if t.writer is not None]
        for writer in writers:
            writer.cancel()
        await asyncio.gather(*writers, return_exceptions=True)

    async def _write(self, tenant_id: int, tenant: _Tenant) -> None:
        group: list[_Waiting] = []
        try:
            while tenant.queue:
                group = self._take(tenant.queue)
                try:
                    async with self._acquire(tenant_id) as conn:
                        outcomes = await append_batches(
                            conn, tenant_id, [waiting.events for waiting in group]
                        )
                except Exception as failed:  # each request of the group answers with it
                    for waiting in group:
                        waiting.answer.set_exception(failed)
                    continue
                for waiting, outcome in zip(group, outcomes, strict=True):
                    waiting.answer.set_result(outcome)
        finally:
            # Only a cancelled writer (the server stopping) leaves requests unanswered.
            for waiting in [*group, *tenant.queue]:
                if not waiting.answer.done():
                    waiting.answer.set_exception(
                        Unavailable("the server is stopping; retry the append with the same ids")
                    )
            tenant.queue.clear()
            tenant.writer = None
            self._tenants.pop(tenant_id, None)

    def _take(self, queue: deque[_Waiting]) -> list[_Waiting]:
        """The longest run at the head of the queue that can share a transaction."""
        first = queue.popleft()
        group, ids, size = [first], {event.id for event in first.events}, len(first.events)
        while queue and not first.alone:
            waiting = queue[0]
            mine = {event.id for event in waiting.events}
            if waiting.alone or size + len(waiting.events) > self._max_events or ids & mine:
                break
            group.append(queue.popleft())
            ids |= mine
            size += len(waiting.events)
        return group
