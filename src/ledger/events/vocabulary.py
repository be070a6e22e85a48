"""The v1 event vocabulary (PRODUCT.md section 2) as msgspec types.

Each event type is one frozen Struct holding the event's ``data``. The type
knows three things about itself, so that no other module needs a table of
event types: the stream it belongs to, the people it involves, and what makes
it self-contradictory (someone introduced to themselves). Decoding is strict:
unknown fields are rejected, so a typo never becomes silently ignored data.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal
from uuid import UUID

import msgspec
from msgspec import Meta

# People and entity ids are opaque strings chosen by the app. They become part
# of stream names, so whitespace and control characters are refused.
_ID_PATTERN = r"^[^\s\x00-\x1f\x7f]+$"
Person = Annotated[str, Meta(min_length=1, max_length=200, pattern=_ID_PATTERN)]
EntityId = Annotated[str, Meta(min_length=1, max_length=200, pattern=_ID_PATTERN)]
Text = Annotated[str, Meta(max_length=1000)]

Channel = Literal["coffee", "call", "video", "meal", "event", "chance", "other"]
Purpose = Literal["get_to_know", "catch_up", "advice", "pitch", "resume_review", "other"]
MessageKind = Literal["check_in", "follow_up", "thank_you", "reply", "other"]
FavorKind = Literal[
    "introduction",
    "referral",
    "advice",
    "review",
    "resume_forward",
    "contacts",
    "endorsement",
    "money",
    "other",
]
Consent = Literal["given", "not_given", "unknown"]
Weight = Annotated[float, Meta(ge=0, le=1000)]
PositiveDays = Annotated[float, Meta(gt=0, le=36500)]
PositiveHours = Annotated[float, Meta(gt=0, le=876000)]
Count = Annotated[int, Meta(ge=1, le=1000)]


class Problem(msgspec.Struct, frozen=True):
    """A self-contradiction inside one event's data: which field, and why."""

    field: str
    message: str


class EventData(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """Base of every event's data; subclasses set ``type_name``."""

    type_name: ClassVar[str]

    def stream(self) -> str:
        raise NotImplementedError

    def people(self) -> tuple[str, ...]:
        """Everyone the event involves, for filtering the log by person."""
        raise NotImplementedError

    def problems(self) -> list[Problem]:
        """What makes this event impossible on its own, whatever came before."""
        return []


def _distinct(pairs: list[tuple[str, str]], what: str) -> list[Problem]:
    """Refuse an event whose named roles are filled by one and the same person."""
    seen: dict[str, str] = {}
    problems = []
    for field, person in pairs:
        if person in seen:
            problems.append(
                Problem(field, f"{field} is {person!r}, who is already {seen[person]}; {what}")
            )
        else:
            seen[person] = field
    return problems


class PersonRegistered(EventData, frozen=True):
    type_name: ClassVar[str] = "person.registered"
    person: Person
    display_name: Text | None = None
    email: Annotated[str, Meta(max_length=320)] | None = None

    def stream(self) -> str:
        return f"person-{self.person}"

    def people(self) -> tuple[str, ...]:
        return (self.person,)


class PersonForgotten(EventData, frozen=True):
    type_name: ClassVar[str] = "person.forgotten"
    person: Person

    def stream(self) -> str:
        return f"person-{self.person}"

    def people(self) -> tuple[str, ...]:
        return (self.person,)


class MeetingHeld(EventData, frozen=True):
    type_name: ClassVar[str] = "meeting.held"
    meeting_id: EntityId
    participants: Annotated[tuple[Person, ...], Meta(min_length=2, max_length=100)]
    initiated_by: Person
    channel: Channel
    purpose: Purpose

    def stream(self) -> str:
        return f"meeting-{self.meeting_id}"

    def people(self) -> tuple[str, ...]:
        return self.participants

    def problems(self) -> list[Problem]:
        problems = []
        seen: set[str] = set()
        for i, person in enumerate(self.participants):
            if person in seen:
                problems.append(
                    Problem(
                        f"participants[{i}]",
                        f"{person!r} is listed twice; participants must be distinct",
                    )
                )
            seen.add(person)
        if self.initiated_by not in seen:
            problems.append(
                Problem("initiated_by", f"{self.initiated_by!r} is not one of the participants")
            )
        return problems


class MessageSent(EventData, frozen=True):
    type_name: ClassVar[str] = "message.sent"
    from_: Person = msgspec.field(name="from")
    to: Person
    kind: MessageKind

    def stream(self) -> str:
        return f"messages-{self.from_}"

    def people(self) -> tuple[str, ...]:
        return (self.from_, self.to)

    def problems(self) -> list[Problem]:
        return _distinct([("from", self.from_), ("to", self.to)], "nobody messages themselves")


class FavorRequested(EventData, frozen=True):
    type_name: ClassVar[str] = "favor.requested"
    favor_id: EntityId
    requester: Person
    asked_of: Person
    kind: FavorKind
    on_behalf_of: Person | None = None
    offers_in_return: Text | None = None

    def stream(self) -> str:
        return f"favor-{self.favor_id}"

    def people(self) -> tuple[str, ...]:
        return _compact(self.requester, self.asked_of, self.on_behalf_of)

    def problems(self) -> list[Problem]:
        roles = [("requester", self.requester), ("asked_of", self.asked_of)]
        if self.on_behalf_of is not None:
            roles.append(("on_behalf_of", self.on_behalf_of))
        return _distinct(roles, "a favor is asked of someone else")


class FavorGranted(EventData, frozen=True):
    type_name: ClassVar[str] = "favor.granted"
    favor_id: EntityId
    giver: Person
    receiver: Person
    kind: FavorKind
    weight: Weight | None = None
    expects_return: bool = False

    def stream(self) -> str:
        return f"favor-{self.favor_id}"

    def people(self) -> tuple[str, ...]:
        return (self.giver, self.receiver)

    def problems(self) -> list[Problem]:
        return _distinct(
            [("giver", self.giver), ("receiver", self.receiver)],
            "nobody grants a favor to themselves",
        )


class FavorDeclined(EventData, frozen=True):
    type_name: ClassVar[str] = "favor.declined"
    favor_id: EntityId
    by: Person

    def stream(self) -> str:
        return f"favor-{self.favor_id}"

    def people(self) -> tuple[str, ...]:
        return (self.by,)


class FavorWithdrawn(EventData, frozen=True):
    type_name: ClassVar[str] = "favor.withdrawn"
    favor_id: EntityId
    by: Person

    def stream(self) -> str:
        return f"favor-{self.favor_id}"

    def people(self) -> tuple[str, ...]:
        return (self.by,)


class IntroductionOffered(EventData, frozen=True):
    type_name: ClassVar[str] = "introduction.offered"
    introduction_id: EntityId
    introducer: Person
    subject: Person
    target: Person

    def stream(self) -> str:
        return f"introduction-{self.introduction_id}"

    def people(self) -> tuple[str, ...]:
        return (self.introducer, self.subject, self.target)

    def problems(self) -> list[Problem]:
        return _introduction_roles(self.introducer, self.subject, self.target)


class IntroductionRequested(EventData, frozen=True):
    type_name: ClassVar[str] = "introduction.requested"
    introduction_id: EntityId
    requester: Person
    introducer: Person
    target: Person

    def stream(self) -> str:
        return f"introduction-{self.introduction_id}"

    def people(self) -> tuple[str, ...]:
        return (self.requester, self.introducer, self.target)

    def problems(self) -> list[Problem]:
        return _distinct(
            [
                ("introducer", self.introducer),
                ("requester", self.requester),
                ("target", self.target),
            ],
            "an introduction joins two other people",
        )


class IntroductionConsented(EventData, frozen=True):
    type_name: ClassVar[str] = "introduction.consented"
    introduction_id: EntityId
    party: Person

    def stream(self) -> str:
        return f"introduction-{self.introduction_id}"

    def people(self) -> tuple[str, ...]:
        return (self.party,)


class IntroductionMade(EventData, frozen=True):
    type_name: ClassVar[str] = "introduction.made"
    introduction_id: EntityId
    introducer: Person
    subject: Person
    target: Person

    def stream(self) -> str:
        return f"introduction-{self.introduction_id}"

    def people(self) -> tuple[str, ...]:
        return (self.introducer, self.subject, self.target)

    def problems(self) -> list[Problem]:
        return _introduction_roles(self.introducer, self.subject, self.target)


class NameInvoked(EventData, frozen=True):
    type_name: ClassVar[str] = "name.invoked"
    invoker: Person
    referrer: Person
    contacted: Person
    consent: Consent = "unknown"

    def stream(self) -> str:
        return f"names-{self.invoker}"

    def people(self) -> tuple[str, ...]:
        return (self.invoker, self.referrer, self.contacted)

    def problems(self) -> list[Problem]:
        return _distinct(
            [("invoker", self.invoker), ("referrer", self.referrer), ("contacted", self.contacted)],
            "a name is invoked by one person, to another, naming a third",
        )


class GratitudeExpressed(EventData, frozen=True):
    type_name: ClassVar[str] = "gratitude.expressed"
    from_: Person = msgspec.field(name="from")
    to: Person
    for_event: UUID | None = None

    def stream(self) -> str:
        return f"gratitude-{self.from_}"

    def people(self) -> tuple[str, ...]:
        return (self.from_, self.to)

    def problems(self) -> list[Problem]:
        return _distinct([("from", self.from_), ("to", self.to)], "gratitude goes to someone else")


class PolicyChanged(EventData, frozen=True):
    """The tenant's thresholds and weights; omitted fields keep their defaults.

    Policy is itself an event so that every replay knows which policy held at
    each moment of the log.
    """

    type_name: ClassVar[str] = "policy.changed"
    weights: dict[FavorKind, Weight] | None = None
    dormancy_days: PositiveDays | None = None
    strength_half_life_days: PositiveDays | None = None
    big_ask_window_hours: PositiveHours | None = None
    silence_days: PositiveDays | None = None
    reconnect_min_hours: PositiveHours | None = None
    conduit_window_days: PositiveDays | None = None
    conduit_min_asks: Count | None = None
    generosity_min_favors: Count | None = None
    generosity_min_span_days: PositiveDays | None = None

    def stream(self) -> str:
        return "policy"

    def people(self) -> tuple[str, ...]:
        return ()


def _compact(*people: str | None) -> tuple[str, ...]:
    return tuple(p for p in people if p is not None)


def _introduction_roles(introducer: str, subject: str, target: str) -> list[Problem]:
    if subject == target:
        return [
            Problem(
                "target", f"target is {target!r}, the subject; nobody is introduced to themselves"
            )
        ]
    return _distinct(
        [("subject", subject), ("target", target), ("introducer", introducer)],
        "the introducer is not one of the people introduced",
    )


EVENT_TYPES: dict[str, type[EventData]] = {
    cls.type_name: cls
    for cls in (
        PersonRegistered,
        PersonForgotten,
        MeetingHeld,
        MessageSent,
        FavorRequested,
        FavorGranted,
        FavorDeclined,
        FavorWithdrawn,
        IntroductionOffered,
        IntroductionRequested,
        IntroductionConsented,
        IntroductionMade,
        NameInvoked,
        GratitudeExpressed,
        PolicyChanged,
    )
}
