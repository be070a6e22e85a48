"""Erasure by crypto-shredding: personal data sealed under a per-person key.

The log never changes, yet a person must be able to be forgotten. So the
personal fields of ``person.registered`` (``display_name``, ``email``) never
reach the events table in clear: they are sealed with AES-256-GCM under a key
of that person, and the event keeps only the ciphertext (``events.sealed``)
beside its non-personal data (``{"person": ...}``). ``person.forgotten``
deletes the key; the ciphertext stays, part of the immutable event (so the
digest still verifies), but nobody can open it again.

The event id is the GCM associated data: a ciphertext cannot be moved onto
another event. This module is pure (no database): the key store is
:mod:`ledger.audit.keystore`.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Final

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PERSONAL_FIELDS: Final = ("display_name", "email")
SEALED_TYPES: Final = frozenset({"person.registered"})
KEY_BYTES: Final = 32
_NONCE_BYTES: Final = 12
_FORMAT: Final = b"\x01"
_ENCODER: Final = msgspec.json.Encoder(order="sorted")


class PersonalData(msgspec.Struct, frozen=True, omit_defaults=True):
    """What is sealed: only the fields the event carried."""

    display_name: str | None = None
    email: str | None = None


_PERSONAL_DECODER: Final = msgspec.json.Decoder(PersonalData)


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def split(data: dict[str, Any]) -> tuple[dict[str, Any], PersonalData]:
    """An event's data without its personal fields, and those fields."""
    kept = {k: v for k, v in data.items() if k not in PERSONAL_FIELDS}
    return kept, PersonalData(display_name=data.get("display_name"), email=data.get("email"))


def seal(personal: PersonalData, key: bytes, event_id: uuid.UUID) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return _FORMAT + nonce + AESGCM(key).encrypt(nonce, _ENCODER.encode(personal), event_id.bytes)


def unseal(sealed: bytes, key: bytes, event_id: uuid.UUID) -> PersonalData:
    """Open a ciphertext; a wrong key or an altered ciphertext raises :class:`Unreadable`."""
    if not sealed.startswith(_FORMAT) or len(sealed) < 1 + _NONCE_BYTES + 16:
        raise Unreadable(f"event {event_id}: sealed data in an unknown format")
    nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
    try:
        plain = AESGCM(key).decrypt(nonce, body, event_id.bytes)
    except InvalidTag:
        raise Unreadable(
            f"event {event_id}: sealed data does not open with its person's key"
        ) from None
    return _PERSONAL_DECODER.decode(plain)


class Unreadable(Exception):
    """Sealed data that its key does not open: altered or misplaced."""


def opened(
    data: dict[str, Any], sealed: bytes | None, key: bytes | None, event_id: uuid.UUID
) -> dict[str, Any]:
    """The data readers see: personal fields back in place, or null with
    ``"erased": true`` once the key is gone (the person was forgotten)."""
    if sealed is None:
        return data
    if key is None:
        return {**data, "display_name": None, "email": None, "erased": True}
    try:
        return {**data, **_present(unseal(sealed, key, event_id))}
    except Unreadable:
        # Altered behind the application's back (the digest shows it): one bad
        # event must not make the whole log unreadable.
        return {**data, "display_name": None, "email": None, "unreadable": True}


def _present(personal: PersonalData) -> dict[str, Any]:
    """Only the fields the event carried (a registration without an email has none)."""
    return {k: v for k, v in msgspec.structs.asdict(personal).items() if v is not None}


def restored(
    data: dict[str, Any],
    sealed: bytes | None,
    key: bytes | None,
    event_id: uuid.UUID,
    claimed: dict[str, Any],
) -> dict[str, Any]:
    """Stored data in the shape a retried event claims, for the idempotency check.

    While the key exists the plaintext is compared. Once the person is forgotten
    the erased fields can no longer be compared (that is the point of erasure),
    so the retry is judged on everything else and its personal fields are not
    stored again.
    """
    if sealed is None:
        return data
    if key is None:
        return {**data, **{k: v for k, v in claimed.items() if k in PERSONAL_FIELDS}}
    return {**data, **_present(unseal(sealed, key, event_id))}
