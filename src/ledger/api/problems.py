"""RFC 9457 problem details: every error leaves the API in this one shape."""

from __future__ import annotations

import logging
import re
from typing import Any, Final

import asyncpg
import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from ledger.errors import LedgerError, Unavailable

PROBLEM_JSON: Final = "application/problem+json"
TYPE_BASE: Final = "urn:ledger:problem:"
RETRY_AFTER_SECONDS: Final = 2
_INDEX: Final = re.compile(r"\[(\d+)\]")
_log = logging.getLogger("ledger.api")


class ProblemDetails(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The problem body. ``field`` names the culprit as written in the request
    (``events[3].data.giver``); ``pointer`` is the same as a JSON Pointer into
    the body (``/events/3/data/giver``) when the culprit is in the body."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    field: str | None = None
    pointer: str | None = None
    stream: str | None = None
    expected_version: int | None = None
    actual_version: int | None = None
    limit: int | None = None
    required_scope: str | None = None
    ledger_cursor: str | None = None


def pointer_of(field: str) -> str:
    """``events[3].data.giver`` -> ``/events/3/data/giver``; ``[3].time`` -> ``/3/time``."""
    return "/" + _INDEX.sub(r".\1", field).removeprefix(".").replace(".", "/")


def problem_response(
    request: Request[Any, Any, Any],
    *,
    status: int,
    slug: str,
    title: str,
    detail: str,
    field: str | None = None,
    in_body: bool = True,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[ProblemDetails]:
    body = ProblemDetails(
        type=TYPE_BASE + slug,
        title=title,
        status=status,
        detail=detail,
        instance=request.url.path,
        field=field,
        pointer=pointer_of(field) if field and in_body else None,
        **(extra or {}),
    )
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def ledger_error(request: Request[Any, Any, Any], exc: LedgerError) -> Response[ProblemDetails]:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
    if exc.status in (429, 503):
        headers["Retry-After"] = str(getattr(exc, "retry_after", RETRY_AFTER_SECONDS))
    return problem_response(
        request,
        status=exc.status,
        slug=exc.slug,
        title=exc.title,
        detail=exc.detail,
        field=exc.field,
        in_body=exc.in_body,
        extra=exc.extra,
        headers=headers,
    )


def validation_error(
    request: Request[Any, Any, Any], exc: ValidationException
) -> Response[ProblemDetails]:
    """Query and path parameters that Litestar itself refused."""
    messages = exc.extra if isinstance(exc.extra, list) else []
    first = messages[0] if messages and isinstance(messages[0], dict) else {}
    field = first.get("key")
    message = first.get("message") or exc.detail
    detail = f"{field}: {message}" if field else str(message)
    return problem_response(
        request,
        status=422,
        slug="invalid-input",
        title="The request is not valid",
        detail=detail,
        field=field,
        in_body=first.get("source") == "body",
    )


def http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[ProblemDetails]:
    slugs = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}
    status = exc.status_code
    return problem_response(
        request,
        status=status,
        slug=slugs.get(status, "http-error"),
        title=exc.detail if status < 500 else "Internal error",
        detail=_http_detail(request, exc),
        headers=exc.headers or None,
    )


def _http_detail(request: Request[Any, Any, Any], exc: HTTPException) -> str:
    if exc.status_code == 404:
        return f"nothing at {request.url.path}; see /v1/openapi.json for the routes"
    if exc.status_code == 405:
        return f"{request.method} is not allowed on {request.url.path}"
    if exc.status_code == 413:
        return "the request body is larger than this server accepts; send fewer events per request"
    return exc.detail


def database_unavailable(
    request: Request[Any, Any, Any], exc: Exception
) -> Response[ProblemDetails]:
    _log.warning("database unavailable: %s", exc)
    return ledger_error(request, Unavailable("the database is unreachable; retry after a moment"))


def unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ProblemDetails]:
    _log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem_response(
        request,
        status=500,
        slug="internal-error",
        title="Internal error",
        detail="the ledger failed unexpectedly; nothing was written. Retrying is safe.",
    )


UNAVAILABLE: Final = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    # The server ended the session: a fast shutdown, a failover, pg_terminate_backend.
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    # What asyncpg raises on a session cut while a query was under way on it.
    asyncpg.InternalClientError,
)
"""Errors that mean "the database is not there right now": 503 and Retry-After."""
