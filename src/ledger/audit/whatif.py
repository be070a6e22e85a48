"""What-if: the balances that would differ under another policy (pure).

The hypothetical policy is laid over every policy in the tenant's history
(:meth:`PolicyTimeline.overridden`): fields it names hold from the start of the
log, fields it leaves out keep whatever the tenant's own changes said when.
Both sides are folds of the same events by the projector's core, so the
"current" side is the live balance and the only variable is the policy.

Seam for violations: the rules read thresholds from the policy; a what-if for
violations evaluates them over the same replay under both timelines and
reports the violations present on one side only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

import msgspec

from ledger.events.vocabulary import FavorGranted, PolicyChanged
from ledger.projections.core import Fold, Pair, PolicyTimeline, ProjectedEvent

# The only events whose contribution moves weight between people (see
# ledger.projections.core.contribution): a what-if over balances folds just these.
WEIGHTED_TYPES: Final = (FavorGranted.type_name,)


class Amounts(msgspec.Struct, frozen=True):
    given: float
    received: float
    net: float


class BalanceChange(msgspec.Struct, frozen=True, kw_only=True):
    """A pair whose balance the policy would change, from ``a``'s side (a < b)."""

    a: str
    b: str
    current: Amounts
    what_if: Amounts


def _amounts(pair: Pair) -> Amounts:
    return Amounts(pair.given_ab, pair.given_ba, pair.given_ab - pair.given_ba)


def _same(x: float, y: float) -> bool:
    return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)


def balance_changes(
    events: Iterable[ProjectedEvent], policies: PolicyTimeline, change: PolicyChanged
) -> list[BalanceChange]:
    """Fold ``events`` under the tenant's policies and under ``change`` laid over them."""
    ordered = list(events)
    current, hypothetical = Fold(policies), Fold(policies.overridden(change))
    current.apply_all(ordered)
    hypothetical.apply_all(ordered)
    empty = Pair()
    changes = []
    for a, b in sorted(current.pairs.keys() | hypothetical.pairs.keys()):
        now = current.pairs.get((a, b), empty)
        then = hypothetical.pairs.get((a, b), empty)
        if _same(now.given_ab, then.given_ab) and _same(now.given_ba, then.given_ba):
            continue
        changes.append(BalanceChange(a=a, b=b, current=_amounts(now), what_if=_amounts(then)))
    return changes
