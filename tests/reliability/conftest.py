"""Helpers for the reliability suite: a real ``ledger serve`` process on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from ledger.store.database import Pool
from tests.test_cli import env_with, free_port

STARTUP_SECONDS = 60


class Server:
    """One ``ledger serve`` process; restartable on the same port, killable with SIGKILL."""

    def __init__(self, env: dict[str, str], port: int | None = None) -> None:
        self.env = env
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait_healthy()

    def wait_healthy(self, seconds: float = STARTUP_SECONDS) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.process is not None
            assert self.process.poll() is None, "ledger serve exited while starting"
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"ledger serve did not answer /health within {seconds} s")

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flushing, as a crash or the OOM killer would."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


@contextmanager
def serving(database_url: str, **settings: str) -> Iterator[Server]:
    """``ledger serve`` on ``database_url`` with extra ``LEDGER_*`` settings, stopped after."""
    server = Server(env_with(LEDGER_DATABASE_URL=database_url, **settings))
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def total_events(pool: Pool) -> int:
    """Every tenant's events: hostile input must not write anywhere."""
    async with pool.acquire() as conn:
        n: int = await conn.fetchval("SELECT count(*) FROM events")
    return n


def streaming_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    """(method, path) of the operations that answer a never-ending ``text/event-stream``.

    Request/response checks (isolation, fuzzing) would wait on them forever; change
    feeds are checked by their own tests, reading a bounded number of events.
    """
    return {
        (method, path)
        for path, item in document.get("paths", {}).items()
        for method, operation in item.items()
        if isinstance(operation, dict)
        and any(
            "text/event-stream" in (response.get("content") or {})
            for response in operation.get("responses", {}).values()
        )
    }
