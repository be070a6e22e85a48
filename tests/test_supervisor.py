"""The server's projector as a child process: restarted when it exits, stopped
with the server, gone when the server is killed, and visible in /ready."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from litestar.testing import AsyncTestClient

from ledger.api.app import create_app
from ledger.projections import supervisor
from ledger.projections.supervisor import ChildProjector
from tests.samples import event
from tests.test_cli import LEDGER, env_with, free_port, run, serving

PYTHON = sys.executable


def python(code: str) -> list[str]:
    return [PYTHON, "-c", code]


async def until(condition: object, seconds: float = 10.0) -> None:
    """Wait, bounded, until ``condition()`` holds."""
    assert callable(condition)
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.02)


async def test_a_child_that_exits_is_restarted_after_growing_delays() -> None:
    child = ChildProjector(python("raise SystemExit(3)"), os.environ, first_delay=0.05, max_delay=5)
    stop = asyncio.Event()
    task = asyncio.create_task(child.run(stop))
    began = time.monotonic()
    await until(lambda: len(child.exits) >= 4)
    waited = time.monotonic() - began
    stop.set()
    await asyncio.wait_for(task, 5)
    assert set(child.exits) == {3}
    # Three pauses of 0.05, 0.1 and 0.2 s came between the first four exits.
    assert waited >= 0.35
    assert child.describe() == "restarting: the projector process exited with code 3"
    assert not child.running()


async def test_stopping_terminates_a_running_child_and_is_not_an_exit() -> None:
    child = ChildProjector(python("import time; time.sleep(60)"), os.environ)
    stop = asyncio.Event()
    task = asyncio.create_task(child.run(stop))
    await until(child.running)
    assert child.describe().startswith("running (process ")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert child.process is not None
    assert child.process.returncode == -signal.SIGTERM
    assert child.exits == []


async def test_a_child_that_ignores_sigterm_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor, "STOP_TIMEOUT_S", 0.3)
    armed = tmp_path / "armed"
    code = (
        "import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"pathlib.Path({str(armed)!r}).touch(); time.sleep(60)"
    )
    child = ChildProjector(python(code), os.environ)
    stop = asyncio.Event()
    task = asyncio.create_task(child.run(stop))
    await until(armed.exists)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert child.process is not None
    assert child.process.returncode == -signal.SIGKILL


async def test_cancelling_the_supervisor_leaves_no_child() -> None:
    child = ChildProjector(python("import time; time.sleep(60)"), os.environ)
    task = asyncio.create_task(child.run(asyncio.Event()))
    await until(child.running)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert child.process is not None
    await asyncio.wait_for(child.process.wait(), 5)
    assert child.process.returncode == -signal.SIGKILL


async def test_not_ready_while_the_projector_process_is_down(database_url: str) -> None:
    child = ChildProjector(python("raise SystemExit(3)"), os.environ, first_delay=60)
    app = create_app(database_url, migrate=False, pool_size=2, projector_process=child)
    async with AsyncTestClient(app=app) as client:
        await until(lambda: bool(child.exits))
        answer = await client.get("/ready")
    assert answer.status_code == 503
    assert answer.json()["checks"]["projector"] == {
        "ok": False,
        "detail": "restarting: the projector process exited with code 3",
    }


def projector_detail(base: str) -> str:
    detail: str = httpx.get(f"{base}/ready").json()["checks"]["projector"]["detail"]
    return detail


def projected(base: str, headers: dict[str, str]) -> None:
    """An append, then a projection read that waits for it (503 if never projected)."""
    one = event("message.sent", {"from": "ana", "to": "ben", "kind": "reply"})
    posted = httpx.post(f"{base}/v1/events", json={"events": [one]}, headers=headers)
    assert posted.status_code == 201, posted.text
    waiting = {**headers, "Ledger-Min-Cursor": posted.json()["cursor"]}
    for _ in range(6):  # each read waits up to 5 s; a child may still be starting
        read = httpx.get(f"{base}/v1/people/ana", headers=waiting, timeout=30)
        if read.status_code != 503:
            break
    assert read.status_code == 200, read.text
    assert read.json()["relationships"] == 1, read.text


@pytest.mark.parametrize(
    ("flags", "where"), [((), "running (process "), (("--inline-projector",), "running")]
)
def test_serve_projects_in_a_child_process_or_inline(
    database_url: str, flags: tuple[str, ...], where: str
) -> None:
    env = env_with(LEDGER_DATABASE_URL=database_url)
    key = run(env, "keys", "create", "--tenant", f"placed{len(flags)}").stdout.split()[-1]
    with serving(env, *flags) as base:
        detail = projector_detail(base)
        assert detail.startswith(where)
        assert ("process" in detail) == (not flags)
        projected(base, {"Authorization": f"Bearer {key}"})


def test_a_killed_server_leaves_no_projector_behind(database_url: str) -> None:
    env = env_with(LEDGER_DATABASE_URL=database_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as sink:
        server = subprocess.Popen(
            [*LEDGER, "serve", "--port", str(port)], env=env, stdout=sink, stderr=sink
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                assert server.poll() is None and time.monotonic() < deadline
                try:
                    detail = projector_detail(base)
                    if detail.startswith("running (process "):
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            child = int(detail.removeprefix("running (process ").rstrip(")"))
            assert alive(child)
            server.kill()
            server.wait(10)
            deadline = time.monotonic() + 10
            while alive(child):
                assert time.monotonic() < deadline, "the projector outlived its server"
                time.sleep(0.05)
        finally:
            server.kill()
            server.wait(10)


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a parent (PID 1 here may not reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")
