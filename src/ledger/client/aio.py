"""The asyncio client."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx

from ledger.client import calls
from ledger.client.base import ClientBase, Page
from ledger.client.calls import MinCursor, Retry, Sort
from ledger.client.events import Event
from ledger.client.wire import (
    AppendResult,
    BalancePage,
    Envelope,
    EventPage,
    Horizon,
    PersonSummary,
    Relationship,
    RelationshipPage,
    SuggestionPage,
    ViolationPage,
)

T = TypeVar("T")


class AsyncLedger(ClientBase):
    """``async with AsyncLedger("http://127.0.0.1:8000", key) as ledger: await ledger.append(...)``.

    Failed tries (no answer, 429, 502-504) are repeated with backoff as
    ``retry`` says; an error answer raises :class:`~ledger.client.ProblemError`.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        retry: Retry | None = None,
        read_your_writes: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, retry=retry, read_your_writes=read_your_writes)
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def __aenter__(self) -> AsyncLedger:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def run(self, call: calls.Call[T]) -> T:
        """Send ``call``, trying again while the retry policy allows."""
        request_id = calls.new_request_id()
        attempt = 0
        while True:
            try:
                response = await self._http.request(**self._request_args(call, request_id))
            except calls.RETRY_ERRORS:
                delay = self.retry.delay(attempt, None)
                if delay is None:
                    raise
            else:
                delay = self.retry.delay(attempt, response)
                if delay is None:
                    return call.read(response)
            await asyncio.sleep(delay)
            attempt += 1

    async def iterate(
        self, page: Callable[..., Awaitable[Page[T]]], /, *args: Any, **kwargs: Any
    ) -> AsyncIterator[T]:
        """Every item of a list, page after page: ``iterate(ledger.balances, "ana")``."""
        cursor = kwargs.pop("cursor", None)
        while True:
            got = await page(*args, cursor=cursor, **kwargs)
            for item in got.items:
                yield item
            if got.next_cursor is None:
                return
            cursor = got.next_cursor

    async def append(self, *events: Event) -> AppendResult:
        """Append atomically; retries re-send the same ids, so nothing is written twice."""
        return self._remember(await self.run(calls.append(events)))

    async def events(
        self,
        *,
        cursor: str | None = None,
        limit: int | None = None,
        types: Sequence[str] = (),
        person: str | None = None,
    ) -> EventPage:
        return await self.run(calls.events(cursor=cursor, limit=limit, types=types, person=person))

    async def event(self, event_id: uuid.UUID | str) -> Envelope:
        return await self.run(calls.event(event_id))

    async def stream(
        self, name: str, *, cursor: str | None = None, limit: int | None = None
    ) -> EventPage:
        return await self.run(calls.stream(name, cursor=cursor, limit=limit))

    async def horizon(self) -> Horizon:
        return await self.run(calls.horizon())

    async def person(self, name: str, *, min_cursor: MinCursor = None) -> PersonSummary:
        return await self.run(calls.person(name, min_cursor=self._min(min_cursor)))

    async def balances(
        self,
        name: str,
        *,
        cursor: str | None = None,
        limit: int | None = None,
        min_cursor: MinCursor = None,
    ) -> BalancePage:
        waiting = self._min(min_cursor)
        return await self.run(calls.balances(name, cursor=cursor, limit=limit, min_cursor=waiting))

    async def relationships(
        self,
        name: str,
        *,
        sort: Sort = "strength",
        cursor: str | None = None,
        limit: int | None = None,
        min_cursor: MinCursor = None,
    ) -> RelationshipPage:
        waiting = self._min(min_cursor)
        call = calls.relationships(name, sort=sort, cursor=cursor, limit=limit, min_cursor=waiting)
        return await self.run(call)

    async def reconnect(
        self,
        name: str,
        *,
        cursor: str | None = None,
        limit: int | None = None,
        min_cursor: MinCursor = None,
    ) -> SuggestionPage:
        waiting = self._min(min_cursor)
        return await self.run(calls.reconnect(name, cursor=cursor, limit=limit, min_cursor=waiting))

    async def timeline(
        self,
        name: str,
        *,
        cursor: str | None = None,
        limit: int | None = None,
        min_cursor: MinCursor = None,
    ) -> EventPage:
        waiting = self._min(min_cursor)
        return await self.run(calls.timeline(name, cursor=cursor, limit=limit, min_cursor=waiting))

    async def relationship(self, a: str, b: str, *, min_cursor: MinCursor = None) -> Relationship:
        return await self.run(calls.relationship(a, b, min_cursor=self._min(min_cursor)))

    async def pair_timeline(
        self,
        a: str,
        b: str,
        *,
        cursor: str | None = None,
        limit: int | None = None,
        min_cursor: MinCursor = None,
    ) -> EventPage:
        waiting = self._min(min_cursor)
        call = calls.pair_timeline(a, b, cursor=cursor, limit=limit, min_cursor=waiting)
        return await self.run(call)

    async def violations(
        self,
        *,
        person: str | None = None,
        offender: str | None = None,
        codes: Sequence[str] = (),
        severities: Sequence[str] = (),
        cursor: str | None = None,
        limit: int | None = None,
        min_cursor: MinCursor = None,
    ) -> ViolationPage:
        """Etiquette violations, in the order they happened (``person``: offender or affected)."""
        call = calls.violations(
            person=person,
            offender=offender,
            codes=codes,
            severities=severities,
            cursor=cursor,
            limit=limit,
            min_cursor=self._min(min_cursor),
        )
        return await self.run(call)
