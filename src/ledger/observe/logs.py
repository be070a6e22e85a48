"""Structured JSON logs, one object a line, each tagged with its request id.

API keys must never reach a log: the ledger's own code logs no headers, and
as a second line of defence every formatted line is scrubbed of anything
shaped like a key (``ldg_<id>_<secret>``), wherever it came from (an
exception's message, a header echoed as a request id).
"""

from __future__ import annotations

import contextvars
import logging
import re
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

REQUEST_ID: Final[contextvars.ContextVar[str | None]] = contextvars.ContextVar(
    "ledger_request_id", default=None
)
_KEY_SHAPE: Final = re.compile(r"ldg_[A-Za-z0-9]+_[A-Za-z0-9_\-]+")
REDACTED: Final = "ldg_[redacted]"
_ENCODER: Final = msgspec.json.Encoder(enc_hook=repr)
# LogRecord attributes that are not extra fields passed with `extra=`.
_STANDARD: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


def redact(text: str) -> str:
    return _KEY_SHAPE.sub(REDACTED, text)


def current_request_id() -> str | None:
    """The id of the request being served, for anything that calls out on its behalf."""
    return REQUEST_ID.get()


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "request_id", ...extra}``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            line["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in ("color_message",):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return redact(_ENCODER.encode(line).decode())


LOG_CONFIG: Final[dict[str, Any]] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": JsonFormatter}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stderr",
        }
    },
    "root": {"handlers": ["stderr"], "level": "INFO"},
    "loggers": {
        "ledger": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
    },
}
"""What ``ledger serve`` hands uvicorn: the ledger's and uvicorn's logs as JSON on
stderr. Uvicorn's access log stays off: the ledger logs each request itself."""
