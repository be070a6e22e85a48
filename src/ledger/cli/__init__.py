"""The ``ledger`` command line: serve, migrate, keys, projections, verify, export, import,
verify-digest.

Every command finds its database the same way as ``serve`` (see
:mod:`ledger.store.database`), so ``ledger keys create`` works on the same data
whether or not the server is running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, TypeVar

from ledger.cli import audit
from ledger.cli import verify as verify_commands
from ledger.cli.progress import Progress
from ledger.config import Settings
from ledger.errors import LedgerError, NotFound
from ledger.observe.logs import LOG_CONFIG
from ledger.projections import projector
from ledger.projections.projector import PROJECTION
from ledger.projections.registry import PROJECTIONS
from ledger.store.database import WORKER_ROLE, Connection, connect, create_pool, resolve_url
from ledger.store.migrate import upgrade
from ledger.tenants.keys import SCOPES, create_key, list_keys, revoke_key

T = TypeVar("T")
# How often a server's projector checks that the server is still there.
ORPHAN_CHECK_S: Final = 0.5

_DATABASE_HELP = (
    "Database: LEDGER_DATABASE_URL if set, else an embedded PostgreSQL with its data in "
    "LEDGER_DATA_DIR (default ./.ledger)."
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    settings = Settings.from_env()
    try:
        code: int = args.run(args, settings)
    except LedgerError as exc:
        print(f"ledger: {exc.detail}", file=sys.stderr)
        return 1
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ledger",
        description="An event-sourced networking ledger. " + _DATABASE_HELP,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the HTTP API (applies migrations first)",
        description="Run the HTTP API. Applies migrations on start. " + _DATABASE_HELP,
    )
    serve.add_argument("--host", help="interface to listen on (default: LEDGER_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: LEDGER_PORT or 8000)")
    placement = serve.add_mutually_exclusive_group()
    placement.add_argument(
        "--no-projector",
        action="store_true",
        help="run no projector (run `ledger project` workers instead); by default the server "
        "keeps one running as a child process",
    )
    placement.add_argument(
        "--inline-projector",
        action="store_true",
        help="run the projector inside the API process: one process, but folding events then "
        "takes turns with serving requests",
    )
    serve.add_argument(
        "--no-webhooks",
        action="store_true",
        help="do not deliver webhooks from this process (also LEDGER_WEBHOOK_DISPATCHER=0)",
    )
    serve.set_defaults(run=_serve)

    project = commands.add_parser(
        "project",
        help="run a projector worker (any number can run beside each other and the API)",
        description=(
            "Keep every tenant's projections caught up with its log until interrupted. "
            "Workers coordinate through PostgreSQL: each tenant is processed by one worker at "
            "a time, and a stopped worker's tenants are taken over. " + _DATABASE_HELP
        ),
    )
    project.add_argument(
        "--poll", type=float, default=1.0, help="seconds between polls besides notifications"
    )
    project.add_argument(
        "--gather",
        type=float,
        default=projector.GATHER_S,
        metavar="SECONDS",
        help="under a steady stream of appends, start passes at least this far apart, so each "
        "folds a batch instead of a handful of events (default %(default)s; 0 chases every "
        "append)",
    )
    project.add_argument(
        "--exit-with",
        type=int,
        metavar="PID",
        help="stop when PID, this worker's parent, is gone (how `ledger serve` runs its projector)",
    )
    project.set_defaults(run=_project)

    projections = commands.add_parser(
        "projections",
        help="projection status and rebuilds",
        description="Inspect and rebuild projections.",
    )
    projection_commands = projections.add_subparsers(title="projection commands", metavar="COMMAND")
    projections.set_defaults(run=lambda args, settings: _usage(projections))
    show = projection_commands.add_parser(
        "status",
        help="each tenant's checkpoint, lag (events and seconds) and worker",
        description="Show where each tenant's projections stand against its log.",
    )
    show.add_argument("--tenant", help="only this tenant")
    show.set_defaults(run=_projections_status)
    rebuild = projection_commands.add_parser(
        "rebuild",
        help="re-derive projections from the log without downtime",
        description=(
            "Re-derive a projection from position 0 into fresh rows while the API keeps "
            "serving the old ones, catch up with the live log, then switch atomically. "
            "Shows a progress bar with events/s and ETA."
        ),
    )
    rebuild.add_argument(
        "name",
        nargs="?",
        default=PROJECTION,
        choices=sorted(PROJECTIONS),
        help=f"the projection (default {PROJECTION}: balances, relationships, timelines; "
        "violations: the etiquette rules' findings)",
    )
    rebuild.add_argument("--tenant", help="only this tenant (default: every tenant)")
    rebuild.set_defaults(run=_projections_rebuild)

    migrate = commands.add_parser(
        "migrate",
        help="apply database migrations",
        description="Bring the database schema to the latest migration. " + _DATABASE_HELP,
    )
    migrate.add_argument("--revision", default="head", help="target revision (default: head)")
    migrate.set_defaults(run=_migrate)

    keys = commands.add_parser(
        "keys", help="create, list and revoke API keys", description="Manage API keys."
    )
    key_commands = keys.add_subparsers(title="key commands", metavar="KEY_COMMAND")
    keys.set_defaults(run=lambda args, settings: _usage(keys))

    create = key_commands.add_parser(
        "create",
        help="create a key (and its tenant if new); prints the key alone on the last line",
        description=(
            "Create an API key for a tenant, creating the tenant if needed. The key is shown "
            "once, alone on the last line of output; only its hash is stored."
        ),
    )
    create.add_argument("--tenant", required=True, help="tenant name, e.g. acme")
    create.add_argument(
        "--scope",
        action="append",
        default=[],
        choices=SCOPES,
        help="a scope to grant; repeat for several (default: all scopes)",
    )
    create.set_defaults(run=_keys_create)

    listing = key_commands.add_parser(
        "list", help="list keys (ids, scopes, state)", description="List API keys; never the keys."
    )
    listing.add_argument("--tenant", help="only this tenant's keys")
    listing.set_defaults(run=_keys_list)

    revoke = key_commands.add_parser(
        "revoke",
        help="revoke a key by its id",
        description="Revoke a key: requests with it answer 401 from now on.",
    )
    revoke.add_argument("key_id", help="the key id shown by `ledger keys list`")
    revoke.set_defaults(run=_keys_revoke)
    audit.register(commands)
    verify_commands.add_parsers(commands, _with_connection)
    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _url(settings: Settings) -> str:
    return resolve_url(settings.database_url, settings.data_dir)


def _with_connection(settings: Settings, work: Callable[[Connection], Awaitable[T]]) -> T:
    return _with_connections(settings, 1, work)


def _with_connections(settings: Settings, count: int, work: Callable[..., Awaitable[T]]) -> T:
    """``work(*connections)`` on ``count`` connections to the migrated database."""
    url = _url(settings)
    upgrade(url)

    async def run() -> T:
        async with contextlib.AsyncExitStack() as opened:
            conns = []
            for _ in range(count):
                conn = await connect(url)
                opened.push_async_callback(conn.close)
                conns.append(conn)
            return await work(*conns)

    return asyncio.run(run())


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from ledger.api.app import create_app
    from ledger.api.feeds import FeedSettings
    from ledger.projections.supervisor import ChildProjector
    from ledger.webhooks.dispatcher import dispatch_settings

    host = args.host or settings.host
    port = args.port or settings.port
    embedded = f"embedded, data in {settings.data_dir}"
    where = "LEDGER_DATABASE_URL" if settings.database_url else embedded
    url = _url(settings)
    print(f"ledger: database: {where}", file=sys.stderr)
    print(f"ledger: serving http://{host}:{port}  (health: /health, API: /v1)", file=sys.stderr)
    child = (
        None
        if args.no_projector or args.inline_projector
        else ChildProjector(
            [sys.executable, "-m", "ledger.cli", "project", "--exit-with", str(os.getpid())],
            {**os.environ, "LEDGER_DATABASE_URL": url},
        )
    )
    app = create_app(
        url,
        pool_size=settings.pool_size,
        max_body_bytes=settings.max_body_bytes,
        run_projector=not args.no_projector,
        projector_process=child,
        min_cursor_wait=settings.min_cursor_wait,
        feed=FeedSettings(heartbeat=settings.feed_heartbeat, poll=settings.feed_poll),
        webhooks=None if args.no_webhooks else dispatch_settings(settings),
        rate_limit_per_second=settings.rate_limit_per_second,
        rate_limit_burst=settings.rate_limit_burst,
    )
    _settle_heap()
    # Feeds stream until their clients leave: bound how long a stop waits for them.
    uvicorn.run(
        app,
        host=host,
        port=port,
        access_log=False,
        log_config=LOG_CONFIG,
        timeout_graceful_shutdown=5,
    )
    return 0


# Young objects collected every 10,000 net allocations instead of 700: a batch
# of 1,000 events allocates tens of thousands of short-lived objects.
_YOUNG_THRESHOLD = 10_000


def _settle_heap() -> None:
    """Keep the cycle collector off what a long-running process built to start.

    The modules, the app and its routes (about 120,000 objects) live as long as
    the process, yet every full collection walked them again: about 75 ms each,
    several a second under load, a quarter of the server's CPU during batch
    appends. Frozen, they are out of the collector's sight; it still collects
    everything made afterwards.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(_YOUNG_THRESHOLD, middle, old)


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    upgrade(_url(settings), args.revision)
    print(f"ledger: database migrated to {args.revision}")
    return 0


def _keys_create(args: argparse.Namespace, settings: Settings) -> int:
    key_id, key = _with_connection(settings, lambda conn: create_key(conn, args.tenant, args.scope))
    scopes = ", ".join(sorted(set(args.scope)) or SCOPES)
    print(f"created key {key_id} for tenant {args.tenant} with scopes: {scopes}")
    print("store it now; it is not shown again:")
    print(key)
    return 0


def _keys_list(args: argparse.Namespace, settings: Settings) -> int:
    keys = _with_connection(settings, lambda conn: list_keys(conn, args.tenant))
    if not keys:
        print("no keys; create one with `ledger keys create --tenant NAME`")
        return 0
    print(f"{'KEY ID':<14} {'TENANT':<20} {'STATE':<8} {'CREATED':<20} SCOPES")
    for key in keys:
        state = "revoked" if key.revoked_at else "active"
        created = key.created_at.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{key.key_id:<14} {key.tenant:<20} {state:<8} {created:<20} {' '.join(key.scopes)}")
    return 0


def _keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    _with_connection(settings, lambda conn: revoke_key(conn, args.key_id))
    print(f"revoked key {args.key_id}")
    return 0


def _project(args: argparse.Namespace, settings: Settings) -> int:
    url = _url(settings)
    upgrade(url)

    async def work() -> None:
        pool = await create_pool(url, size=4, role=WORKER_ROLE)
        _settle_heap()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        orphaned = (
            asyncio.create_task(_stop_when_orphaned(args.exit_with, stop))
            if args.exit_with
            else None
        )
        print(
            f"ledger: projector {projector.worker_name()} running; Ctrl-C stops it", file=sys.stderr
        )
        try:
            await projector.run(pool, poll_interval=args.poll, stop=stop, gather=args.gather)
        finally:
            if orphaned is not None:
                orphaned.cancel()
            await pool.close()

    asyncio.run(work())
    return 0


async def _stop_when_orphaned(parent: int, stop: asyncio.Event) -> None:
    """A server killed outright (SIGKILL, OOM) cannot stop its projector: the
    projector notices it has been handed to another parent, and stops."""
    while not stop.is_set():
        if os.getppid() != parent:
            print(f"ledger: process {parent} is gone; projector stopping", file=sys.stderr)
            stop.set()
            return
        await asyncio.sleep(ORPHAN_CHECK_S)


def _projections_status(args: argparse.Namespace, settings: Settings) -> int:
    async def every(conn: Connection) -> list[projector.Status]:
        rows = []
        for name in PROJECTIONS:
            rows.extend(await projector.status(conn, args.tenant, name))
        return sorted(rows, key=lambda row: (row.tenant, row.projection))

    rows = _with_connection(settings, every)
    if not rows:
        print("no tenants yet")
        return 0
    print(
        f"{'TENANT':<20} {'PROJECTION':<10} {'GEN':>4} {'APPLIED':>10} {'LAG':>8} "
        f"{'LAG S':>8}  WORKER"
    )
    for row in rows:
        lag_s = "-" if row.lag_seconds is None else f"{row.lag_seconds:.1f}"
        print(
            f"{row.tenant:<20} {row.projection:<10} {row.generation:>4} "
            f"{row.events_applied:>10,} {row.lag_events:>8,} {lag_s:>8}  {row.worker or '-'}"
        )
    return 0


def _projections_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    # A second connection reads the log while the first writes (see projector.Refold).
    async def work(conn: Connection, reader: Connection) -> list[tuple[str, int, float]]:
        tenants = await conn.fetch(
            "SELECT tenant_id, name FROM tenants WHERE $1::text IS NULL OR name = $1 ORDER BY name",
            args.tenant,
        )
        if not tenants:
            raise NotFound(f"no tenant named {args.tenant!r}; `ledger keys list` shows them")
        done = []
        for tenant in tenants:
            bar = Progress(f"{tenant['name']}")
            folded = await projector.rebuild(
                conn,
                tenant["tenant_id"],
                progress=bar,
                projection=PROJECTIONS[args.name],
                reader=reader,
            )
            done.append((tenant["name"], folded, bar.finish()))
        return done

    for name, folded, seconds in _with_connections(settings, 2, work):
        rate = folded / seconds if seconds > 0 else 0.0
        print(
            f"rebuilt {args.name} for {name}: {folded:,} events in {seconds:.1f} s "
            f"({rate:,.0f} ev/s)"
        )
    return 0
