"""Sealing the personal data that was stored in clear before crypto-shredding.

Registrations appended before migration 0005 hold ``display_name`` and
``email`` in ``events.data``. Forgetting those people would shred nothing, so
the migration seals them once, the way an append now does: a key per person
(discarded at once for people already forgotten, whose data thereby
disappears), ciphertext in ``events.sealed``, the personal fields removed from
``data``. It is the one time the log is rewritten, and it happens before any
digest exists (digests arrive with the same migration), so no digest breaks.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from ledger.audit.erasure import new_key, seal, split

_PLAINTEXT: Final = """
SELECT e.tenant_id, e.id, e.data::text AS data,
       EXISTS (SELECT 1 FROM events f
               WHERE f.tenant_id = e.tenant_id AND f.stream = e.stream
                 AND f.type = 'person.forgotten') AS forgotten
FROM events e
WHERE e.type = 'person.registered' AND e.sealed IS NULL
  AND (e.data ? 'display_name' OR e.data ? 'email')
ORDER BY e.tenant_id, e.id
"""

_REWRITE: Final = """
UPDATE events e SET data = r.data::jsonb, sealed = r.sealed
FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::bytea[]) AS r(tenant_id, id, data, sealed)
WHERE e.tenant_id = r.tenant_id AND e.id = r.id
"""

_KEYS: Final = """
INSERT INTO person_keys (tenant_id, person, key)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[])
ON CONFLICT (tenant_id, person) DO NOTHING
"""

# The append-only trigger is lifted for this transaction's rewrite alone.
_LIFT: Final = "ALTER TABLE events DISABLE TRIGGER events_no_update_or_delete"
_RESTORE: Final = "ALTER TABLE events ENABLE TRIGGER events_no_update_or_delete"

_DECODER: Final = msgspec.json.Decoder(dict[str, Any])
_ENCODER: Final = msgspec.json.Encoder()


async def seal_plaintext_registrations(conn: Any) -> int:
    """Seal every registration still in clear; return how many there were.

    ``conn`` is the migration's own asyncpg connection (plain codecs: jsonb as text).
    """
    rows = await conn.fetch(_PLAINTEXT)
    if not rows:
        return 0
    keys: dict[tuple[int, str], bytes] = {}
    forgotten: set[tuple[int, str]] = set()
    rewritten: list[tuple[int, Any, str, bytes]] = []
    for row in rows:
        kept, personal = split(_DECODER.decode(row["data"]))
        owner = (row["tenant_id"], str(kept["person"]))
        key = keys.setdefault(owner, new_key())
        sealed = seal(personal, key, row["id"])
        rewritten.append((row["tenant_id"], row["id"], _ENCODER.encode(kept).decode(), sealed))
        if row["forgotten"]:
            forgotten.add(owner)  # its key is never stored: shredded at once
    kept_keys = [(owner, key) for owner, key in keys.items() if owner not in forgotten]
    await conn.execute(_LIFT)
    await conn.execute(_REWRITE, *map(list, zip(*rewritten, strict=True)))
    await conn.execute(_RESTORE)
    if kept_keys:
        await conn.execute(
            _KEYS,
            [owner[0] for owner, _ in kept_keys],
            [owner[1] for owner, _ in kept_keys],
            [key for _, key in kept_keys],
        )
    return len(rows)
