"""Judging a history in memory: the rules' fold, shared by rebuilds, tests and replays."""

from __future__ import annotations

from collections.abc import Iterable

from ledger.projections.core import Parties, PolicyTimeline, ProjectedEvent, parties_set_by
from ledger.rules.catalogue import Violation, judge
from ledger.rules.history import Fact, History, facts_of


def valid_time(event: ProjectedEvent) -> tuple[object, int]:
    """Rules judge in ``occurred_at`` order, ties by position (PRODUCT.md section 4)."""
    return (event.occurred_at, event.position)


def parties_in(events: Iterable[ProjectedEvent], parties: dict[str, Parties]) -> None:
    """Record the parties each stream-opening event sets up (first one wins)."""
    for event in events:
        opened = parties_set_by(event.data)
        if opened is not None:
            parties.setdefault(*opened)


class Judging:
    """Events fed in valid-time order are judged against the history before them."""

    def __init__(self, policies: PolicyTimeline, parties: dict[str, Parties]) -> None:
        self.policies = policies
        self.parties = parties
        self.history = History()

    def step(self, event: ProjectedEvent) -> tuple[list[Violation], list[Fact]]:
        facts = facts_of(event, self.parties)
        found = judge(event, self.history, self.policies.at(event.occurred_at))
        self.history.observe(facts)
        return found, facts


def violations_of(events: Iterable[ProjectedEvent], policies: PolicyTimeline) -> list[Violation]:
    """Every violation in a whole history, whatever order the events are given in."""
    ordered = sorted(events, key=lambda e: (e.tx_id, e.position))
    parties: dict[str, Parties] = {}
    parties_in(ordered, parties)
    judging = Judging(policies, parties)
    found: list[Violation] = []
    for event in sorted(ordered, key=lambda e: (e.occurred_at, e.position)):
        found.extend(judging.step(event)[0])
    return found
