"""What-if: the balances that would differ under another policy (pure).

The hypothetical policy is laid over every policy in the tenant's history
(:meth:`PolicyTimeline.overridden`): fields it names hold from the start of the
log, fields it leaves out keep whatever the tenant's own changes said when.
Both sides are folds of the same events by the projector's core, so the
"current" side is the live balance and the only variable is the policy.

Violations: the rules are judged over the same replay under both timelines,
with the rules' own fold (:func:`ledger.rules.replay.violations_of`), and the
violations found on one side only are reported. That needs every event, not
only the weighted ones: it costs a full replay of the tenant's log in memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

import msgspec

from ledger.events.vocabulary import FavorGranted, PolicyChanged
from ledger.projections.core import Fold, Pair, PolicyTimeline, ProjectedEvent
from ledger.rules.catalogue import Violation
from ledger.rules.replay import violations_of

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


# Beyond this many on either side the lists are cut (``truncated``).
MAX_VIOLATION_CHANGES: Final = 1000


class ViolationChanges(msgspec.Struct, frozen=True, kw_only=True):
    """Violations the policy would add (``only_what_if``) or clear (``only_current``)."""

    only_what_if: list[Violation]
    only_current: list[Violation]
    truncated: bool


def violation_changes(
    events: Iterable[ProjectedEvent], policies: PolicyTimeline, change: PolicyChanged
) -> ViolationChanges:
    """Judge ``events`` under the tenant's policies and under ``change`` laid over them."""
    ordered = list(events)
    current = {v.id: v for v in violations_of(ordered, policies)}
    hypothetical = {v.id: v for v in violations_of(ordered, policies.overridden(change))}
    added = [v for k, v in hypothetical.items() if k not in current]
    cleared = [v for k, v in current.items() if k not in hypothetical]
    return ViolationChanges(
        only_what_if=added[:MAX_VIOLATION_CHANGES],
        only_current=cleared[:MAX_VIOLATION_CHANGES],
        truncated=max(len(added), len(cleared)) > MAX_VIOLATION_CHANGES,
    )
