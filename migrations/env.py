"""Alembic environment: plain SQL migrations run over an asyncpg connection.

The URL comes from ``ledger.store.migrate`` (``-x url=...``) or, when alembic is
run by hand, from the same resolution every ledger command uses.
"""

from __future__ import annotations

import asyncio

import asyncpg
from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from ledger.config import Settings
from ledger.store.database import resolve_url


def _url() -> str:
    given: str | None = context.config.attributes.get("url") or context.get_x_argument(
        as_dictionary=True
    ).get("url")
    if given:
        return given
    settings = Settings.from_env()
    return resolve_url(settings.database_url, settings.data_dir)


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _main(url: str) -> None:
    # asyncpg parses the URL itself (unix sockets included); SQLAlchemy only wraps it.
    engine = create_async_engine(
        "postgresql+asyncpg://", async_creator=lambda: asyncpg.connect(url), poolclass=NullPool
    )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
asyncio.run(_main(_url()))
