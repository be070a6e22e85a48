"""The log's digest: a hash chain over each tenant's events in reader order.

``h0 = SHA-256("ledger.digest.v1")`` and ``h(n) = SHA-256(h(n-1) || SHA-256(c(e_n)))``
where ``c(e)`` is the canonical encoding of what an event *is*: its id, type,
stream, version, ``occurred_at`` (in UTC), data and metadata (JSON with sorted
keys), and its sealed personal data (the ciphertext, see
:mod:`ledger.audit.erasure`). Left out on purpose: ``position``, ``tx_id`` and
``recorded_at``. They say where and when this server stored the event, not what
happened; an export imported into a fresh tenant (or another server) gets new
ones, and must still reproduce the identical digest. The order they give still
counts: the chain follows reader order, so reordering the log changes it.

Because ciphertext is hashed, not plaintext, forgetting a person (deleting
their key) leaves every digest valid. Pure: no database here; the checkpointed
storage adapter is :mod:`ledger.audit.digest_store`.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

_SEED: Final = hashlib.sha256(b"ledger.digest.v1").digest()
_CANONICAL: Final = msgspec.json.Encoder(order="sorted")


class Digested(msgspec.Struct, frozen=True, omit_defaults=True):
    """The fields of an event the chain covers, in their canonical form."""

    id: uuid.UUID
    type: str
    stream: str
    version: int
    occurred_at: datetime
    data: dict[str, Any]
    metadata: dict[str, Any]
    sealed: bytes | None = None


def canonical(event: Digested) -> bytes:
    utc = msgspec.structs.replace(event, occurred_at=event.occurred_at.astimezone(UTC))
    return _CANONICAL.encode(utc)


class Chain:
    """A running digest; ``events`` counts what it has absorbed."""

    def __init__(self, digest: bytes = _SEED, events: int = 0) -> None:
        self.digest = digest
        self.events = events

    def add(self, event: Digested) -> None:
        leaf = hashlib.sha256(canonical(event)).digest()
        self.digest = hashlib.sha256(self.digest + leaf).digest()
        self.events += 1

    @property
    def hex(self) -> str:
        return self.digest.hex()


EMPTY: Final = _SEED.hex()
