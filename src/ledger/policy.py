"""A tenant's policy: favor weights and thresholds, changed only by events.

The policy is folded from ``policy.changed`` events like everything else, so
a replay of any moment knows which policy held then. Defaults are those of
PRODUCT.md; an event overrides only the fields it names.
"""

from __future__ import annotations

from typing import Final

import msgspec

from ledger.events.vocabulary import PolicyChanged

DEFAULT_WEIGHTS: Final[dict[str, float]] = {
    "introduction": 3.0,
    "referral": 3.0,
    "resume_forward": 2.0,
    "review": 2.0,
    "endorsement": 2.0,
    "contacts": 2.0,
    "advice": 1.0,
    "money": 3.0,
    "other": 1.0,
}

# Stay-in-touch cadence by strength layer, in the spirit of Dunbar's layers:
# a person's 5 strongest relationships every 14 days, the next 10 every 30, ...
LAYERS: Final = ((5, 14.0), (15, 30.0), (50, 90.0), (150, 180.0))
OUTER_CADENCE_DAYS: Final = 365.0
# Every rank past the outermost layer has the outer cadence: a rank need only
# be known up to here (a read counts at most this many stronger relationships).
RANKED: Final = LAYERS[-1][0]


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    weights: dict[str, float] = msgspec.field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    dormancy_days: float = 365.0
    strength_half_life_days: float = 90.0
    big_ask_window_hours: float = 24.0
    silence_days: float = 365.0
    reconnect_min_hours: float = 24.0
    conduit_window_days: float = 90.0
    conduit_min_asks: int = 3
    generosity_min_favors: int = 3
    generosity_min_span_days: float = 180.0

    def changed(self, change: PolicyChanged) -> Policy:
        """This policy with the fields ``change`` names replaced."""
        updates = {
            name: getattr(change, name)
            for name in change.__struct_fields__
            if name != "weights" and getattr(change, name) is not None
        }
        weights: dict[str, float] = dict(self.weights)
        for kind, weight in (change.weights or {}).items():
            weights[kind] = weight
        return msgspec.structs.replace(self, weights=weights, **updates)

    def weight_of(self, kind: str, explicit: float | None) -> float:
        """A granted favor's weight: its own if it says, else the policy's for its kind."""
        return explicit if explicit is not None else self.weights.get(kind, 1.0)


DEFAULT_POLICY: Final = Policy()


def cadence_days(rank: int) -> float:
    """How often a relationship should be renewed, from its strength rank (1 = strongest)."""
    for size, days in LAYERS:
        if rank <= size:
            return days
    return OUTER_CADENCE_DAYS
