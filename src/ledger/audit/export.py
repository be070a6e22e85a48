"""The NDJSON export format, and recomputing a digest from a file.

One JSON object a line, told apart by ``kind``:

1. ``header``: format, source tenant, how many events follow, when;
2. ``key``: the data key of every person not forgotten (forgotten people have
   none, so their sealed data stays unreadable wherever the file goes);
3. ``event``: each event as stored, in reader order: the envelope with its
   source ``position`` and ``cursor``, its non-personal ``data`` and its
   personal data still sealed (``sealed``, base64 AES-GCM ciphertext);
4. ``end``: event count, last cursor and the digest of the chain over them.
   A file without it was cut short.

Events travel as stored, never decrypted: the same ciphertext in a fresh
tenant gives the identical digest, and a file holds no personal data in clear.
Pure: reading and writing the database is :mod:`ledger.audit.transfer`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any, Final

import msgspec

from ledger.audit.digest import Chain, Digested
from ledger.errors import InvalidInput

FORMAT: Final = "ledger.export.v1"


class Header(msgspec.Struct, frozen=True, tag="header", tag_field="kind"):
    format: str
    tenant: str
    events: int
    exported_at: datetime


class PersonKey(msgspec.Struct, frozen=True, tag="key", tag_field="kind"):
    person: str
    key: bytes


class ExportedEvent(msgspec.Struct, frozen=True, omit_defaults=True, tag="event", tag_field="kind"):
    id: uuid.UUID
    type: str
    stream: str
    version: int
    position: int
    cursor: str
    occurred_at: datetime
    recorded_at: datetime
    data: dict[str, Any]
    metadata: dict[str, Any]
    sealed: bytes | None = None


class End(msgspec.Struct, frozen=True, tag="end", tag_field="kind"):
    events: int
    cursor: str | None
    digest: str


Line = Header | PersonKey | ExportedEvent | End
_DECODER: Final = msgspec.json.Decoder(Line)
ENCODER: Final = msgspec.json.Encoder()


def encode_line(line: Line) -> bytes:
    return ENCODER.encode(line) + b"\n"


def decode_lines(lines: Iterable[bytes]) -> Iterator[Line]:
    """Lines of a file; a malformed line is refused with its number."""
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            line = _DECODER.decode(raw)
        except msgspec.DecodeError as exc:
            if not raw.endswith(b"\n"):
                return  # the last line of a file cut short mid-line
            raise InvalidInput(
                f"line {number} is not a ledger export line: {exc}", field=f"line {number}"
            ) from None
        if number == 1 and not (isinstance(line, Header) and line.format == FORMAT):
            raise InvalidInput(
                f"line 1 is not a {FORMAT} header; export the file with `ledger export`",
                field="line 1",
            )
        yield line


def digested(event: ExportedEvent) -> Digested:
    return Digested(
        id=event.id,
        type=event.type,
        stream=event.stream,
        version=event.version,
        occurred_at=event.occurred_at,
        data=event.data,
        metadata=event.metadata,
        sealed=event.sealed,
    )


class FileDigest(msgspec.Struct, frozen=True):
    """What a file says of itself (``end``) beside what its events hash to."""

    header: Header
    events: int
    cursor: str | None
    digest: str
    end: End | None

    @property
    def complete(self) -> bool:
        return self.end is not None and self.end.events == self.events

    @property
    def matches_end(self) -> bool:
        return self.complete and self.end is not None and self.end.digest == self.digest


def digest_of_file(lines: Iterable[bytes]) -> FileDigest:
    chain, header, end, cursor = Chain(), None, None, None
    for line in decode_lines(lines):
        if isinstance(line, Header):
            header = line
        elif isinstance(line, ExportedEvent):
            chain.add(digested(line))
            cursor = line.cursor
        elif isinstance(line, End):
            end = line
    if header is None:
        raise InvalidInput("the file is empty; export one with `ledger export`", field="line 1")
    return FileDigest(header, chain.events, cursor, chain.hex, end)
