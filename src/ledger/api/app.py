"""The Litestar application: routes, auth, problem details, the connection pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.di import Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin

from ledger.api import problems
from ledger.api.auth import principal
from ledger.api.events import ROUTES as EVENT_ROUTES
from ledger.api.guards import check_parameters, with_options
from ledger.api.health import health
from ledger.api.network import ROUTES as NETWORK_ROUTES
from ledger.api.openapi import build_document
from ledger.errors import LedgerError
from ledger.projections import projector
from ledger.ratelimit import RateLimiter
from ledger.store.database import APP_ROLE, WORKER_ROLE, create_pool
from ledger.store.migrate import upgrade

API_VERSION = "1.0.0"
WORKER_POOL_SIZE = 4  # the projector's listener and its passes; requests have their own


@get("/v1/openapi.json", include_in_schema=False, media_type="application/vnd.oai.openapi+json")
async def openapi_document(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    return Response(build_document(request.app))


def create_app(
    database_url: str,
    *,
    migrate: bool = True,
    pool_size: int = 16,
    max_body_bytes: int = 16 * 1024 * 1024,
    run_projector: bool = True,
    min_cursor_wait: float = 5.0,
    rate_limit_per_second: float = 0.0,
    rate_limit_burst: int = 1,
) -> Litestar:
    """An app serving ``database_url``.

    Migrations run at startup unless told not to; the projector runs inside the
    server unless told not to (then run ``ledger project`` workers). Requests
    are limited per API key when ``rate_limit_per_second`` is above 0.
    """

    @asynccontextmanager
    async def database(app: Litestar) -> AsyncIterator[None]:
        if migrate:
            await asyncio.to_thread(upgrade, database_url)
        app.state.tenant_pool = await create_pool(database_url, size=pool_size, role=APP_ROLE)
        app.state.pool = await create_pool(database_url, size=WORKER_POOL_SIZE, role=WORKER_ROLE)
        app.state.min_cursor_wait = min_cursor_wait
        app.state.rate_limiter = RateLimiter(rate_limit_per_second, rate_limit_burst)
        stop = asyncio.Event()
        worker = (
            asyncio.create_task(projector.run(app.state.pool, stop=stop)) if run_projector else None
        )
        try:
            yield
        finally:
            stop.set()
            if worker is not None:
                await worker
            await app.state.pool.close()
            await app.state.tenant_pool.close()

    return Litestar(
        route_handlers=with_options([*EVENT_ROUTES, *NETWORK_ROUTES, health, openapi_document]),
        dependencies={"principal": Provide(principal)},
        exception_handlers={
            LedgerError: problems.ledger_error,
            ValidationException: problems.validation_error,
            HTTPException: problems.http_error,
            **{cls: problems.database_unavailable for cls in problems.UNAVAILABLE},
            Exception: problems.unexpected_error,
        },
        lifespan=[database],
        before_request=check_parameters,
        request_max_body_size=max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="ledger",
            version=API_VERSION,
            description="An event-sourced networking ledger. Errors are RFC 9457 problem details.",
            path="/schema",
            render_plugins=[JsonRenderPlugin()],
        ),
    )
