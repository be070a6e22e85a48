"""A loopback HTTP/1.1 proxy that can lose answers on the way back.

It forwards each request to the server, waits for the whole answer, and then,
for the first ``drop`` requests, closes the client's connection instead of
passing the answer on: the server did the work, the client never heard. That is
the case idempotent retries exist for.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


def read_message(sock: socket.socket) -> bytes | None:
    """One HTTP/1.1 message with a Content-Length body (all the ledger sends)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head + b"\r\n\r\n" + body


class DroppingProxy:
    def __init__(self, upstream: str, *, drop: int = 0) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self.upstream = (host, int(port))
        self.drops_left = drop
        self.requests = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> DroppingProxy:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        with client, contextlib.suppress(OSError):
            client.settimeout(30)
            while (request := read_message(client)) is not None:
                with self._lock:
                    self.requests += 1
                    dropping = self.drops_left > 0
                    self.drops_left -= dropping
                with socket.create_connection(self.upstream, timeout=30) as server:
                    server.sendall(request)
                    answer = read_message(server)
                if answer is None or dropping:
                    with self._lock:
                        self.dropped += dropping
                    return
                client.sendall(answer)
