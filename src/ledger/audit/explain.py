"""Explain: the events behind a pair's balance, with the weight each added (pure).

Each event's effect is computed by :func:`ledger.projections.core.contribution`,
the function the live projector folds, with the policy in force when it
happened; the running totals are the same monoid sums. So the last step's
totals are the live balance, and any step can be checked by hand.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Literal

import msgspec

from ledger.events.vocabulary import FavorGranted
from ledger.projections.core import EMPTY, PolicyTimeline, ProjectedEvent, contribution, key, merge
from ledger.projections.views import side_of
from ledger.store.cursor import Cursor


class Step(msgspec.Struct, frozen=True, kw_only=True):
    """One event that moved the balance; totals are from ``a``'s side, up to and with it."""

    event_id: uuid.UUID
    occurred_at: datetime
    position: int
    cursor: str
    type: str
    giver: str
    receiver: str
    kind: str | None
    weight: float
    weight_from: Literal["event", "policy"]
    policy_version: int
    policy_change_id: uuid.UUID | None
    given: float
    received: float
    net: float


def explain(
    a: str, b: str, events: Iterable[ProjectedEvent], policies: PolicyTimeline
) -> list[Step]:
    """Every event that moved the a-b balance, in ``occurred_at`` order, with running totals."""
    pair_key = key(a, b)
    low, high = pair_key
    half_life = policies.latest().strength_half_life_days
    totals = EMPTY
    steps = []
    for event in sorted(events, key=lambda e: (e.occurred_at, e.position)):
        added, _ = contribution(event, {}, policies.at(event.occurred_at), half_life)
        delta = dict(added.pairs).get(pair_key)
        if delta is None or delta.favors_ab + delta.favors_ba == 0:
            continue
        totals = merge(totals, delta)
        side = side_of(a, low, high, totals)
        version, change_id = policies.version_at(event.occurred_at)
        data = event.data
        explicit = isinstance(data, FavorGranted) and data.weight is not None
        steps.append(
            Step(
                event_id=event.id,
                occurred_at=event.occurred_at,
                position=event.position,
                cursor=Cursor(event.tx_id, event.position).encode(),
                type=event.type,
                giver=low if delta.favors_ab else high,
                receiver=high if delta.favors_ab else low,
                kind=data.kind if isinstance(data, FavorGranted) else None,
                weight=delta.given_ab + delta.given_ba,
                weight_from="event" if explicit else "policy",
                policy_version=version,
                policy_change_id=change_id,
                given=side.given,
                received=side.received,
                net=side.given - side.received,
            )
        )
    return steps
