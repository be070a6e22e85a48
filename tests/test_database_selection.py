"""How the fixtures find a database: the Docker check must fail fast here."""

from __future__ import annotations

import socket

import asyncpg
import pytest

from ledger.store.database import embedded_url
from tests.conftest import docker_answers


def test_docker_check_says_no_when_nothing_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert docker_answers() is False
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    assert docker_answers() is False


def test_docker_check_does_not_hang_on_a_silent_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    """Something accepts the connection and never answers: the ping must give up."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{silent.getsockname()[1]}")
        assert docker_answers(timeout=0.2) is False


async def test_embedded_postgres_starts_and_answers(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    url = embedded_url(tmp_path_factory.mktemp("embedded"))
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT 1 + 1") == 2
    finally:
        await conn.close()
