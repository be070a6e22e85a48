"""The pure audit core: canonical digests and sealing, without a database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ledger.audit.digest import EMPTY, Chain, Digested, canonical
from ledger.audit.erasure import PersonalData, Unreadable, new_key, opened, seal, split, unseal

AT = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def an_event(**changes: object) -> Digested:
    fields: dict[str, object] = {
        "id": uuid.UUID(int=1),
        "type": "favor.granted",
        "stream": "favor-f-1",
        "version": 2,
        "occurred_at": AT,
        "data": {"favor_id": "f-1", "giver": "ben", "receiver": "ana", "kind": "advice"},
        "metadata": {"actor": "app"},
    }
    fields.update(changes)
    return Digested(**fields)  # type: ignore[arg-type]


def chain_of(*events: Digested) -> str:
    chain = Chain()
    for event in events:
        chain.add(event)
    return chain.hex


def test_the_encoding_ignores_key_order_and_time_zones() -> None:
    reordered = an_event(
        data={"kind": "advice", "receiver": "ana", "giver": "ben", "favor_id": "f-1"}
    )
    lisbon_noon = an_event(occurred_at=AT.astimezone(timezone(timedelta(hours=2))))
    assert canonical(reordered) == canonical(an_event()) == canonical(lisbon_noon)
    assert b'"occurred_at":"2026-03-01T09:30:00Z"' in canonical(an_event())


def test_every_covered_field_and_the_order_change_the_chain() -> None:
    base = chain_of(an_event(), an_event(id=uuid.UUID(int=2), version=3))
    assert base != EMPTY
    for changed in (
        an_event(id=uuid.UUID(int=3)),
        an_event(type="favor.declined"),
        an_event(stream="favor-f-2"),
        an_event(version=1),
        an_event(occurred_at=AT + timedelta(microseconds=1)),
        an_event(data={"favor_id": "f-1"}),
        an_event(metadata={}),
        an_event(sealed=b"\x01"),
    ):
        assert chain_of(changed, an_event(id=uuid.UUID(int=2), version=3)) != base
    assert chain_of(an_event(id=uuid.UUID(int=2), version=3), an_event()) != base


def test_sealed_data_opens_only_with_its_key_and_for_its_event() -> None:
    key, event_id = new_key(), uuid.uuid4()
    kept, personal = split({"person": "ana", "display_name": "Ana", "email": "ana@example.org"})
    assert kept == {"person": "ana"}
    sealed = seal(personal, key, event_id)
    assert b"ana@example.org" not in sealed
    assert unseal(sealed, key, event_id) == PersonalData("Ana", "ana@example.org")
    assert opened(kept, sealed, key, event_id) == {
        "person": "ana",
        "display_name": "Ana",
        "email": "ana@example.org",
    }
    with pytest.raises(Unreadable):
        unseal(sealed, new_key(), event_id)
    with pytest.raises(Unreadable):
        unseal(sealed, key, uuid.uuid4())  # moved onto another event
    with pytest.raises(Unreadable):
        unseal(b"\x02" + sealed[1:], key, event_id)
    assert opened(kept, sealed, None, event_id)["erased"] is True
