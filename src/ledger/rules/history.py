"""What the etiquette rules remember: facts about pairs of people, in time order.

Every event leaves *facts* on the pairs of people it involves (a contact, a
favor granted by one to the other, an offer to introduce, ...). A rule looks
only at the facts of the pairs among the people of the event it judges, as
they stood just before that event in ``occurred_at`` order (ties by position).

That locality is what makes late arrivals cheap and exact: a back-filled event
can only change the verdict on later events that have facts on the same pairs,
so the projector re-judges those and nothing else. To keep that true, an event
leaves at least a ``marker`` fact on every pair a rule reads for it (a name
invoked reads referrer-contacted, who had no contact in it).

Pure: the live projector loads facts from PostgreSQL, a rebuild derives them
from the log, and both feed :meth:`History.observe` with the same facts.
"""

from __future__ import annotations

import uuid
from bisect import bisect_left, bisect_right, insort_right
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from operator import attrgetter
from typing import Final, Literal

import msgspec

from ledger.events.vocabulary import (
    FavorDeclined,
    FavorGranted,
    FavorRequested,
    GratitudeExpressed,
    IntroductionConsented,
    IntroductionMade,
    IntroductionOffered,
    IntroductionRequested,
    MeetingHeld,
    MessageSent,
    NameInvoked,
)
from ledger.projections.core import Parties, ProjectedEvent, counterpart, key

FactKind = Literal["contact", "granted", "asked", "met", "offered", "introduced", "marker"]

# Asks that use a person as a way to reach others (E109).
CONDUIT_KINDS: Final = frozenset({"introduction", "contacts"})


class Fact(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One thing an event says about a pair: ``actor`` did ``kind`` towards ``other``.

    ``detail`` qualifies it: the favor's kind, the meeting's purpose, the role
    (subject or target) of the person an introduction was offered about.
    """

    kind: FactKind
    actor: str
    other: str
    occurred_at: datetime
    position: int
    event_id: uuid.UUID
    stream: str
    detail: str = ""

    @property
    def pair(self) -> tuple[str, str]:
        return key(self.actor, self.other)

    @property
    def order(self) -> tuple[datetime, int]:
        return (self.occurred_at, self.position)


def facts_of(event: ProjectedEvent, parties: Mapping[str, Parties]) -> list[Fact]:
    """The facts ``event`` leaves; ``parties`` resolves one-person steps (a decline)."""
    data = event.data
    said: list[tuple[FactKind, str, str, str]] = []

    def contact(x: str, y: str) -> None:
        said.append(("contact", x, y, ""))

    match data:
        case MeetingHeld():
            for i, x in enumerate(data.participants):
                for y in data.participants[i + 1 :]:
                    contact(x, y)
            for other in data.participants:
                if other != data.initiated_by:
                    said.append(("met", data.initiated_by, other, data.purpose))
        case MessageSent() | GratitudeExpressed():
            contact(data.from_, data.to)
        case FavorRequested():
            contact(data.requester, data.asked_of)
            said.append(("asked", data.requester, data.asked_of, data.kind))
        case FavorGranted():
            contact(data.giver, data.receiver)
            said.append(("granted", data.giver, data.receiver, data.kind))
        case FavorDeclined() | IntroductionConsented():
            peer = counterpart(data, parties)
            if peer is not None:
                contact(data.by if isinstance(data, FavorDeclined) else data.party, peer)
        case IntroductionOffered():
            contact(data.introducer, data.subject)
            said.append(("offered", data.introducer, data.subject, "subject"))
            said.append(("offered", data.introducer, data.target, "target"))
        case IntroductionRequested():
            contact(data.requester, data.introducer)
            said.append(("asked", data.requester, data.introducer, "introduction"))
        case IntroductionMade():
            contact(data.introducer, data.subject)
            contact(data.introducer, data.target)
            contact(data.subject, data.target)
            said.append(("introduced", data.introducer, data.subject, "subject"))
            said.append(("introduced", data.introducer, data.target, "target"))
        case NameInvoked():
            contact(data.invoker, data.contacted)
            said.append(("marker", data.referrer, data.contacted, data.consent))
    stream = data.stream()
    return [
        Fact(kind, actor, other, event.occurred_at, event.position, event.id, stream, detail)
        for kind, actor, other, detail in said
        if actor != other
    ]


class _PairFacts:
    """One pair's facts, kept by kind and actor so a rule's question is a lookup."""

    __slots__ = ("all", "by_kind")

    def __init__(self) -> None:
        self.all: list[Fact] = []
        self.by_kind: dict[tuple[str, str], list[Fact]] = {}


_NONE: Final[list[Fact]] = []


_order = attrgetter("order")  # the key Fact.order, for bisect


class History:
    """Facts per pair, kept in valid-time order; what rules read.

    Only pairs whose facts were observed are known; the projector makes sure
    every pair a judged event reads was loaded in full. Answers are lists in
    valid-time order, not copies: rules read them, never change them.

    A history may hold facts later than the event being judged (the live
    projector keeps pair histories between batches, and a late event lands
    before facts it already has): :meth:`before` is the same history seen from
    a moment, which is what a rule must be shown.
    """

    def __init__(
        self,
        pairs: dict[tuple[str, str], _PairFacts] | None = None,
        until: tuple[datetime, int] | None = None,
    ) -> None:
        self._pairs: dict[tuple[str, str], _PairFacts] = {} if pairs is None else pairs
        self._until = until
        self.size = 0

    def before(self, moment: tuple[datetime, int]) -> History:
        """This history as it stood just before ``moment`` (occurred_at, position):
        a view to read, sharing this history's facts (observe on the history)."""
        return History(self._pairs, moment)

    def observe(self, facts: Iterable[Fact]) -> None:
        """Add facts; in valid-time order they are appended, a late one is slotted in."""
        for fact in facts:
            pair = self._pairs.get(fact.pair)
            if pair is None:
                pair = self._pairs[fact.pair] = _PairFacts()
            actor = "" if fact.kind == "contact" else fact.actor
            of_kind = pair.by_kind.setdefault((fact.kind, actor), [])
            last = pair.all[-1] if pair.all else None
            if last is None or (last.occurred_at, last.position) <= (
                fact.occurred_at,
                fact.position,
            ):
                pair.all.append(fact)  # the usual case, and the only one in a replay
                of_kind.append(fact)
            else:
                insort_right(pair.all, fact, key=_order)
                insort_right(of_kind, fact, key=_order)
            self.size += 1

    def knows(self, pair: tuple[str, str]) -> bool:
        return pair in self._pairs

    def forget(self, pair: tuple[str, str]) -> None:
        """Drop a pair's facts (it must be observed in full again before it is read)."""
        dropped = self._pairs.pop(pair, None)
        if dropped is not None:
            self.size -= len(dropped.all)

    def after(self, pair: tuple[str, str], moment: tuple[datetime, int]) -> Sequence[Fact]:
        """The pair's facts later than ``moment``: what a late event there may change."""
        facts = self._pairs.get(pair)
        if facts is None:
            return _NONE
        return facts.all[bisect_right(facts.all, moment, key=_order) :]

    def _seen(self, facts: list[Fact]) -> Sequence[Fact]:
        until = self._until
        if until is None or not facts or _order(facts[-1]) < until:
            return facts
        return facts[: bisect_left(facts, until, key=_order)]

    def between(self, x: str, y: str) -> Sequence[Fact]:
        pair = self._pairs.get(key(x, y))
        return _NONE if pair is None else self._seen(pair.all)

    # What rules ask, in the domain's words.

    def contacts(self, x: str, y: str) -> Sequence[Fact]:
        pair = self._pairs.get(key(x, y))
        return _NONE if pair is None else self._seen(pair.by_kind.get(("contact", ""), _NONE))

    def last_contact_by(self, x: str, y: str, moment: datetime) -> Fact | None:
        """The latest contact between x and y at or before ``moment``."""
        contacts = self.contacts(x, y)
        index = bisect_right(contacts, moment, key=lambda f: f.occurred_at)
        return contacts[index - 1] if index else None

    def done(self, kind: FactKind, actor: str, other: str) -> Sequence[Fact]:
        """Facts of ``kind`` where ``actor`` acted towards ``other``."""
        pair = self._pairs.get(key(actor, other))
        return _NONE if pair is None else self._seen(pair.by_kind.get((kind, actor), _NONE))

    def granted(self, giver: str, receiver: str) -> Sequence[Fact]:
        return self.done("granted", giver, receiver)

    def is_connection(self, x: str, y: str) -> bool:
        """Help has flowed both ways: each has granted the other at least one favor.

        (Dormancy is not considered here: silence has a rule of its own, E107.)
        """
        return bool(self.granted(x, y)) and bool(self.granted(y, x))
