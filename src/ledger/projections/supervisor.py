"""The server's projector as a child process, kept running by the server.

A fold is CPU work, and the API has one Python thread: run inside it, every
batch the projector folds is time no request is served (a batch of 1,000
events took 40 ms per request with the projector inside, 27 ms beside it).
In a process of its own the projector gets a core of its own, and a crash
there never takes the API down. It is the same ``ledger project`` worker an
operator can start by hand, so there is nothing new to coordinate: workers
already share tenants through PostgreSQL (see :mod:`ledger.projections.projector`).

The child is started in a session of its own, so a Ctrl-C meant for the server
does not reach it behind the server's back; the server stops it when it stops,
and the child stops by itself when the server dies without a word
(``ledger project --exit-with PID``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Final

_log = logging.getLogger("ledger.projector")

# A child that dies at once is restarted after 1 s, then 2, 4 ... up to a
# minute; one that ran for a minute starts the count again.
FIRST_DELAY_S: Final = 1.0
MAX_DELAY_S: Final = 60.0
STOP_TIMEOUT_S: Final = 10.0


class ChildProjector:
    """``command`` run as a child process until ``stop``, restarted when it exits."""

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str],
        *,
        first_delay: float = FIRST_DELAY_S,
        max_delay: float = MAX_DELAY_S,
    ) -> None:
        self.command = list(command)
        self.env = dict(env)
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.process: asyncio.subprocess.Process | None = None
        self.exits: list[int] = []

    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def describe(self) -> str:
        """For readiness: what the child is doing, and how it last ended."""
        if self.running():
            assert self.process is not None
            return f"running (process {self.process.pid})"
        if not self.exits:
            return "starting"
        return f"restarting: the projector process exited with code {self.exits[-1]}"

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self._supervise(stop)
        finally:  # cancelled: leave no child behind
            if self.running():
                assert self.process is not None
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()

    async def _supervise(self, stop: asyncio.Event) -> None:
        delay = self.first_delay
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            began = loop.time()
            self.process = await asyncio.create_subprocess_exec(
                *self.command, env=self.env, start_new_session=True
            )
            exited = asyncio.ensure_future(self.process.wait())
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                stopping.cancel()
                await self._stop(exited)
                return
            stopping.cancel()
            code = exited.result()
            self.exits.append(code)
            if loop.time() - began >= self.max_delay:
                delay = self.first_delay
            _log.warning(
                "projector process %d exited with code %d; restarting in %.0f s",
                self.process.pid,
                code,
                delay,
                extra={"exit_code": code},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, self.max_delay)

    async def _stop(self, exited: asyncio.Future[int]) -> None:
        """SIGTERM (the worker finishes its batch and leaves), then SIGKILL."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()
        try:
            await asyncio.wait_for(asyncio.shield(exited), STOP_TIMEOUT_S)
        except TimeoutError:
            _log.warning("projector process %d did not stop; killing it", self.process.pid)
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await exited
