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
    # env.py reads the URL from -x, as with `alembic -x url=... upgrade head`.
    config.cmd_opts = _XArgs([f"url={url}"])  # type: ignore[assignment]
    return config


class _XArgs:
    def __init__(self, x: list[str]) -> None:
        self.x = x


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate to ``revision``; safe to call from inside a running event loop.

    env.py drives asyncpg with ``asyncio.run``, which cannot nest, so the work
    runs on a thread of its own.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(command.upgrade, alembic_config(url), revision).result()


def heads() -> list[str]:
    from alembic.script import ScriptDirectory

    return list(ScriptDirectory.from_config(alembic_config("")).get_heads())


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
