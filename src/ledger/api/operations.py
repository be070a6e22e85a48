"""``/metrics`` and ``/ready``: what operators scrape and probe.

``/metrics`` needs no key, like most Prometheus endpoints: serve it on an
internal network. It carries no tenant labels (see :mod:`ledger.observe.metrics`),
so a scrape reveals how the ledger runs, never whose data it holds.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Final, Literal

import asyncpg
import msgspec
from alembic.script import ScriptDirectory
from litestar import Litestar, Request, Response, get

from ledger.api.state import pool_of
from ledger.observe.metrics import CONTENT_TYPE, Metrics
from ledger.observe.requests import RequestObserver
from ledger.projections.supervisor import ChildProjector
from ledger.store.migrate import alembic_config

READY_TIMEOUT_SECONDS: Final = 2.0
_APPLIED: Final = "SELECT version_num FROM alembic_version"


class Check(msgspec.Struct, frozen=True):
    ok: bool
    detail: str


class Readiness(msgspec.Struct, frozen=True):
    status: Literal["ready", "not ready"]
    checks: dict[str, Check]


def observe(app: Litestar) -> Litestar:
    """Give ``app`` request ids, request logs and metrics, around every request."""
    app.state.metrics = Metrics()
    app.asgi_handler = RequestObserver(app.asgi_handler, app.state.metrics)
    return app


@functools.cache
def head_revisions() -> frozenset[str]:
    """The migrations this code expects the database to be at."""
    return frozenset(ScriptDirectory.from_config(alembic_config("")).get_heads())


@get("/metrics", include_in_schema=False, media_type=CONTENT_TYPE)
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    registry: Metrics = request.app.state.metrics
    # Lags and backlogs are across tenants: the worker pool (row-level security
    # would show a request's pool no tenant at all).
    return Response(await registry.render(request.app.state.pool), media_type=CONTENT_TYPE)


@get(
    "/ready",
    summary="Readiness: the database answers, its schema is at head, the projector runs",
    description=(
        "200 when this process can serve correctly, else 503 with the failing check. "
        "`projector` is `external` when the server runs with `--no-projector`, and fails "
        "while the server restarts its projector process after it exited."
    ),
    responses={},
)
async def ready(request: Request[Any, Any, Any]) -> Response[Readiness]:
    checks = {
        "database": Check(ok=False, detail="unreachable"),
        "migrations": Check(ok=False, detail="unknown: the database is unreachable"),
        "projector": _projector_check(
            request.app.state.get("projector"), request.app.state.get("projector_process")
        ),
    }
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS), pool_of(request).acquire() as conn:
            checks["database"] = Check(ok=True, detail="ok")
            checks["migrations"] = await _migrations_check(conn)
    except Exception as exc:  # a probe reports any failure; it never answers 500
        checks["database"] = Check(ok=False, detail=f"unreachable: {type(exc).__name__}: {exc}")
    ok = all(check.ok for check in checks.values())
    return Response(
        Readiness(status="ready" if ok else "not ready", checks=checks),
        status_code=200 if ok else 503,
        headers={} if ok else {"Retry-After": "5"},
    )


async def _migrations_check(conn: Any) -> Check:
    try:
        applied = frozenset(row["version_num"] for row in await conn.fetch(_APPLIED))
    except asyncpg.UndefinedTableError:
        return Check(ok=False, detail="no migrations applied; run `ledger migrate`")
    heads = head_revisions()
    if applied != heads:
        return Check(
            ok=False,
            detail=f"database at {', '.join(sorted(applied)) or 'nothing'}, code expects "
            f"{', '.join(sorted(heads))}; run `ledger migrate`",
        )
    return Check(ok=True, detail=f"at head {', '.join(sorted(heads))}")


def _projector_check(task: asyncio.Task[None] | None, child: ChildProjector | None) -> Check:
    if task is None:
        return Check(ok=True, detail="external: run `ledger project` workers")
    if task.done():
        return Check(ok=False, detail="stopped: this server's projector is not running")
    if child is not None:
        # Not ready only between an exit and its restart, not while first starting.
        return Check(ok=child.running() or not child.exits, detail=child.describe())
    return Check(ok=True, detail="running")


ROUTES: Final = [metrics, ready]
