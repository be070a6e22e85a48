"""``python -m bench.floor --port N``: the thinnest HTTP service the stack allows.

The floor under the HTTP append figures. The same server (uvicorn with uvloop
and httptools, no access log, one process) and the same framework (Litestar)
as ``ledger serve``, with one ``POST /v1/events`` that reads the body and
answers 201 with a fixed JSON: no authentication, no decoding, no database.
Nothing that answers over this stack can be faster on the same machine, so
``append_floor_c64_ratio`` (this against raw INSERTs at 64 clients, in the
same rounds) is the most any ``append_http_c64_ratio`` can reach here, and
less than that, since the ledger must also leave CPU for PostgreSQL.
"""

from __future__ import annotations

import argparse
import gc
from collections.abc import Sequence
from typing import Any, Final

import uvicorn
from litestar import Litestar, Request, Response, get, post

ANSWER: Final = b'{"events":[{"position":1}]}'


@post("/v1/events", status_code=201)
async def append(request: Request[Any, Any, Any]) -> Response[bytes]:
    await request.body()
    return Response(ANSWER, status_code=201, media_type="application/json")


@get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


def create_app() -> Litestar:
    return Litestar([append, health], openapi_config=None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = create_app()
    # As `ledger serve` settles its heap (ledger.cli._settle_heap).
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
