"""Configuration from environment variables, resolved once per process.

Every command (``serve``, ``migrate``, ``keys``) reads the same settings so that
they all reach the same database, embedded or not.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str | None
    data_dir: Path
    host: str
    port: int
    pool_size: int
    max_body_bytes: int
    min_cursor_wait: float
    feed_heartbeat: float
    feed_poll: float
    webhook_dispatcher: bool
    webhook_retry_base: float
    webhook_retry_cap: float
    webhook_max_attempts: int
    webhook_timeout: float
    webhook_poll: float
    rate_limit_per_second: float
    rate_limit_burst: int

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ) if env is None else env
        return cls(
            database_url=env.get("LEDGER_DATABASE_URL") or None,
            data_dir=Path(env.get("LEDGER_DATA_DIR", "./.ledger")).resolve(),
            host=env.get("LEDGER_HOST", "127.0.0.1"),
            port=_int(env, "LEDGER_PORT", 8000),
            pool_size=_int(env, "LEDGER_DB_POOL_SIZE", 16),
            max_body_bytes=_int(env, "LEDGER_MAX_BODY_BYTES", 16 * 1024 * 1024),
            min_cursor_wait=_float(env, "LEDGER_MIN_CURSOR_WAIT", 5.0),
            feed_heartbeat=_float(env, "LEDGER_FEED_HEARTBEAT", 15.0),
            feed_poll=_float(env, "LEDGER_FEED_POLL", 1.0),
            webhook_dispatcher=env.get("LEDGER_WEBHOOK_DISPATCHER", "1").lower()
            not in ("0", "false", "no", "off"),
            webhook_retry_base=_float(env, "LEDGER_WEBHOOK_RETRY_BASE", 5.0),
            webhook_retry_cap=_float(env, "LEDGER_WEBHOOK_RETRY_CAP", 6 * 3600.0),
            webhook_max_attempts=_int(env, "LEDGER_WEBHOOK_MAX_ATTEMPTS", 12),
            webhook_timeout=_float(env, "LEDGER_WEBHOOK_TIMEOUT", 10.0),
            webhook_poll=_float(env, "LEDGER_WEBHOOK_POLL", 1.0),
            rate_limit_per_second=_float(
                env, "LEDGER_RATE_LIMIT_PER_SECOND", 1000.0, what="a number of requests"
            ),
            rate_limit_burst=_int(env, "LEDGER_RATE_LIMIT_BURST", 2000),
        )


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, got {raw!r}") from None


def _float(
    env: dict[str, str], name: str, default: float, *, what: str = "a number of seconds"
) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be {what}, got {raw!r}") from None
    if value < 0:
        raise SystemExit(f"{name} must not be negative, got {raw!r}")
    return value
