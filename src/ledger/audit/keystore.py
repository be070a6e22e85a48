"""Per-person keys in PostgreSQL: sealing on append, shredding on forget.

Runs inside the append's transaction, after the lifecycle checks: a
registration's key and its ciphertext commit together, and a forgotten
person's key is deleted in the same transaction that records
``person.forgotten``. The lifecycle already refuses a registration after a
forget (the id is not reused), so a deleted key is never recreated.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

import msgspec

from ledger.audit.erasure import SEALED_TYPES, new_key, restored, seal, split
from ledger.events.envelope import NewEvent
from ledger.store.database import Connection

FORGET_TYPE: Final = "person.forgotten"

# Returns the existing key when there is one (an import brings keys first).
_KEYS_FOR: Final = """
INSERT INTO person_keys (tenant_id, person, key)
SELECT $1, p.person, p.key FROM unnest($2::text[], $3::bytea[]) AS p(person, key)
ON CONFLICT (tenant_id, person) DO UPDATE SET person = excluded.person
RETURNING person, key
"""

_SHRED: Final = """
DELETE FROM person_keys WHERE tenant_id = $1 AND person = ANY($2::text[])
"""

_ENCODER: Final = msgspec.json.Encoder()


async def seal_and_shred(conn: Connection, tenant_id: int, fresh: list[NewEvent]) -> list[NewEvent]:
    """``fresh`` with personal data sealed; forgotten people's keys deleted."""
    to_seal = [e for e in fresh if e.type in SEALED_TYPES and e.sealed is None]
    keys: dict[str, bytes] = {}
    if to_seal:
        people = sorted({_person(e) for e in to_seal})
        rows = await conn.fetch(_KEYS_FOR, tenant_id, people, [new_key() for _ in people])
        keys = {row["person"]: row["key"] for row in rows}
    forgotten = sorted({_person(e) for e in fresh if e.type == FORGET_TYPE})
    if forgotten:
        await conn.execute(_SHRED, tenant_id, forgotten)
    if not to_seal:
        return fresh
    sealing = {event.id for event in to_seal}
    return [
        _sealed(event, keys[_person(event)]) if event.id in sealing else event for event in fresh
    ]


def _person(event: NewEvent) -> str:
    person: str = getattr(event.data, "person")  # noqa: B009 - person.* events all name one
    return person


def _sealed(event: NewEvent, key: bytes) -> NewEvent:
    kept, personal = split(msgspec.to_builtins(event.data))
    return msgspec.structs.replace(
        event, data_json=_ENCODER.encode(kept), sealed=seal(personal, key, event.id)
    )


_SEALED_OF: Final = """
SELECT e.id, e.sealed, k.key
FROM events e
LEFT JOIN person_keys k ON k.tenant_id = e.tenant_id AND k.person = e.data->>'person'
WHERE e.tenant_id = $1 AND e.id = ANY($2::uuid[]) AND e.sealed IS NOT NULL
"""


async def comparable(
    conn: Connection, tenant_id: int, stored: list[Any], events: list[NewEvent]
) -> dict[uuid.UUID, Any]:
    """Stored data of already-stored sealed events, opened for the idempotency
    check against the retried ``events`` (rare: only retried registrations)."""
    ids = [row["id"] for row in stored if row["type"] in SEALED_TYPES]
    if not ids:
        return {}
    claimed = {event.id: msgspec.to_builtins(event.data) for event in events}
    data = {row["id"]: row["data"] for row in stored}
    rows = await conn.fetch(_SEALED_OF, tenant_id, ids)
    return {
        row["id"]: restored(
            data[row["id"]], row["sealed"], row["key"], row["id"], claimed[row["id"]]
        )
        for row in rows
    }
