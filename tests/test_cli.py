"""The `ledger` command line, run as a user would: as a separate process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.samples import event

LEDGER = [sys.executable, "-m", "ledger.cli"]


def run(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LEDGER, *args], env=env, capture_output=True, text=True, timeout=60, check=check
    )


def env_with(**values: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update({k: v for k, v in values.items() if v is not None})
    return env


def readable_log(base: str, headers: dict[str, str], count: int) -> Any:
    """The log once it shows ``count`` events (the commit horizon may hold a fresh
    append back while other transactions on the server are open)."""
    for _ in range(1500):
        listed = httpx.get(f"{base}/v1/events", headers=headers).json()
        if len(listed["items"]) >= count:
            return listed
        time.sleep(0.02)
    raise AssertionError("the appended events never became readable")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serving(env: dict[str, str], *args: str, log: Path | None = None) -> Iterator[str]:
    """``ledger serve`` on a free port until the block ends; its output goes to
    ``log`` (a file, so that a chatty server never blocks on a full pipe)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ledger-serve-") as folder:
        output = log or Path(folder) / "serve.log"
        with output.open("w") as sink:
            process = subprocess.Popen(
                [*LEDGER, "serve", "--port", str(port), *args],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                text=True,
            )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                assert process.poll() is None, output.read_text()
                try:
                    if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            else:
                pytest.fail("the server did not answer /health within 60 s")
            yield base
        finally:
            process.terminate()
            process.wait(timeout=30)


def test_keys_create_list_revoke(database_url: str) -> None:
    env = env_with(LEDGER_DATABASE_URL=database_url)
    created = run(env, "keys", "create", "--tenant", "cli-co", "--scope", "events:read")
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("ldg_")
    key_id = key.split("_")[1]
    listing = run(env, "keys", "list", "--tenant", "cli-co").stdout
    assert key_id in listing
    assert "active" in listing
    assert "events:read" in listing
    assert key not in listing, "a listing must never show a key"
    run(env, "keys", "revoke", key_id)
    assert "revoked" in run(env, "keys", "list", "--tenant", "cli-co").stdout
    unknown = run(env, "keys", "revoke", "nope", check=False)
    assert unknown.returncode == 1
    assert "no key with id" in unknown.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["keys", "create", "--tenant", "bad name"], "tenant name"),
        (["keys", "create", "--tenant", "x", "--scope", "root"], "invalid choice"),
        (["keys", "create"], "--tenant"),
    ],
)
def test_bad_arguments_say_what_to_do(database_url: str, args: list[str], message: str) -> None:
    result = run(env_with(LEDGER_DATABASE_URL=database_url), *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.parametrize("command", [[], ["serve"], ["migrate"], ["keys"], ["keys", "create"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = run(env_with(), *command, "--help")
    assert result.returncode == 0
    assert "usage: ledger" in result.stdout


def test_serve_on_a_database_url_appends_and_reads(database_url: str) -> None:
    env = env_with(LEDGER_DATABASE_URL=database_url)
    key = run(env, "keys", "create", "--tenant", "served").stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {key}"}
    with serving(env) as base:
        one = event("message.sent", {"from": "a", "to": "b", "kind": "reply"})
        posted = httpx.post(f"{base}/v1/events", json={"events": [one]}, headers=headers)
        assert posted.status_code == 201, posted.text
        listed = readable_log(base, headers, 1)
        assert [item["id"] for item in listed["items"]] == [one["id"]]


def test_embedded_default_keeps_its_data_and_is_shared_with_the_cli(tmp_path: Path) -> None:
    """With no database URL: an embedded PostgreSQL under LEDGER_DATA_DIR, shared by
    `serve` and `keys create`, and still holding the events after a restart."""
    env = env_with(LEDGER_DATA_DIR=str(tmp_path / "data"))
    one = event("message.sent", {"from": "a", "to": "b", "kind": "reply"})
    with serving(env) as base:
        key = run(env, "keys", "create", "--tenant", "local").stdout.strip().splitlines()[-1]
        headers = {"Authorization": f"Bearer {key}"}
        posted = httpx.post(f"{base}/v1/events", json={"events": [one]}, headers=headers)
        assert posted.status_code == 201, posted.text
    assert (tmp_path / "data" / "pgdata" / "PG_VERSION").exists()
    with serving(env) as base:
        listed = readable_log(base, headers, 1)
        assert [item["id"] for item in listed["items"]] == [one["id"]]
