"""API keys: created with scopes, stored only as hashes, revocable.

A key reads ``ldg_<key id>_<secret>``. The key id is public (it names the key
in listings and revocations); the whole key is hashed with SHA-256 before it
is stored or looked up. The secret is 256 random bits, so a fast hash is
enough: nothing about it can be guessed, and every request stays cheap.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime
from typing import Final

import msgspec

from ledger.errors import InvalidInput, NotFound
from ledger.store.database import Connection

SCOPES: Final = ("events:write", "events:read", "projections:read", "audit", "admin")
TENANT_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class Principal(msgspec.Struct, frozen=True):
    """Who a request acts for: a tenant, through one of its keys."""

    tenant_id: int
    tenant: str
    key_id: str
    scopes: frozenset[str]


class KeyInfo(msgspec.Struct, frozen=True):
    key_id: str
    tenant: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None


_ENSURE_TENANT: Final = """
WITH inserted AS (
    INSERT INTO tenants (name) VALUES ($1)
    ON CONFLICT (name) DO NOTHING
    RETURNING tenant_id
)
SELECT tenant_id FROM inserted
UNION ALL
SELECT tenant_id FROM tenants WHERE name = $1
LIMIT 1
"""

_INSERT_KEY: Final = """
INSERT INTO api_keys (tenant_id, key_id, key_hash, scopes)
VALUES ($1, $2, $3, $4)
"""

_AUTHENTICATE: Final = """
SELECT k.key_hash, k.tenant_id, t.name, k.key_id, k.scopes
FROM api_keys k JOIN tenants t USING (tenant_id)
WHERE k.key_hash = ANY($1::bytea[]) AND k.revoked_at IS NULL
"""

_LIST: Final = """
SELECT k.key_id, t.name AS tenant, k.scopes, k.created_at, k.revoked_at
FROM api_keys k JOIN tenants t USING (tenant_id)
WHERE $1::text IS NULL OR t.name = $1
ORDER BY t.name, k.created_at
"""

_REVOKE: Final = """
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
WHERE key_id = $1
RETURNING key_id
"""


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def check_scopes(scopes: list[str]) -> list[str]:
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise InvalidInput(
            f"unknown scope {unknown[0]!r}; choose from {', '.join(SCOPES)}", field="scope"
        )
    return sorted(set(scopes)) if scopes else list(SCOPES)


async def ensure_tenant(conn: Connection, name: str) -> int:
    if not TENANT_NAME.match(name):
        raise InvalidInput(
            f"tenant name {name!r} must be 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            field="tenant",
        )
    tenant_id: int | None = await conn.fetchval(_ENSURE_TENANT, name)
    assert tenant_id is not None
    return tenant_id


async def create_key(conn: Connection, tenant: str, scopes: list[str]) -> tuple[str, str]:
    """Create a key for ``tenant`` (created if new); return (key id, key)."""
    chosen = check_scopes(scopes)
    async with conn.transaction():
        tenant_id = await ensure_tenant(conn, tenant)
        key_id = secrets.token_hex(6)
        key = f"ldg_{key_id}_{secrets.token_urlsafe(32)}"
        await conn.execute(_INSERT_KEY, tenant_id, key_id, hash_key(key), chosen)
    return key_id, key


async def authenticate(conn: Connection, key: str) -> Principal | None:
    digest = hash_key(key)
    return (await authenticate_hashes(conn, [digest])).get(digest)


async def authenticate_hashes(conn: Connection, digests: list[bytes]) -> dict[bytes, Principal]:
    """The live (unrevoked) keys among ``digests``, by hash: one query for many
    requests (see :class:`ledger.api.auth.KeyLookups`)."""
    rows = await conn.fetch(_AUTHENTICATE, digests)
    return {
        row["key_hash"]: Principal(
            row["tenant_id"], row["name"], row["key_id"], frozenset(row["scopes"])
        )
        for row in rows
    }


async def list_keys(conn: Connection, tenant: str | None = None) -> list[KeyInfo]:
    return [
        KeyInfo(r["key_id"], r["tenant"], list(r["scopes"]), r["created_at"], r["revoked_at"])
        for r in await conn.fetch(_LIST, tenant)
    ]


async def revoke_key(conn: Connection, key_id: str) -> None:
    if await conn.fetchval(_REVOKE, key_id) is None:
        raise NotFound(f"no key with id {key_id!r}; `ledger keys list` shows the ids")
