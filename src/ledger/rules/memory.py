"""The pair histories a live violations projector keeps between its batches.

Without them every batch re-read the whole fact history of every pair it
touched, and folded it again: a pair written to all day cost more with each
batch (at 60k events, 942 events/s of live catch-up against 20k/s for a
rebuild). With them a batch reads from PostgreSQL only the pairs it has not
seen, and judges its events against histories already in memory.

What is remembered is only ever a copy of ``rule_facts`` of the live
generation as of one checkpoint. It is used only when the tenant's checkpoint
is still the one this process left after its last batch: another worker's
batch, a rolled-back transaction, a rebuild's swap or a policy change each
leave a different checkpoint or generation, and the copy is dropped. The
oldest pairs are forgotten beyond a budget of facts (hubs, being busy, stay).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Final

from ledger.rules.history import History
from ledger.store.cursor import Cursor

# About 400 bytes a fact in memory (its strings, timestamp and id included):
# 200,000 facts are some 80 MB for the whole process, shared by all tenants.
REMEMBERED_FACTS: Final = 200_000

Pair = tuple[str, str]
# A tenant of one database: (database name, tenant id). A process may reach
# several databases (tests do); their ids start alike.
Tenant = tuple[str, int]


class _Copy:
    __slots__ = ("checkpoint", "generation", "history")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.checkpoint: Cursor | None = None
        self.history = History()


class PairMemory:
    """Per tenant, the pair histories of its live generation as of a checkpoint."""

    def __init__(self, budget: int = REMEMBERED_FACTS) -> None:
        self.budget = budget
        self._tenants: dict[Tenant, _Copy] = {}
        self._recent: OrderedDict[tuple[Tenant, Pair], None] = OrderedDict()

    def claim(self, tenant: Tenant, generation: int, checkpoint: Cursor) -> History:
        """The tenant's remembered histories, if they are those of ``checkpoint``;
        an empty history otherwise. Until :meth:`settle` the copy counts as
        stale, so a batch that fails half-way leaves nothing behind."""
        copy = self._tenants.get(tenant)
        if copy is None or copy.generation != generation or copy.checkpoint != checkpoint:
            self.drop(tenant)
            copy = self._tenants[tenant] = _Copy(generation)
        copy.checkpoint = None
        return copy.history

    def settle(self, tenant: Tenant, checkpoint: Cursor, used: Iterable[Pair]) -> None:
        """The batch is applied up to ``checkpoint``. (Should its transaction fail
        after all, the tenant's checkpoint stays where it was, and the next claim
        drops the copy.) ``used`` pairs become the most recent; the least recent
        are forgotten beyond the budget."""
        copy = self._tenants.get(tenant)
        if copy is None:
            return
        copy.checkpoint = checkpoint
        for pair in used:
            self._recent[(tenant, pair)] = None
            self._recent.move_to_end((tenant, pair))
        while self._recent and self.size > self.budget:
            (owner, pair), _ = self._recent.popitem(last=False)
            if owner in self._tenants:
                self._tenants[owner].history.forget(pair)

    def drop(self, tenant: Tenant) -> None:
        """Forget a tenant (its log was re-derived, or another worker moved it)."""
        if self._tenants.pop(tenant, None) is not None:
            for entry in [entry for entry in self._recent if entry[0] == tenant]:
                del self._recent[entry]

    @property
    def size(self) -> int:
        """Facts remembered, over all tenants."""
        return sum(copy.history.size for copy in self._tenants.values())
