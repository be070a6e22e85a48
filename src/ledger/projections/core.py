"""The pure core of the network projections: what each event does to whom.

Everything derived here is a commutative monoid, so the result does not
depend on the order events arrive in (PRODUCT.md section 3: an app back-fills
last year's meetings and the numbers must come out as if it had not):

- a :class:`Pair` is what two people's relationship sums to: weights given
  each way, favors counted each way, contacts counted by kind, first and last
  contact (min and max), and strength as a log-sum of exponentially decayed
  contacts (``log2 Σ 2^((t - EPOCH) / half_life)``, read back at any time T as
  ``2^(strength_log2 - (T - EPOCH) / half_life)``);
- :func:`merge` combines two pairs; one event's contribution is itself a pair.

:class:`Fold` applies events one at a time. The live projector (PostgreSQL
rows) and every replay (memory) run this same fold; only storage differs.
What is not commutative is the policy (weights and half-life): the projector
re-derives a tenant whenever its policy changes (rare, and then correct).
"""

from __future__ import annotations

import math
import uuid
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from itertools import combinations
from typing import Any, Final

import msgspec

from ledger.events.vocabulary import (
    EventData,
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
    PolicyChanged,
)
from ledger.policy import Policy

EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)
SECONDS_PER_DAY: Final = 86400.0


class ProjectedEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as the projector sees it: decoded data and its place in the log."""

    id: uuid.UUID
    type: str
    occurred_at: datetime
    tx_id: int
    position: int
    data: EventData


class Pair(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Two people's relationship, ``a`` < ``b``; ``ab`` fields are from a to b."""

    given_ab: float = 0.0
    given_ba: float = 0.0
    favors_ab: int = 0
    favors_ba: int = 0
    contacts: int = 0
    first_contact: datetime | None = None
    last_contact: datetime | None = None
    strength_log2: float = -math.inf
    counts: dict[str, int] = msgspec.field(default_factory=dict)


EMPTY: Final = Pair()


def merge(p: Pair, q: Pair) -> Pair:
    """The monoid: associative, commutative, with :data:`EMPTY` as identity."""
    counts = dict(p.counts)
    for kind, n in q.counts.items():
        counts[kind] = counts.get(kind, 0) + n
    return Pair(
        given_ab=p.given_ab + q.given_ab,
        given_ba=p.given_ba + q.given_ba,
        favors_ab=p.favors_ab + q.favors_ab,
        favors_ba=p.favors_ba + q.favors_ba,
        contacts=p.contacts + q.contacts,
        first_contact=_earliest(p.first_contact, q.first_contact),
        last_contact=_latest(p.last_contact, q.last_contact),
        strength_log2=_log2_add(p.strength_log2, q.strength_log2),
        counts=counts,
    )


def _earliest(x: datetime | None, y: datetime | None) -> datetime | None:
    return y if x is None else x if y is None else min(x, y)


def _latest(x: datetime | None, y: datetime | None) -> datetime | None:
    return y if x is None else x if y is None else max(x, y)


def _log2_add(x: float, y: float) -> float:
    high, low = max(x, y), min(x, y)
    if low == -math.inf:
        return high
    return high + math.log2(1.0 + 2.0 ** (low - high))


def strength_at(pair: Pair, when: datetime, half_life_days: float) -> float:
    """Recency-decayed contacts: each contact counts 1 now, 1/2 a half-life ago, ..."""
    if pair.strength_log2 == -math.inf:
        return 0.0
    age = (when - EPOCH).total_seconds() / SECONDS_PER_DAY / half_life_days
    return float(2.0 ** (pair.strength_log2 - age))


def key(x: str, y: str) -> tuple[str, str]:
    return (x, y) if x < y else (y, x)


# Who a favor or an introduction is between, remembered from its first event
# so that later steps (a decline, a consent) that name only one person count
# as contact with the right other one.
Parties = tuple[str, ...]


# Each stream-opening event type and whom it says the stream is between.
_OPENED_BETWEEN: Final[dict[type[EventData], Callable[[Any], Parties]]] = {
    FavorRequested: lambda data: (data.requester, data.asked_of),
    IntroductionOffered: lambda data: (data.introducer, data.subject, data.target),
    IntroductionRequested: lambda data: (data.introducer, data.requester, data.target),
}

OPENING_TYPES: Final = tuple(t.type_name for t in _OPENED_BETWEEN)
"""The event types :func:`parties_set_by` answers for: what a reader of parties
alone needs from the log."""


def parties_set_by(data: EventData) -> tuple[str, Parties] | None:
    """The stream and parties an event opens (a request, an offer), if any."""
    between = _OPENED_BETWEEN.get(type(data))
    return None if between is None else (data.stream(), between(data))


def counterpart(data: EventData, parties: Mapping[str, Parties]) -> str | None:
    """Who a one-person step is with: a decline's requester, a consent's introducer."""
    match data:
        case FavorDeclined():
            requester = parties.get(data.stream(), (None,))[0]
            return requester if requester != data.by else None
        case IntroductionConsented():
            introducer = parties.get(data.stream(), (None,))[0]
            return introducer if introducer != data.party else None
    return None


class Contribution(msgspec.Struct, frozen=True):
    pairs: list[tuple[tuple[str, str], Pair]]
    people: list[str]


def contribution(
    event: ProjectedEvent, parties: Mapping[str, Parties], policy: Policy, half_life_days: float
) -> tuple[Contribution, tuple[str, Parties] | None]:
    """What ``event`` adds to each pair it touches, and the parties it sets up.

    Weights come from ``policy`` (the one in force when the event happened);
    strength uses one half-life for the whole history (the latest policy's).
    """
    data = event.data
    at = event.occurred_at
    kind = event.type
    contacts: list[tuple[str, str]] = []
    flow: tuple[str, str, float] | None = None
    new_parties = parties_set_by(data)
    match data:
        case MeetingHeld():
            contacts = list(combinations(data.participants, 2))
        case MessageSent() | GratitudeExpressed():
            contacts = [(data.from_, data.to)]
        case FavorRequested():
            contacts = [(data.requester, data.asked_of)]
        case FavorGranted():
            contacts = [(data.giver, data.receiver)]
            flow = (data.giver, data.receiver, policy.weight_of(data.kind, data.weight))
        case FavorDeclined():
            if (requester := counterpart(data, parties)) is not None:
                contacts = [(data.by, requester)]
        case IntroductionOffered():
            contacts = [(data.introducer, data.subject)]
        case IntroductionRequested():
            contacts = [(data.requester, data.introducer)]
        case IntroductionConsented():
            if (introducer := counterpart(data, parties)) is not None:
                contacts = [(introducer, data.party)]
        case IntroductionMade():
            contacts = [
                (data.introducer, data.subject),
                (data.introducer, data.target),
                (data.subject, data.target),
            ]
        case NameInvoked():
            contacts = [(data.invoker, data.contacted)]
    one = Pair(
        contacts=1,
        first_contact=at,
        last_contact=at,
        strength_log2=(at - EPOCH).total_seconds() / SECONDS_PER_DAY / half_life_days,
        counts={kind: 1},
    )
    deltas: dict[tuple[str, str], Pair] = {}
    for x, y in contacts:
        if x != y:
            deltas[key(x, y)] = one
    if flow is not None:
        giver, receiver, weight = flow
        a, _ = pair_key = key(giver, receiver)
        given = (
            Pair(given_ab=weight, favors_ab=1) if giver == a else Pair(given_ba=weight, favors_ba=1)
        )
        deltas[pair_key] = merge(deltas.get(pair_key, EMPTY), given)
    people = sorted({*data.people(), *(p for pair in deltas for p in pair)})
    return Contribution(pairs=list(deltas.items()), people=people), new_parties


class PolicyTimeline:
    """Which policy held at each moment, by ``occurred_at`` (ties by position)."""

    def __init__(self, changes: Iterable[ProjectedEvent] = ()) -> None:
        ordered = sorted(
            (c for c in changes if isinstance(c.data, PolicyChanged)),
            key=lambda c: (c.occurred_at, c.position),
        )
        self._since: list[datetime] = []
        self._ids: list[uuid.UUID] = []
        self._policies: list[Policy] = [Policy()]
        for change in ordered:
            assert isinstance(change.data, PolicyChanged)
            self._since.append(change.occurred_at)
            self._ids.append(change.id)
            self._policies.append(self._policies[-1].changed(change.data))

    def at(self, when: datetime) -> Policy:
        return self._policies[bisect_right(self._since, when)]

    def version_at(self, when: datetime) -> tuple[int, uuid.UUID | None]:
        """Which policy held at ``when``: how many changes had happened (0: the
        defaults) and the id of the latest one, so an audit can name it."""
        version = bisect_right(self._since, when)
        return version, self._ids[version - 1] if version else None

    def overridden(self, change: PolicyChanged) -> PolicyTimeline:
        """This timeline with ``change`` laid over every policy in it: what-if
        replays keep the tenant's history and vary only the fields named."""
        copy = PolicyTimeline()
        copy._since = list(self._since)
        copy._ids = list(self._ids)
        copy._policies = [policy.changed(change) for policy in self._policies]
        return copy

    def latest(self) -> Policy:
        return self._policies[-1]


class TimelineEntry(msgspec.Struct, frozen=True, gc=False):
    occurred_at: datetime
    position: int
    event_id: uuid.UUID


class Fold:
    """Events applied in log order to pairs, parties and timelines.

    The live projector loads the parties it needs and folds a batch into pair
    *deltas* (then merges them into the stored rows); a rebuild folds a whole
    tenant from nothing. Both call :meth:`apply`.
    """

    def __init__(self, policies: PolicyTimeline, parties: Mapping[str, Parties] | None = None):
        self.policies = policies
        self._latest_half_life = policies.latest().strength_half_life_days
        self.parties: dict[str, Parties] = dict(parties or {})
        self.new_parties: dict[str, Parties] = {}
        self.pairs: dict[tuple[str, str], Pair] = {}
        self.person_timeline: list[tuple[str, TimelineEntry]] = []
        self.pair_timeline: list[tuple[tuple[str, str], TimelineEntry]] = []

    def apply(self, event: ProjectedEvent) -> None:
        policy = self.policies.at(event.occurred_at)
        added, parties = contribution(event, self.parties, policy, self._latest_half_life)
        if parties is not None:
            stream, who = parties
            self.parties[stream] = who
            self.new_parties[stream] = who
        entry = TimelineEntry(event.occurred_at, event.position, event.id)
        for pair_key, delta in added.pairs:
            self.pairs[pair_key] = merge(self.pairs.get(pair_key, EMPTY), delta)
            self.pair_timeline.append((pair_key, entry))
        for person in added.people:
            self.person_timeline.append((person, entry))

    def apply_all(self, events: Iterable[ProjectedEvent]) -> None:
        for event in events:
            self.apply(event)


def streams_needing_parties(events: Iterable[ProjectedEvent]) -> Iterator[str]:
    """Streams whose parties a batch needs from earlier batches."""
    for event in events:
        if isinstance(event.data, FavorDeclined | IntroductionConsented):
            yield event.data.stream()
