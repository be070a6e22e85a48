"""Apply the alembic migrations in ``migrations/`` to a database."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config

REPO_ROOT: Final = Path(__file__).resolve().parents[3]
MIGRATIONS: Final = REPO_ROOT / "migrations"


def alembic_config(url: str) -> Config:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = url  # read by migrations/env.py
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate to ``revision``; safe to call from inside a running event loop.

    env.py drives asyncpg with ``asyncio.run``, which cannot nest, so the work
    runs on a thread of its own.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(command.upgrade, alembic_config(url), revision).result()


def execute_script(sql: str) -> None:
    """Run a multi-statement SQL script inside the current migration's transaction.

    Migrations are plain SQL. SQLAlchemy's asyncpg adapter prepares every
    statement, which PostgreSQL refuses for scripts, so the script goes to the
    driver connection directly (simple query protocol), on the same transaction.
    """
    from alembic import op
    from sqlalchemy.util import await_

    driver = op.get_bind().connection.driver_connection
    assert driver is not None
    await_(driver.execute(sql))
