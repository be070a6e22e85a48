"""Lifecycles of the things that have one: favors, introductions, meetings, people.

Pure functions of a stream's earlier events and the event that would follow
them. The store calls :func:`refusal` for every appended event, inside the
transaction that writes it, with the stream's history as read in that same
transaction; a concurrent writer to the same stream loses on the
``(tenant_id, stream, version)`` constraint and is checked again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from ledger.events.vocabulary import (
    EventData,
    FavorDeclined,
    FavorGranted,
    FavorRequested,
    FavorWithdrawn,
    IntroductionConsented,
    IntroductionMade,
    IntroductionOffered,
    IntroductionRequested,
    MeetingHeld,
    PersonForgotten,
    PersonRegistered,
    Problem,
)

# Streams whose history a new event must be checked against. Other streams
# (a person's messages, the policy) only need their current version.
LIFECYCLE_PREFIXES: Final = ("favor-", "introduction-", "meeting-", "person-")


def has_lifecycle(stream: str) -> bool:
    return stream.startswith(LIFECYCLE_PREFIXES)


def refusal(history: Sequence[EventData], event: EventData) -> Problem | None:
    """Return why ``event`` cannot follow ``history`` in its stream, or None."""
    match event:
        case FavorRequested():
            return _favor_started_once(history, event.favor_id)
        case FavorGranted():
            return _favor_grant(history, event)
        case FavorDeclined() | FavorWithdrawn():
            return _favor_closed(history, event)
        case IntroductionOffered() | IntroductionRequested():
            if history:
                return Problem(
                    "data.introduction_id",
                    f"introduction {event.introduction_id!r} already exists; "
                    "use a new introduction_id",
                )
        case IntroductionConsented():
            return _introduction_consent(history, event)
        case IntroductionMade():
            return _introduction_made(history, event)
        case MeetingHeld():
            if history:
                return Problem(
                    "data.meeting_id",
                    f"meeting {event.meeting_id!r} is already recorded; a meeting is held once",
                )
        case PersonRegistered():
            for earlier in history:
                if isinstance(earlier, PersonForgotten):
                    return Problem(
                        "data.person",
                        f"{event.person!r} was forgotten; a forgotten person's id is not reused",
                    )
                if isinstance(earlier, PersonRegistered):
                    return Problem("data.person", f"{event.person!r} is already registered")
        case PersonForgotten():
            if any(isinstance(earlier, PersonForgotten) for earlier in history):
                return Problem("data.person", f"{event.person!r} is already forgotten")
    return None


def _favor_started_once(history: Sequence[EventData], favor_id: str) -> Problem | None:
    if history:
        return Problem(
            "data.favor_id",
            f"favor {favor_id!r} already exists; a new request needs a new favor_id",
        )
    return None


def _favor_end(history: Sequence[EventData]) -> str | None:
    """How the favor ended, if it did: granted, declined or withdrawn."""
    for earlier in history:
        if isinstance(earlier, FavorGranted):
            return f"was already granted by {earlier.giver!r}"
        if isinstance(earlier, FavorDeclined):
            return f"was declined by {earlier.by!r}"
        if isinstance(earlier, FavorWithdrawn):
            return f"was withdrawn by {earlier.by!r}"
    return None


def _request_of(history: Sequence[EventData]) -> FavorRequested | None:
    for earlier in history:
        if isinstance(earlier, FavorRequested):
            return earlier
    return None


def _favor_grant(history: Sequence[EventData], grant: FavorGranted) -> Problem | None:
    ended = _favor_end(history)
    if ended is not None:
        return Problem("data.favor_id", f"favor {grant.favor_id!r} {ended}; it cannot be granted")
    request = _request_of(history)
    if request is not None and (grant.giver, grant.receiver) != (
        request.asked_of,
        request.requester,
    ):
        return Problem(
            "data.giver",
            f"favor {grant.favor_id!r} was asked of {request.asked_of!r} by "
            f"{request.requester!r}; only {request.asked_of!r} can grant it, "
            f"to {request.requester!r}",
        )
    return None


def _favor_closed(
    history: Sequence[EventData], event: FavorDeclined | FavorWithdrawn
) -> Problem | None:
    verb = "declined" if isinstance(event, FavorDeclined) else "withdrawn"
    request = _request_of(history)
    if request is None:
        return Problem(
            "data.favor_id", f"favor {event.favor_id!r} was never requested, so it cannot be {verb}"
        )
    ended = _favor_end(history)
    if ended is not None:
        return Problem("data.favor_id", f"favor {event.favor_id!r} {ended}; it cannot be {verb}")
    entitled = request.asked_of if isinstance(event, FavorDeclined) else request.requester
    if event.by != entitled:
        role = "the person asked" if isinstance(event, FavorDeclined) else "the requester"
        return Problem(
            "data.by", f"only {role}, {entitled!r}, can have favor {event.favor_id!r} {verb}"
        )
    return None


def _introduction_parties(history: Sequence[EventData]) -> tuple[str, str, str] | None:
    """(introducer, subject, target) as the introduction's first event set them."""
    for earlier in history:
        if isinstance(earlier, IntroductionOffered | IntroductionMade):
            return earlier.introducer, earlier.subject, earlier.target
        if isinstance(earlier, IntroductionRequested):
            return earlier.introducer, earlier.requester, earlier.target
    return None


def _introduction_consent(
    history: Sequence[EventData], consent: IntroductionConsented
) -> Problem | None:
    parties = _introduction_parties(history)
    if parties is None:
        return Problem(
            "data.introduction_id",
            f"introduction {consent.introduction_id!r} was never offered or requested",
        )
    if any(isinstance(earlier, IntroductionMade) for earlier in history):
        return Problem(
            "data.introduction_id", f"introduction {consent.introduction_id!r} is already made"
        )
    _, subject, target = parties
    if consent.party not in (subject, target):
        return Problem(
            "data.party",
            f"{consent.party!r} is not a party to introduction {consent.introduction_id!r} "
            f"(the parties are {subject!r} and {target!r})",
        )
    if any(isinstance(e, IntroductionConsented) and e.party == consent.party for e in history):
        return Problem("data.party", f"{consent.party!r} has already consented")
    return None


def _introduction_made(history: Sequence[EventData], made: IntroductionMade) -> Problem | None:
    if any(isinstance(earlier, IntroductionMade) for earlier in history):
        return Problem(
            "data.introduction_id",
            f"introduction {made.introduction_id!r} is already made; an introduction is made once",
        )
    parties = _introduction_parties(history)
    if parties is not None and parties != (made.introducer, made.subject, made.target):
        introducer, subject, target = parties
        return Problem(
            "data.subject",
            f"introduction {made.introduction_id!r} was set up as {introducer!r} introducing "
            f"{subject!r} to {target!r}; it must be made between the same people",
        )
    return None
