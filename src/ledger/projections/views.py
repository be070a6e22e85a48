"""What the projections say about people and pairs, as the API serves it.

Stored rows are the monoid sums of :mod:`ledger.projections.core`; everything
that depends on *when* you ask (stage, strength, what is overdue) is derived
here, at read time, by pure functions of a row, a moment and the policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

import msgspec

from ledger.policy import Policy, cadence_days
from ledger.projections.core import Pair, strength_at

Stage = Literal["stranger", "acquaintance", "connection", "dormant"]


class Side(msgspec.Struct, frozen=True):
    """A pair seen from one person: what they gave, what they received."""

    counterparty: str
    pair: Pair
    given: float
    received: float
    favors_given: int
    favors_received: int


def side_of(person: str, a: str, b: str, pair: Pair) -> Side:
    if person == a:
        return Side(b, pair, pair.given_ab, pair.given_ba, pair.favors_ab, pair.favors_ba)
    return Side(a, pair, pair.given_ba, pair.given_ab, pair.favors_ba, pair.favors_ab)


def stage_of(pair: Pair | None, now: datetime, policy: Policy) -> Stage:
    """stranger: no contact; connection: each has granted the other a favor;
    dormant: no contact for longer than the dormancy threshold."""
    if pair is None or pair.contacts == 0 or pair.last_contact is None:
        return "stranger"
    if now - pair.last_contact > timedelta(days=policy.dormancy_days):
        return "dormant"
    if pair.favors_ab > 0 and pair.favors_ba > 0:
        return "connection"
    return "acquaintance"


def reciprocity(given: float, received: float) -> float | None:
    """Share of what was given that has been matched: min(given, received) / given."""
    return None if given == 0 else min(given, received) / given


class Balance(msgspec.Struct, frozen=True):
    counterparty: str
    given: float
    received: float
    net: float


def balance(counterparty: str, given: float, received: float) -> Balance:
    return Balance(counterparty, given, received, given - received)


def balances(sides: Sequence[Side]) -> list[Balance]:
    """A person's balances by counterparty (code point order), leaving out the
    pairs nothing was given in: the order and rows the live read
    (:func:`ledger.projections.read.balances`) takes from its index."""
    return sorted(
        (balance(s.counterparty, s.given, s.received) for s in sides if s.given or s.received),
        key=lambda b: b.counterparty,
    )


class Relationship(msgspec.Struct, frozen=True, kw_only=True):
    a: str
    b: str
    stage: Stage
    strength: float
    first_contact_at: datetime | None
    last_contact_at: datetime | None
    given: float
    received: float
    net: float
    favors_given: int
    favors_received: int
    contacts: int
    contacts_by_type: dict[str, int]
    reciprocity: float | None
    cadence_days: float | None
    overdue_days: float | None


class PersonSummary(msgspec.Struct, frozen=True, kw_only=True):
    person: str
    relationships: int
    connections: int
    given: float
    received: float
    net: float
    favors_given: int
    favors_received: int
    reciprocity: float | None
    first_contact_at: datetime | None
    last_contact_at: datetime | None


def relationship(
    person: str, side: Side, now: datetime, policy: Policy, rank: int | None
) -> Relationship:
    """``person``'s view of one relationship; ``rank`` (by strength) sets its cadence."""
    pair = side.pair
    cadence = None if rank is None else cadence_days(rank)
    overdue = None
    if cadence is not None and pair.last_contact is not None:
        overdue = max(0.0, (now - pair.last_contact).total_seconds() / 86400.0 - cadence)
    return Relationship(
        a=person,
        b=side.counterparty,
        stage=stage_of(pair, now, policy),
        strength=strength_at(pair, now, policy.strength_half_life_days),
        first_contact_at=pair.first_contact,
        last_contact_at=pair.last_contact,
        given=side.given,
        received=side.received,
        net=side.given - side.received,
        favors_given=side.favors_given,
        favors_received=side.favors_received,
        contacts=pair.contacts,
        contacts_by_type=dict(sorted(pair.counts.items())),
        reciprocity=reciprocity(side.given, side.received),
        cadence_days=cadence,
        overdue_days=overdue,
    )


def strength_order(side: Side) -> tuple[float, str]:
    """Strongest first, then by counterparty: how a person's relationships rank.

    Strength at any moment is ``2^(strength_log2 - age)`` with one age for all
    pairs, so this is the order of strength at every moment (and stays exact
    where strengths too faded to tell apart round to 0). It is the order of the
    index the live read counts a rank over (:func:`ledger.projections.read.rank`).
    """
    return (-side.pair.strength_log2, side.counterparty)


def rank_of(sides: Sequence[Side], counterparty: str) -> int | None:
    """The rank (1 = strongest) of the relationship with ``counterparty``; None: none."""
    found = next((s for s in sides if s.counterparty == counterparty), None)
    if found is None:
        return None
    key = strength_order(found)
    return 1 + sum(strength_order(s) < key for s in sides)


def relationships_of(
    person: str, sides: Sequence[Side], now: datetime, policy: Policy
) -> list[Relationship]:
    """All of a person's relationships, ranked by strength for their cadence."""
    ranked = sorted(sides, key=strength_order)
    return [relationship(person, side, now, policy, rank) for rank, side in enumerate(ranked, 1)]


def summary(person: str, sides: Sequence[Side], now: datetime, policy: Policy) -> PersonSummary:
    given = sum(s.given for s in sides)
    received = sum(s.received for s in sides)
    matched = sum(min(s.given, s.received) for s in sides)
    firsts = [s.pair.first_contact for s in sides if s.pair.first_contact is not None]
    lasts = [s.pair.last_contact for s in sides if s.pair.last_contact is not None]
    return PersonSummary(
        person=person,
        relationships=len(sides),
        connections=sum(stage_of(s.pair, now, policy) == "connection" for s in sides),
        given=given,
        received=received,
        net=given - received,
        favors_given=sum(s.favors_given for s in sides),
        favors_received=sum(s.favors_received for s in sides),
        reciprocity=None if given == 0 else matched / given,
        first_contact_at=min(firsts, default=None),
        last_contact_at=max(lasts, default=None),
    )


class Suggestion(msgspec.Struct, frozen=True, kw_only=True):
    counterparty: str
    stage: Stage
    strength: float
    last_contact_at: datetime | None
    cadence_days: float
    overdue_days: float
    score: float


def reconnect(relationships: Sequence[Relationship]) -> list[Suggestion]:
    """Overdue relationships, strongest and most overdue first.

    The score weighs how overdue a relationship is against its cadence by how
    much it is worth keeping (its strength, at least a little for the faded).
    """
    suggestions = [
        Suggestion(
            counterparty=r.b,
            stage=r.stage,
            strength=r.strength,
            last_contact_at=r.last_contact_at,
            cadence_days=r.cadence_days,
            overdue_days=r.overdue_days,
            score=(r.overdue_days / r.cadence_days) * max(r.strength, 0.05),
        )
        for r in relationships
        if r.overdue_days and r.cadence_days
    ]
    return sorted(suggestions, key=lambda s: (-s.score, s.counterparty))
