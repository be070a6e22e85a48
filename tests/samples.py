"""Events for tests: a short story that uses every v1 event type once or more."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.events.vocabulary import EVENT_TYPES

START = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def event(
    type_: str, data: dict[str, Any], *, at: int = 0, start: datetime = START, **envelope: Any
) -> dict[str, Any]:
    """An incoming event ``at`` hours after ``start``, with a client-chosen id."""
    return {
        "id": str(uuid.uuid4()),
        "type": type_,
        "occurred_at": (start + timedelta(hours=at)).isoformat(),
        "data": data,
        **envelope,
    }


def story() -> list[dict[str, Any]]:
    """Ana meets Ben, asks him for an introduction to Cleo, and so on.

    Ids are fresh on every call, so each call is a new story for the same people.
    """
    favor, declined, withdrawn = (f"f-{uuid.uuid4().hex[:8]}" for _ in range(3))
    offered, requested = (f"i-{uuid.uuid4().hex[:8]}" for _ in range(2))
    meeting = f"m-{uuid.uuid4().hex[:8]}"
    return [
        event(
            "person.registered",
            {"person": "ana", "display_name": "Ana", "email": "ana@example.org"},
        ),
        event(
            "meeting.held",
            {
                "meeting_id": meeting,
                "participants": ["ana", "ben"],
                "initiated_by": "ana",
                "channel": "coffee",
                "purpose": "get_to_know",
            },
            at=1,
            metadata={"correlation_id": "c-1", "actor": "app"},
        ),
        event("message.sent", {"from": "ana", "to": "ben", "kind": "thank_you"}, at=2),
        event(
            "favor.requested",
            {"favor_id": favor, "requester": "ana", "asked_of": "ben", "kind": "introduction"},
            at=3,
        ),
        event(
            "favor.granted",
            {
                "favor_id": favor,
                "giver": "ben",
                "receiver": "ana",
                "kind": "introduction",
                "weight": 3,
            },
            at=4,
        ),
        event(
            "favor.requested",
            {"favor_id": declined, "requester": "ana", "asked_of": "cleo", "kind": "advice"},
            at=5,
        ),
        event("favor.declined", {"favor_id": declined, "by": "cleo"}, at=6),
        event(
            "favor.requested",
            {
                "favor_id": withdrawn,
                "requester": "ana",
                "asked_of": "ben",
                "kind": "review",
                "offers_in_return": "lunch",
            },
            at=7,
        ),
        event("favor.withdrawn", {"favor_id": withdrawn, "by": "ana"}, at=8),
        event(
            "introduction.offered",
            {"introduction_id": offered, "introducer": "ben", "subject": "ana", "target": "cleo"},
            at=9,
        ),
        event("introduction.consented", {"introduction_id": offered, "party": "ana"}, at=10),
        event("introduction.consented", {"introduction_id": offered, "party": "cleo"}, at=11),
        event(
            "introduction.made",
            {"introduction_id": offered, "introducer": "ben", "subject": "ana", "target": "cleo"},
            at=12,
        ),
        event(
            "introduction.requested",
            {
                "introduction_id": requested,
                "requester": "ana",
                "introducer": "ben",
                "target": "dev",
            },
            at=13,
        ),
        event(
            "name.invoked",
            {"invoker": "ana", "referrer": "ben", "contacted": "dev", "consent": "not_given"},
            at=14,
        ),
        event("gratitude.expressed", {"from": "ana", "to": "ben"}, at=15),
        event("policy.changed", {"dormancy_days": 200, "weights": {"advice": 1.5}}, at=16),
        event("person.forgotten", {"person": "ana"}, at=17),
    ]


assert {e["type"] for e in story()} == set(EVENT_TYPES), "the story must use every type"
