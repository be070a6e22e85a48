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
from ledger.api.audit import ROUTES as AUDIT_ROUTES
from ledger.api.auth import KeyLookups, principal
from ledger.api.digest import ROUTES as DIGEST_ROUTES
from ledger.api.events import ROUTES as EVENT_ROUTES
from ledger.api.feeds import ROUTES as FEED_ROUTES
from ledger.api.feeds import FeedSettings
from ledger.api.guards import check_parameters, with_options
from ledger.api.health import health
from ledger.api.network import ROUTES as NETWORK_ROUTES
from ledger.api.openapi import build_document
from ledger.api.operations import ROUTES as OPERATION_ROUTES
from ledger.api.operations import observe
from ledger.api.rules import ROUTES as RULE_ROUTES
from ledger.api.state import Bindings, TenantPool
from ledger.api.webhooks import ROUTES as WEBHOOK_ROUTES
from ledger.errors import LedgerError
from ledger.feeds.wakeups import listening
from ledger.projections import projector
from ledger.projections.supervisor import ChildProjector
from ledger.ratelimit import RateLimiter
from ledger.rules.feed import CHANNEL as VIOLATIONS_CHANNEL
from ledger.store.append import NOTIFY_CHANNEL
from ledger.store.database import APP_ROLE, WORKER_ROLE, create_pool
from ledger.store.group import GroupCommit
from ledger.store.migrate import upgrade
from ledger.ui import ROUTER as UI_ROUTER
from ledger.webhooks import dispatcher
from ledger.webhooks import metrics as webhook_metrics
from ledger.webhooks.dispatcher import DispatchSettings
from ledger.webhooks.store import WEBHOOKS_CHANNEL

API_VERSION = "1.0.0"
WEBHOOK_GAUGES = webhook_metrics.outbox  # imported for its /metrics gauges
DEFAULT_DISPATCH = DispatchSettings()


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
    projector_process: ChildProjector | None = None,
    min_cursor_wait: float = 5.0,
    feed: FeedSettings | None = None,
    webhooks: DispatchSettings | None = DEFAULT_DISPATCH,
    rate_limit_per_second: float = 0.0,
    rate_limit_burst: int = 1,
) -> Litestar:
    """An app serving ``database_url``.

    Migrations run at startup unless told not to; the projector runs inside the
    server unless told not to (then run ``ledger project`` workers), or, given
    ``projector_process``, as that child process once migrations are done; the
    webhook dispatcher runs inside, unless ``webhooks`` is None. Requests are limited per
    API key when ``rate_limit_per_second`` is above 0.
    """

    @asynccontextmanager
    async def database(app: Litestar) -> AsyncIterator[None]:
        if migrate:
            await asyncio.to_thread(upgrade, database_url)
        # Requests use a pool confined to their tenant (role ledger_app, row-level
        # security); background work (the projector's LISTEN and passes, the feeds'
        # LISTEN, the webhook dispatcher, metrics and readiness) uses a worker pool
        # of its own, large enough that they never wait for each other.
        inline = run_projector and projector_process is None
        background = 3 + (2 if inline else 0) + (1 if webhooks is not None else 0)
        app.state.bindings = bindings = Bindings()
        app.state.tenant_pool = tenant_pool = await create_pool(
            database_url,
            size=pool_size,
            role=APP_ROLE,
            on_connect=bindings.on_connect,
            keep_session=True,
        )
        # Key lookups take connections as they come: the keyring (tenants,
        # api_keys) has no row-level security, so a connection's binding does
        # not matter, and binding it back and forth would cost a round trip.
        app.state.key_lookups = KeyLookups(
            lambda: TenantPool(tenant_pool, None, any_binding=True).acquire()
        )
        app.state.appends = GroupCommit(
            lambda tenant_id: TenantPool(tenant_pool, tenant_id, bindings).acquire()
        )
        app.state.pool = await create_pool(database_url, size=background, role=WORKER_ROLE)
        app.state.min_cursor_wait = min_cursor_wait
        app.state.feed_settings = feed or FeedSettings()
        app.state.rate_limiter = RateLimiter(rate_limit_per_second, rate_limit_burst)
        stop = asyncio.Event()
        worker = None
        if inline:
            worker = asyncio.create_task(projector.run(app.state.pool, stop=stop))
        elif run_projector and projector_process is not None:
            worker = asyncio.create_task(projector_process.run(stop))
        app.state.projector = worker
        app.state.projector_process = projector_process if run_projector else None
        try:
            async with listening(
                app.state.pool, [NOTIFY_CHANNEL, WEBHOOKS_CHANNEL, VIOLATIONS_CHANNEL]
            ) as wakeups:
                app.state.wakeups = wakeups
                deliveries = (
                    asyncio.create_task(
                        dispatcher.run(
                            app.state.pool, signal=wakeups.anything(), settings=webhooks, stop=stop
                        )
                    )
                    if webhooks is not None
                    else None
                )
                try:
                    yield
                finally:
                    stop.set()
                    await app.state.appends.close()
                    if deliveries is not None:
                        await deliveries
        finally:
            stop.set()
            if worker is not None:
                await worker
            await app.state.pool.close()
            await app.state.tenant_pool.close()

    app = Litestar(
        route_handlers=with_options(
            [
                *EVENT_ROUTES,
                *FEED_ROUTES,
                *NETWORK_ROUTES,
                *RULE_ROUTES,
                *WEBHOOK_ROUTES,
                *DIGEST_ROUTES,
                *AUDIT_ROUTES,
                *OPERATION_ROUTES,
                UI_ROUTER,
                health,
                openapi_document,
            ]
        ),
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
    return observe(app)
