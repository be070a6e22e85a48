"""Events as the client sends them, built from the vocabulary's own types.

The id is chosen here, when the event is made, not when it is sent: every
retry of an append then carries the same ids, and the server recognises it as
the same append instead of writing the events twice.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Final

import msgspec

from ledger.events.vocabulary import EventData

MetadataValue = str | int | float | bool | None


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One event of a ``POST /v1/events`` body."""

    id: uuid.UUID
    type: str
    occurred_at: datetime
    data: EventData
    metadata: dict[str, MetadataValue] | None = None
    expected_version: int | None = None


class Batch(msgspec.Struct, frozen=True):
    events: list[Event]


BATCH_ENCODER: Final = msgspec.json.Encoder()


def event(
    data: EventData,
    *,
    occurred_at: datetime | None = None,
    metadata: dict[str, MetadataValue] | None = None,
    expected_version: int | None = None,
    id: uuid.UUID | None = None,
) -> Event:
    """An event of the vocabulary type ``data`` (``FavorGranted(...)``, ...).

    The data is checked here as the server will check it (types, limits,
    self-contradictions), so a mistake raises ``ValueError`` naming the field
    before anything is sent. ``occurred_at`` defaults to now and must carry a
    time zone.
    """
    when = occurred_at or datetime.now(UTC)
    if when.tzinfo is None:
        raise ValueError("occurred_at needs a time zone (e.g. datetime.now(UTC))")
    try:
        msgspec.convert(msgspec.to_builtins(data), type(data))
    except msgspec.ValidationError as exc:
        raise ValueError(f"{data.type_name}: {exc}") from None
    for problem in data.problems():
        raise ValueError(f"{data.type_name}: data.{problem.field}: {problem.message}")
    return Event(
        id=id or uuid.uuid4(),
        type=data.type_name,
        occurred_at=when,
        data=data,
        metadata=metadata,
        expected_version=expected_version,
    )
