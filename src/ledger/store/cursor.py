"""Opaque cursors: a place in a tenant's log in the order readers see it.

The log is read in ``(tx_id, position)`` order (see :mod:`ledger.store.read`
for why), so a cursor carries both. Clients must treat it as opaque; it is
base64url so it travels unescaped in query strings and headers.
"""

from __future__ import annotations

import base64
import binascii
import struct
from typing import Final

import msgspec

from ledger.errors import InvalidInput

_PACK: Final = struct.Struct(">QQ")
_PREFIX: Final = "c1"
# Transaction ids, positions and versions are PostgreSQL bigint/integer: a
# forged cursor beyond them is refused here instead of failing in a query.
MAX_BIGINT: Final = 2**63 - 1
MAX_VERSION: Final = 2**31 - 1


class Cursor(msgspec.Struct, frozen=True, order=True):
    tx_id: int
    position: int

    def encode(self) -> str:
        raw = _PACK.pack(self.tx_id, self.position)
        return _PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    @classmethod
    def decode(cls, token: str, *, field: str = "cursor") -> Cursor:
        if not token.startswith(_PREFIX):
            raise _bad(field)
        body = token[len(_PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            tx_id, position = _PACK.unpack(raw)
        except (binascii.Error, struct.error, ValueError):
            raise _bad(field) from None
        if tx_id > MAX_BIGINT or position > MAX_BIGINT:
            raise _bad(field)
        return cls(tx_id, position)


START: Final = Cursor(0, 0)


def _bad(field: str) -> InvalidInput:
    return InvalidInput(
        f"{field} is not a cursor this ledger issued; use a cursor from an earlier response "
        "or omit it to start from the beginning",
        field=field,
        in_body=False,
    )


_VERSION_PREFIX: Final = "v1"


def encode_version_cursor(version: int) -> str:
    """A place in one stream: after ``version``."""
    return (
        _VERSION_PREFIX + base64.urlsafe_b64encode(version.to_bytes(8, "big")).rstrip(b"=").decode()
    )


def decode_version_cursor(token: str, *, field: str = "cursor") -> int:
    if not token.startswith(_VERSION_PREFIX):
        raise _bad(field)
    body = token[len(_VERSION_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise _bad(field) from None
    if len(raw) != 8 or int.from_bytes(raw, "big") > MAX_VERSION:
        raise _bad(field)
    return int.from_bytes(raw, "big")
