"""Every HTTP request: a request id, one log line, and its counts.

Wraps the whole Litestar handler (not a route middleware) so that requests no
route matches (404, 405) are identified, logged and counted as well.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any, Final

import msgspec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send

from ledger.observe.logs import REQUEST_ID
from ledger.observe.metrics import Metrics

REQUEST_ID_HEADER: Final = b"x-request-id"
PROBLEM_TYPE_PREFIX: Final = "urn:ledger:problem:"
# A caller's id is kept when it is a plain token; anything else gets a new one.
_VALID_ID: Final = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
_log = logging.getLogger("ledger.access")


class _ProblemType(msgspec.Struct):
    type: str = "about:blank"


_PROBLEM: Final = msgspec.json.Decoder(_ProblemType)


class RequestObserver:
    """ASGI wrapper: ``X-Request-Id`` in (kept if valid) and out, a log line and metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER, b"")
        valid = _VALID_ID.match(given) and not given.startswith(b"ldg_")  # never echo a key
        request_id = given.decode() if valid else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        seen = _Answer()

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen.status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k != REQUEST_ID_HEADER]
                seen.problem = any(
                    k == b"content-type" and v.startswith(b"application/problem+json")
                    for k, v in headers
                )
                message = {
                    **message,
                    "headers": [*headers, (REQUEST_ID_HEADER, request_id.encode())],
                }
            elif message["type"] == "http.response.body" and seen.problem:
                seen.body += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            self._record(scope, seen, time.perf_counter() - started)
            REQUEST_ID.reset(token)

    def _record(self, scope: HTTPScope, seen: _Answer, seconds: float) -> None:
        method, path, status = scope["method"], scope["path"], seen.status
        route = _route_of(scope)
        self.metrics.requests.labels(method, route, str(status)).inc()
        if seen.problem:
            reason = _reason(seen.body)
            self.metrics.rejected.labels(reason, str(status)).inc()
        if method == "POST" and path == "/v1/events":
            outcome = {201: "created", 200: "replayed"}.get(status, "rejected")
            self.metrics.appends.labels(outcome).inc()
            self.metrics.append_seconds.observe(seconds)
        _log.info(
            "request",
            extra={
                "method": method,
                "path": path,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
            },
        )


class _Answer:
    def __init__(self) -> None:
        self.status = 500  # what the client gets when the app fails before answering
        self.problem = False
        self.body = b""


def _route_of(scope: HTTPScope) -> str:
    """The route's template (``/v1/people/{person:str}``): never the ids in the path."""
    handler: Any = scope.get("route_handler")
    paths = sorted(getattr(handler, "paths", ()) or ())
    return paths[0] if paths else "unmatched"


def _reason(body: bytes) -> str:
    try:
        return _PROBLEM.decode(body).type.removeprefix(PROBLEM_TYPE_PREFIX)
    except msgspec.DecodeError:
        return "unknown"
