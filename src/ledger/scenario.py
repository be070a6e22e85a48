"""Realistic generated networks, shared by the tests and the benchmarks.

Activity is skewed the way real networks are (a few people do most of the
meeting, asking and helping: Zipf-like weights), every v1 event type occurs,
lifecycles are valid in generation order (a favor is requested before it is
granted or declined), and some events are back-filled (dated before events
generated earlier), as apps that import history do.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any, get_args

import msgspec

from ledger.events.vocabulary import EVENT_TYPES, FavorKind

START = datetime(2023, 1, 1, tzinfo=UTC)

_FAVOR_KINDS = get_args(FavorKind)


class Generated(msgspec.Struct, frozen=True):
    """One event as the API takes it (``wire``) plus its stream, for bulk loading."""

    wire: dict[str, Any]
    stream: str
    people: list[str]


class Scenario:
    """``Scenario(people=1000, seed=1).events(100_000)`` yields a history, lazily."""

    def __init__(self, *, people: int = 1000, seed: int = 1, days: int = 1000) -> None:
        self.rng = random.Random(seed)
        self.people = [f"u{n}" for n in range(people)]
        self.cumulative = list(accumulate(1.0 / (rank + 1) ** 0.8 for rank in range(people)))
        self.days = days
        self._open_favors: list[tuple[str, str, str, str]] = []
        self._open_intros: list[tuple[str, str, str, str]] = []
        self._consents: dict[str, set[str]] = {}
        self._registered: set[str] = set()
        self._forgotten: set[str] = set()
        self._n = 0

    def _someone(self) -> str:
        return self.rng.choices(self.people, cum_weights=self.cumulative)[0]

    def _two(self) -> tuple[str, str]:
        a = self._someone()
        b = self._someone()
        while b == a:
            b = self.rng.choice(self.people)
        return a, b

    def _three(self) -> tuple[str, str, str]:
        a, b = self._two()
        c = self._someone()
        while c in (a, b):
            c = self.rng.choice(self.people)
        return a, b, c

    def _id(self) -> str:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4).hex[:12]

    def _when(self, progress: float) -> datetime:
        """Mostly forward in time; one event in ten is back-filled into the past."""
        day = progress * self.days
        if self.rng.random() < 0.1:
            day = self.rng.uniform(0, day)
        return START + timedelta(days=day, seconds=self.rng.randrange(86400))

    def events(self, count: int) -> Iterator[Generated]:
        """``count`` events; the tenant's policy changes twice along the way (rarely, as
        in life: each change re-derives a tenant's projections)."""
        changes = {count // 3, 2 * count // 3}
        for i in range(count):
            progress = i / max(count, 1)
            if i in changes:
                yield self._policy_change(progress)
            else:
                yield self._next(progress)

    def _policy_change(self, progress: float) -> Generated:
        return self._make(
            "policy.changed",
            {"dormancy_days": self.rng.choice([270, 500]), "weights": {"advice": 1.5}},
            self._when(progress),
        )

    def _next(self, progress: float) -> Generated:
        self._n += 1
        at = self._when(progress)
        roll = self.rng.random()
        if roll < 0.22:
            a, b = self._two()
            return self._make(
                "message.sent",
                {
                    "from": a,
                    "to": b,
                    "kind": self.rng.choice(
                        ["check_in", "follow_up", "thank_you", "reply", "other"]
                    ),
                },
                at,
            )
        if roll < 0.38:
            size = self.rng.choice([2, 2, 2, 3, 4])
            people = [self._someone() for _ in range(size)]
            people = list(dict.fromkeys(people))
            if len(people) < 2:
                people = list(self._two())
            meeting = self._id()
            return self._make(
                "meeting.held",
                {
                    "meeting_id": meeting,
                    "participants": people,
                    "initiated_by": people[0],
                    "channel": self.rng.choice(
                        ["coffee", "call", "video", "meal", "event", "chance"]
                    ),
                    "purpose": self.rng.choice(
                        ["get_to_know", "catch_up", "advice", "pitch", "resume_review", "other"]
                    ),
                },
                at,
            )
        if roll < 0.52:
            a, b = self._two()
            favor, kind = self._id(), self.rng.choice(_FAVOR_KINDS)
            self._open_favors.append((favor, a, b, kind))
            data: dict[str, Any] = {"favor_id": favor, "requester": a, "asked_of": b, "kind": kind}
            if self.rng.random() < 0.1:
                data["offers_in_return"] = "a coffee"
            return self._make("favor.requested", data, at)
        if roll < 0.66 and self._open_favors:
            favor, requester, asked, kind = self._open_favors.pop(
                self.rng.randrange(len(self._open_favors))
            )
            ending = self.rng.random()
            if ending < 0.75:
                return self._make(
                    "favor.granted",
                    {
                        "favor_id": favor,
                        "giver": asked,
                        "receiver": requester,
                        "kind": kind,
                    },
                    at,
                )
            if ending < 0.9:
                return self._make("favor.declined", {"favor_id": favor, "by": asked}, at)
            return self._make("favor.withdrawn", {"favor_id": favor, "by": requester}, at)
        if roll < 0.72:
            a, b = self._two()
            favor = self._id()
            return self._make(
                "favor.granted",
                {
                    "favor_id": favor,
                    "giver": a,
                    "receiver": b,
                    "kind": self.rng.choice(_FAVOR_KINDS),
                    "expects_return": self.rng.random() < 0.1,
                },
                at,
            )
        if roll < 0.80:
            introducer, subject, target = self._three()
            intro = self._id()
            self._open_intros.append((intro, introducer, subject, target))
            if self.rng.random() < 0.6:
                return self._make(
                    "introduction.offered",
                    {
                        "introduction_id": intro,
                        "introducer": introducer,
                        "subject": subject,
                        "target": target,
                    },
                    at,
                )
            return self._make(
                "introduction.requested",
                {
                    "introduction_id": intro,
                    "requester": subject,
                    "introducer": introducer,
                    "target": target,
                },
                at,
            )
        if roll < 0.86 and self._open_intros:
            which = self.rng.randrange(len(self._open_intros))
            intro, introducer, subject, target = self._open_intros[which]
            pending = [p for p in (subject, target) if p not in self._consents.get(intro, set())]
            if pending and self.rng.random() < 0.5:
                self._consents.setdefault(intro, set()).add(pending[0])
                return self._make(
                    "introduction.consented", {"introduction_id": intro, "party": pending[0]}, at
                )
            self._open_intros.pop(which)
            self._consents.pop(intro, None)
            return self._make(
                "introduction.made",
                {
                    "introduction_id": intro,
                    "introducer": introducer,
                    "subject": subject,
                    "target": target,
                },
                at,
            )
        if roll < 0.91:
            invoker, referrer, contacted = self._three()
            return self._make(
                "name.invoked",
                {
                    "invoker": invoker,
                    "referrer": referrer,
                    "contacted": contacted,
                    "consent": self.rng.choice(["given", "not_given", "unknown"]),
                },
                at,
            )
        if roll < 0.97:
            a, b = self._two()
            return self._make("gratitude.expressed", {"from": a, "to": b}, at)
        if roll < 0.995:
            person = self._someone()
            if person in self._registered or person in self._forgotten:
                a, b = self._two()
                return self._make("message.sent", {"from": a, "to": b, "kind": "other"}, at)
            self._registered.add(person)
            return self._make(
                "person.registered", {"person": person, "display_name": person.upper()}, at
            )
        if roll < 0.999 and self._registered - self._forgotten:
            person = min(self._registered - self._forgotten)
            self._forgotten.add(person)
            return self._make("person.forgotten", {"person": person}, at)
        a, b = self._two()
        return self._make("gratitude.expressed", {"from": a, "to": b}, at)

    def _make(self, type_: str, data: dict[str, Any], at: datetime) -> Generated:
        # The vocabulary itself says which stream and people an event has.
        typed = msgspec.convert(data, EVENT_TYPES[type_])
        event_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        wire = {"id": event_id, "type": type_, "occurred_at": at.isoformat(), "data": data}
        return Generated(wire=wire, stream=typed.stream(), people=sorted(set(typed.people())))
