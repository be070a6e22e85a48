"""Incoming events as clients post them, and their preparation for the store.

The request body is decoded in one pass by a tagged union keyed on ``type``:
``{"type": "favor.granted", "data": {...}}`` selects the struct whose ``data``
is a :class:`~ledger.events.vocabulary.FavorGranted`, so a bad field is
reported with its full path (``events[3].data.giver``) by msgspec itself.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Final, TypeVar, Union

import msgspec
from msgspec import Meta

from ledger.errors import InvalidInput, PayloadTooLarge
from ledger.events.vocabulary import EVENT_TYPES, EventData

T = TypeVar("T")
MAX_EVENTS_PER_REQUEST: Final = 1000
MAX_DATA_BYTES: Final = 64 * 1024
MAX_METADATA_BYTES: Final = 16 * 1024
# An app back-fills the past freely; the future is refused beyond clock skew.
MAX_CLOCK_SKEW: Final = timedelta(hours=24)
# Nothing networked happened before this; it also keeps every zone's offset
# inside the range that Python and PostgreSQL can convert.
EARLIEST_OCCURRED_AT: Final = datetime(1900, 1, 1, tzinfo=UTC)
# msgspec echoes offending values and names; a hostile 1 MB name stays out of the answer.
MAX_ECHO_CHARS: Final = 80

MetadataKey = Annotated[str, Meta(min_length=1, max_length=100)]
MetadataValue = Annotated[str, Meta(max_length=2000)] | int | float | bool | None
Metadata = Annotated[dict[MetadataKey, MetadataValue], Meta(max_length=64)]
_STRING_METADATA: Final = ("correlation_id", "causation_id", "actor")


class IncomingEvent(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="type"
):
    """Envelope fields common to every incoming event; subclasses add ``data``."""

    id: uuid.UUID | None = None
    occurred_at: Annotated[datetime, Meta(tz=True)]
    metadata: Metadata = msgspec.field(default_factory=dict)
    expected_version: Annotated[int, Meta(ge=0)] | None = None
    data: EventData


def _incoming_struct(type_name: str, data_type: type[EventData]) -> type[IncomingEvent]:
    return msgspec.defstruct(  # type: ignore[return-value]
        data_type.__name__ + "Event",
        [("data", data_type)],
        bases=(IncomingEvent,),
        tag=type_name,
        frozen=True,
        kw_only=True,
        forbid_unknown_fields=True,
        module=__name__,
    )


INCOMING_TYPES: Final = tuple(_incoming_struct(name, cls) for name, cls in EVENT_TYPES.items())

if TYPE_CHECKING:

    class EventBatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
        events: list[IncomingEvent]

else:
    EventBatch = msgspec.defstruct(
        "EventBatch",
        [
            (
                "events",
                Annotated[
                    list[Union[INCOMING_TYPES]],  # noqa: UP007 - a runtime union of the types
                    Meta(min_length=1, max_length=MAX_EVENTS_PER_REQUEST),
                ],
            )
        ],
        frozen=True,
        forbid_unknown_fields=True,
        module=__name__,
    )

BATCH_DECODER: Final = msgspec.json.Decoder(EventBatch)
_ENCODER: Final = msgspec.json.Encoder()


class NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An incoming event checked on its own, ready to be placed in its stream."""

    index: int
    id: uuid.UUID
    id_given: bool
    type: str
    stream: str
    occurred_at: datetime
    data: EventData
    data_json: bytes
    metadata: dict[str, Any]
    metadata_json: bytes
    people_json: bytes
    expected_version: int | None
    # Personal data sealed under its person's key (see ledger.audit.erasure);
    # set by the store on append, or carried over by an import.
    sealed: bytes | None = None


# "... - at `$.events[0].data`", or for a dict's key "... - at `key` in `$.weights`".
_AT = re.compile(r"^(?P<message>.*?)(?: - at `(?P<key>key` in `)?\$(?P<path>[^`]*)`)?$", re.DOTALL)
_NAMED_FIELD = re.compile(r"(?:missing required|unknown) field `(?P<name>[^`]+)`")
_QUOTED = re.compile(f"`[^`]{{{MAX_ECHO_CHARS},}}`|'[^']{{{MAX_ECHO_CHARS},}}'")
# PostgreSQL text and jsonb cannot hold NUL; msgspec writes it as this escape.
_NUL_ESCAPE: Final = b"\\u0000"


def decode_batch(body: bytes) -> EventBatch:
    return decode_body(BATCH_DECODER, body)


def decode_body(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """Decode a request body, turning msgspec's message into a field path."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        message, field = split_error(str(exc))
        raise InvalidInput(message, field=field) from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"The body is not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"The body is not valid UTF-8 (byte {exc.start}); send JSON encoded as UTF-8"
        ) from None


def split_error(text: str) -> tuple[str, str | None]:
    """``"Object missing required field `giver` - at `$.events[3].data`"`` ->
    (message, ``"events[3].data.giver"``)."""
    matched = _AT.match(text)
    assert matched is not None
    message, path = matched["message"], matched["path"]
    if matched["key"]:
        message += " (a key of this object)"
    # msgspec names a dict's values `[...]`: the dict itself is the culprit.
    field = path.lstrip(".").split("[...]")[0] if path is not None else None
    named = _NAMED_FIELD.search(message)
    if named is not None:
        name = _shortened(named["name"])
        field = f"{field}.{name}" if field else name
    message = _QUOTED.sub(lambda quoted: _shortened(quoted[0]), message)
    if message.startswith("Invalid value") and field is not None and field.endswith(".type"):
        message += f"; known types: {', '.join(EVENT_TYPES)}"
    return message, field or None


def _shortened(text: str) -> str:
    """A long echoed value, cut to its start (with its closing quote kept)."""
    if len(text) <= MAX_ECHO_CHARS:
        return text
    quote = text[-1] if text[-1] in "`'" else ""
    return text[: MAX_ECHO_CHARS - 1 - len(quote)] + "…" + quote


def _nul_field(value: Any, path: str) -> str | None:
    """Where a NUL character hides in decoded JSON (keys included), if anywhere."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = path if "\x00" in key else _nul_field(item, f"{path}.{key}")
            if found is not None:
                return found
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _nul_field(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _refuse_nul(at: str, part: str, encoded: bytes) -> None:
    """PostgreSQL cannot store NUL in text: refuse it here, naming the field."""
    if _NUL_ESCAPE not in encoded:
        return
    field = _nul_field(msgspec.json.decode(encoded), f"{at}.{part}")
    if field is not None:  # else only an escaped backslash followed by "u0000"
        raise InvalidInput("text may not contain the NUL character (\\u0000)", field=field)


def prepare(batch: EventBatch, *, now: datetime | None = None) -> list[NewEvent]:
    """Check each event on its own (limits, self-contradictions) and give it an id.

    Nothing here looks at the database: what depends on earlier events (versions,
    lifecycles, idempotency) is the store's job. This runs for every event a
    server receives, so the common case is kept to a few cheap tests; each
    refusal builds its message only when it happens.
    """
    latest = (now or datetime.now(UTC)) + MAX_CLOCK_SKEW
    prepared: list[NewEvent] = []
    # Keyed by the id's integer: uuid.UUID hashes in Python, an int in C.
    first_index_of: dict[int, int] = {}
    for i, event in enumerate(batch.events):
        data_json = _ENCODER.encode(event.data)
        metadata_json = _ENCODER.encode(event.metadata)
        if len(data_json) > MAX_DATA_BYTES or len(metadata_json) > MAX_METADATA_BYTES:
            _refuse_size(f"events[{i}]", data_json, metadata_json)
        if _NUL_ESCAPE in data_json or _NUL_ESCAPE in metadata_json:
            _refuse_nul(f"events[{i}]", "data", data_json)
            _refuse_nul(f"events[{i}]", "metadata", metadata_json)
        if event.metadata:
            _check_metadata(f"events[{i}]", event.metadata)
        if not EARLIEST_OCCURRED_AT <= event.occurred_at <= latest:
            _refuse_time(f"events[{i}]", event.occurred_at, latest)
        for problem in event.data.problems():
            raise InvalidInput(problem.message, field=f"events[{i}].data.{problem.field}")
        event_id = event.id or uuid.uuid4()
        first = first_index_of.setdefault(event_id.int, i)
        if first != i:
            raise InvalidInput(
                f"id {event_id} is used twice in this batch (events[{first}] and events[{i}]); "
                "each event needs its own id",
                field=f"events[{i}].id",
            )
        prepared.append(
            NewEvent(
                index=i,
                id=event_id,
                id_given=event.id is not None,
                type=event.data.type_name,
                stream=event.data.stream(),
                occurred_at=event.occurred_at,
                data=event.data,
                data_json=data_json,
                metadata=event.metadata,
                metadata_json=metadata_json,
                people_json=_ENCODER.encode(sorted(set(event.data.people()))),
                expected_version=event.expected_version,
            )
        )
    return prepared


def _refuse_size(at: str, data_json: bytes, metadata_json: bytes) -> None:
    if len(data_json) > MAX_DATA_BYTES:
        raise PayloadTooLarge(
            f"{at}.data is {len(data_json)} bytes; an event's data may hold at most "
            f"{MAX_DATA_BYTES} bytes",
            field=f"{at}.data",
            limit=MAX_DATA_BYTES,
        )
    raise PayloadTooLarge(
        f"{at}.metadata is {len(metadata_json)} bytes; at most {MAX_METADATA_BYTES} are allowed",
        field=f"{at}.metadata",
        limit=MAX_METADATA_BYTES,
    )


def _check_metadata(at: str, metadata: dict[str, Any]) -> None:
    for key in _STRING_METADATA:
        value = metadata.get(key)
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"metadata.{key} must be a string", field=f"{at}.metadata.{key}")


def _refuse_time(at: str, occurred_at: datetime, latest: datetime) -> None:
    if occurred_at > latest:
        raise InvalidInput(
            f"occurred_at {occurred_at.isoformat()} is in the future; events record "
            "what has happened (up to 24 h of clock skew is tolerated)",
            field=f"{at}.occurred_at",
        )
    raise InvalidInput(
        f"occurred_at {occurred_at.isoformat()} is before "
        f"{EARLIEST_OCCURRED_AT.year}; send when the event really happened",
        field=f"{at}.occurred_at",
    )


def same_content(
    new: NewEvent, stored_type: str, occurred_at: datetime, data: Any, metadata: Any
) -> bool:
    """Whether a retried event is the one already stored under its id."""
    return (
        new.type == stored_type
        and new.occurred_at == occurred_at
        and msgspec.convert(data, type(new.data)) == new.data
        and new.metadata == metadata
    )
