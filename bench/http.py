"""A lean HTTP/1.1 client for load: one keep-alive connection per worker.

The bench process shares the machine's cores with the server and PostgreSQL.
A general client (httpx) spent about 1.5 ms of CPU per request here, as much
as the server it was measuring, so it throttled the figure it was meant to
produce. This one sends prepared bytes and reads only the status line, the
``content-length`` and the body: tens of microseconds a request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Final

_HEAD_END: Final = b"\r\n\r\n"
_LENGTH: Final = b"content-length:"
READ_LIMIT: Final = 1 << 24


class HttpError(RuntimeError):
    """The server answered in a way this client does not read (chunked, closed)."""


class Connection:
    """A keep-alive connection that GETs, or POSTs JSON, with one API key."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, key: str
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.prefix = f"Host: {host}\r\nAuthorization: Bearer {key}\r\n".encode()

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """(status, body) of ``POST path`` with a JSON ``body``."""
        self.writer.write(
            b"POST %s HTTP/1.1\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (path.encode(), self.prefix, len(body), body)
        )
        return await self._answer()

    async def get(self, path: str) -> tuple[int, bytes]:
        """(status, body) of ``GET path``."""
        self.writer.write(b"GET %s HTTP/1.1\r\n%s\r\n" % (path.encode(), self.prefix))
        return await self._answer()

    async def _answer(self) -> tuple[int, bytes]:
        head = await self.reader.readuntil(_HEAD_END)
        status = int(head[9:12])
        length = None
        for line in head.split(b"\r\n")[1:]:
            if line[: len(_LENGTH)].lower() == _LENGTH:
                length = int(line[len(_LENGTH) :])
                break
        if length is None:
            raise HttpError(f"answer without content-length (status {status}): {head!r}")
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@asynccontextmanager
async def connection(host: str, port: int, key: str) -> AsyncIterator[Connection]:
    reader, writer = await asyncio.open_connection(host, port, limit=READ_LIMIT)
    conn = Connection(reader, writer, f"{host}:{port}", key)
    try:
        yield conn
    finally:
        await conn.close()


Connect = Callable[[], AbstractAsyncContextManager[Connection]]
