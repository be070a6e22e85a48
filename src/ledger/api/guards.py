"""Checks every request passes before its handler runs, whatever the route.

PostgreSQL text cannot hold the NUL character: a path or query parameter with
one would fail deep in a query as an internal error. A query parameter the
route does not take (``?limt=5``) would be ignored silently, and the client
would never learn that its filter did nothing. Both are refused here, by name,
for every route, including the ones added later: the routes' own OpenAPI
operations say which query parameters each takes.
"""

from __future__ import annotations

from typing import Any, Final

from litestar import HttpMethod, Request, Response, route
from litestar.handlers import HTTPRouteHandler

from ledger.errors import InvalidInput

MAX_NAME_ECHO: Final = 80


async def check_parameters(request: Request[Any, Any, Any]) -> None:
    """422 naming the first path or query parameter that holds a NUL character, or
    the first query parameter the route does not take."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and "\x00" in value:
            raise _nul_in(name)
    known = _query_parameters(request)
    for name, value in request.query_params.multi_items():
        if "\x00" in value:
            raise _nul_in(name)
        if known is not None and name not in known:
            shown = name[:MAX_NAME_ECHO] or "(a name left empty)"
            raise InvalidInput(
                f"this route takes no query parameter {shown!r}; it takes "
                f"{', '.join(sorted(known)) or 'none'}",
                field=shown,
                in_body=False,
            )


def _query_parameters(request: Request[Any, Any, Any]) -> frozenset[str] | None:
    """The query parameters the matched operation documents (None: undocumented route)."""
    cache: dict[tuple[str, str], frozenset[str] | None] = request.app.state.setdefault(
        "query_parameters", {}
    )
    key = (request.scope.get("path_template", ""), request.method.lower())
    if key not in cache:
        item = (
            request.app.openapi_schema.paths.get(key[0])
            if request.app.openapi_schema.paths
            else None
        )
        operation = getattr(item, key[1], None) if item is not None else None
        cache[key] = (
            None
            if operation is None
            else frozenset(
                p.name
                for p in operation.parameters or []
                if getattr(p, "param_in", None) == "query"
            )
        )
    return cache[key]


def _nul_in(name: str) -> InvalidInput:
    return InvalidInput(
        f"{name} contains the NUL character (%00), which the ledger cannot store or match",
        field=name,
        in_body=False,
    )


def options_for(path: str) -> HTTPRouteHandler:
    """An ``OPTIONS`` handler whose ``Allow`` lists every method the path has.

    Litestar (2.x) builds its automatic ``OPTIONS`` answer with the first handler
    registered on a path and keeps it when more are added, so ``/v1/events``
    (GET and POST) answered ``Allow: OPTIONS, POST``. Registered before the
    path's other handlers (see :func:`with_options`), this one reads the
    methods when asked instead.
    """

    @route(path, http_method=[HttpMethod.OPTIONS], include_in_schema=False)
    async def allowed_methods(request: Request[Any, Any, Any]) -> Response[None]:
        methods = {
            method
            for known in request.app.routes
            if known.path == path
            for method in getattr(known, "methods", ())
        }
        return Response(None, status_code=204, headers={"Allow": ", ".join(sorted(methods))})

    return allowed_methods


def with_options(handlers: list[Any]) -> list[Any]:
    """``handlers``, preceded by an :func:`options_for` for every path that more than
    one of them serves (other entries, routers say, pass through unchanged)."""
    served: dict[str, int] = {}
    for handler in handlers:
        if isinstance(handler, HTTPRouteHandler):
            for path in handler.paths:
                served[path] = served.get(path, 0) + 1
    shared = [path for path, count in served.items() if count > 1]
    return [*(options_for(path) for path in shared), *handlers]
