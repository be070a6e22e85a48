"""What the sync and async clients share: settings, headers, read-your-writes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from ledger.client import calls
from ledger.client.calls import MinCursor, Retry
from ledger.client.wire import AppendResult

USER_AGENT = "ledger-client/1"
T_co = TypeVar("T_co", covariant=True)


class Page(Protocol[T_co]):
    """Any list answer: ``{"items": [...], "next_cursor": ...}``."""

    @property
    def items(self) -> Sequence[T_co]: ...

    @property
    def next_cursor(self) -> str | None: ...


class ClientBase:
    """Settings and the read-your-writes memory of one client.

    With ``read_your_writes=True`` every projection read waits for the latest
    append this client made (its cursor goes as ``Ledger-Min-Cursor``) unless
    the call names another ``min_cursor``.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        retry: Retry | None = None,
        read_your_writes: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or Retry()
        self.read_your_writes = read_your_writes
        self.last_append: AppendResult | None = None
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }

    def _request_args(self, call: calls.Call[Any], request_id: str) -> dict[str, Any]:
        return {
            "method": call.method,
            "url": self.base_url + call.path,
            "params": call.params,
            "headers": {**self._headers, **call.headers, calls.REQUEST_ID_HEADER: request_id},
            "content": call.body,
        }

    def _min(self, min_cursor: MinCursor) -> MinCursor:
        if min_cursor is None and self.read_your_writes:
            return self.last_append
        return min_cursor

    def _remember(self, result: AppendResult) -> AppendResult:
        self.last_append = result
        return result
