"""Checks every request passes before its handler runs, whatever the route.

PostgreSQL text cannot hold the NUL character: a path or query parameter with
one would fail deep in a query as an internal error. Refusing it here, by name,
covers every route, including the ones added later.
"""

from __future__ import annotations

from typing import Any

from litestar import Request

from ledger.errors import InvalidInput


async def refuse_unstorable_parameters(request: Request[Any, Any, Any]) -> None:
    """422 naming the first path or query parameter that holds a NUL character."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and "\x00" in value:
            raise _nul_in(name)
    for name, value in request.query_params.multi_items():
        if "\x00" in value:
            raise _nul_in(name)


def _nul_in(name: str) -> InvalidInput:
    return InvalidInput(
        f"{name} contains the NUL character (%00), which the ledger cannot store or match",
        field=name,
        in_body=False,
    )
