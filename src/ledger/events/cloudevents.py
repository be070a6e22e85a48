"""CloudEvents 1.0 (structured JSON and batch modes) as incoming ledger events.

Existing CloudEvents producers can post to ``POST /v1/events`` without a
translation layer of their own. Each CloudEvent becomes one incoming event:

- ``type``: the ledger type, bare (``favor.granted``) or prefixed
  (``ledger.favor.granted``);
- ``id``: the event id when it is a UUID; otherwise the UUIDv5 of
  ``[source, id]`` (JSON-encoded, so no separator can be forged) in the
  namespace :data:`ID_NAMESPACE`. CloudEvents make ``source`` + ``id`` unique,
  so a retried CloudEvent maps to the same ledger id and is not duplicated;
- ``time`` -> ``occurred_at`` (required: the ledger records when things
  happened); ``data`` -> ``data``;
- ``source``, ``subject``, ``dataschema`` and the original ``id`` are kept in
  metadata as ``ce_source``, ``ce_subject``, ``ce_dataschema``, ``ce_id``;
  extension attributes are kept under their own names, except ``correlationid``,
  ``causationid`` and ``actor`` (the ledger's own metadata fields) and
  ``expectedversion`` (optimistic concurrency, as ``expected_version``).

Errors name CloudEvents attributes (``time``, ``data.giver``; ``[3].time`` in
a batch), not the ledger's envelope fields, so a producer can find them.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, Final, Literal, Union

import msgspec
from msgspec import Meta

from ledger.errors import InvalidInput, LedgerError
from ledger.events.envelope import (
    INCOMING_TYPES,
    MAX_EVENTS_PER_REQUEST,
    EventBatch,
    IncomingEvent,
    decode_body,
    split_error,
)
from ledger.events.vocabulary import EVENT_TYPES

SINGLE: Final = "application/cloudevents+json"
BATCH: Final = "application/cloudevents-batch+json"
TYPE_PREFIX: Final = "ledger."
ID_NAMESPACE: Final = uuid.UUID("80605729-0e68-50a0-ae1f-c6cd8f6c370f")
"""Namespace of ids made from ``[source, id]``: uuid5(NAMESPACE_URL, "urn:ledger:cloudevents")."""

_CONTEXT: Final = frozenset(
    {"specversion", "id", "source", "type", "time", "subject", "datacontenttype", "dataschema"}
)
_RENAMED_EXTENSIONS: Final = {
    "correlationid": "correlation_id",
    "causationid": "causation_id",
    "actor": "actor",
}
_EXPECTED_VERSION: Final = "expectedversion"
_EXTENSION_NAME: Final = re.compile(r"^[a-z0-9]{1,20}$")
_JSON_MEDIA: Final = re.compile(r"^(application|text)/([a-z0-9.+-]+\+)?json(;.*)?$", re.IGNORECASE)
# Envelope fields of an incoming event, and the CloudEvents attribute behind each.
_ATTRIBUTE_OF: Final = {
    "id": "id",
    "type": "type",
    "occurred_at": "time",
    "expected_version": _EXPECTED_VERSION,
    "metadata.ce_source": "source",
    "metadata.ce_subject": "subject",
    "metadata.ce_dataschema": "dataschema",
    "metadata.ce_id": "id",
    **{f"metadata.{ours}": theirs for theirs, ours in _RENAMED_EXTENSIONS.items()},
}

NonEmpty = Annotated[str, Meta(min_length=1)]


class CloudEvent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The CloudEvents 1.0 context attributes the ledger reads (extensions apart)."""

    specversion: Literal["1.0"]
    id: NonEmpty
    source: NonEmpty
    type: NonEmpty
    time: NonEmpty | None = None
    subject: NonEmpty | None = None
    datacontenttype: str | None = None
    dataschema: str | None = None


_SINGLE_DECODER: Final = msgspec.json.Decoder(dict[str, Any])
_BATCH_DECODER: Final = msgspec.json.Decoder(
    Annotated[list[dict[str, Any]], Meta(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)]
)
_INCOMING: Final = Union[INCOMING_TYPES]  # noqa: UP007 - a runtime union of the types


def decode_cloudevents(body: bytes, content_type: str) -> EventBatch:
    """A structured CloudEvent or a batch of them, as the ledger's incoming batch."""
    batch = content_type == BATCH
    raw: list[dict[str, Any]] = (
        decode_body(_BATCH_DECODER, body) if batch else [decode_body(_SINGLE_DECODER, body)]
    )
    events = [_incoming(i, attributes, batch) for i, attributes in enumerate(raw)]
    return EventBatch(events=events)


def ledger_type(cloudevent_type: str) -> str | None:
    """``ledger.favor.granted`` or ``favor.granted`` -> ``favor.granted``; None if unknown."""
    name = cloudevent_type.removeprefix(TYPE_PREFIX)
    return name if name in EVENT_TYPES else None


def ledger_id(source: str, cloudevent_id: str) -> uuid.UUID:
    """The event id of a CloudEvent: its own id when a UUID, else UUIDv5 of [source, id]."""
    try:
        return uuid.UUID(cloudevent_id)
    except ValueError:
        name = msgspec.json.encode([source, cloudevent_id]).decode()
        return uuid.uuid5(ID_NAMESPACE, name)


def cloudevent_field(field: str | None, *, batch: bool) -> str | None:
    """``events[3].occurred_at`` -> ``[3].time`` (batch) or ``time`` (one event)."""
    if field is None or not field.startswith("events["):
        return field
    index, _, rest = field.removeprefix("events[").partition("]")
    rest = rest.removeprefix(".")
    for ours, theirs in _ATTRIBUTE_OF.items():
        if rest == ours or rest.startswith(ours + "."):
            rest = theirs + rest[len(ours) :]
            break
    if rest.startswith("metadata."):
        rest = rest.removeprefix("metadata.")
    if not batch:
        return rest or None
    return f"[{index}].{rest}" if rest else f"[{index}]"


def renamed(exc: LedgerError, *, batch: bool) -> LedgerError:
    """The same error, naming the CloudEvents attribute at fault."""
    exc.field = cloudevent_field(exc.field, batch=batch)
    return exc


def _incoming(index: int, attributes: dict[str, Any], batch: bool) -> IncomingEvent:
    at = f"[{index}]." if batch else ""
    context = {k: v for k, v in attributes.items() if k in _CONTEXT}
    extensions = {k: v for k, v in attributes.items() if k not in _CONTEXT and k != "data"}
    if "data_base64" in extensions:
        raise InvalidInput(
            "binary data (data_base64) is not accepted; send `data` as a JSON object",
            field=f"{at}data_base64",
        )
    try:
        event = msgspec.convert(context, CloudEvent)
    except msgspec.ValidationError as exc:
        message, field = split_error(str(exc))
        raise InvalidInput(message, field=f"{at}{field}" if field else None) from None
    if event.datacontenttype is not None and not _JSON_MEDIA.match(event.datacontenttype):
        raise InvalidInput(
            f"datacontenttype {event.datacontenttype!r} is not accepted; the ledger takes JSON "
            "data (application/json or omit datacontenttype)",
            field=f"{at}datacontenttype",
        )
    type_name = ledger_type(event.type)
    if type_name is None:
        raise InvalidInput(
            f"unknown event type {event.type!r}; known types (bare or prefixed with "
            f"{TYPE_PREFIX!r}): {', '.join(EVENT_TYPES)}",
            field=f"{at}type",
        )
    if event.time is None:
        raise InvalidInput(
            "time is required: the ledger records when each event happened",
            field=f"{at}time",
        )
    for name in extensions:
        if not _EXTENSION_NAME.match(name):
            raise InvalidInput(
                f"{name!r} is neither a CloudEvents 1.0 attribute nor a valid extension name "
                "(lower-case letters and digits, at most 20)",
                field=f"{at}{name}",
            )
    metadata: dict[str, Any] = {
        _RENAMED_EXTENSIONS.get(k, k): v for k, v in extensions.items() if k != _EXPECTED_VERSION
    }
    metadata["ce_id"] = event.id
    metadata["ce_source"] = event.source
    if event.subject is not None:
        metadata["ce_subject"] = event.subject
    if event.dataschema is not None:
        metadata["ce_dataschema"] = event.dataschema
    incoming: dict[str, Any] = {
        "type": type_name,
        "id": str(ledger_id(event.source, event.id)),
        "occurred_at": event.time,
        "data": attributes.get("data"),
        "metadata": metadata,
    }
    if extensions.get(_EXPECTED_VERSION) is not None:
        incoming["expected_version"] = extensions[_EXPECTED_VERSION]
    try:
        converted: IncomingEvent = msgspec.convert(incoming, _INCOMING)
    except msgspec.ValidationError as exc:
        message, field = split_error(str(exc))
        message = message.replace("`occurred_at`", "`time`")
        raise InvalidInput(
            message, field=cloudevent_field(f"events[{index}].{field or ''}", batch=batch)
        ) from None
    return converted
