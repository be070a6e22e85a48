"""``as_of``: what the ledger knew at a place in its log, or what had happened by a time (pure).

Two clocks, as in any bitemporal store: a cursor is transaction time (events
*recorded* up to there, whatever they say happened when); an RFC 3339 time is
valid time (events that *occurred* by then, as the ledger knows them now, so a
meeting back-filled yesterday counts if it happened before that time).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Final

from ledger.errors import InvalidInput
from ledger.projections.core import Fold, Pair, PolicyTimeline, TimelineEntry, key
from ledger.projections.views import Side, side_of
from ledger.store.cursor import Cursor

FIELD: Final = "as_of"
_RFC3339: Final = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})$"
)
# A `+` sent unescaped in a query string arrives as a space.
_SPACED_OFFSET: Final = re.compile(r" (\d{2}:\d{2})$")


def rfc3339(value: str) -> datetime | None:
    """An RFC 3339 time with its zone (a ``+`` turned into a space by a URL forgiven),
    or None: no bare dates, no numbers taken for timestamps."""
    text = _SPACED_OFFSET.sub(r"+\1", value.strip())
    if _RFC3339.match(text):
        try:
            return datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            return None
    return None


def parse_as_of(value: str) -> Cursor | datetime:
    """A cursor (``c1...``) or an RFC 3339 time with its zone; else 422 naming ``as_of``."""
    if value.startswith("c1"):
        return Cursor.decode(value, field=FIELD)
    moment = rfc3339(value)
    if moment is not None:
        return moment
    raise InvalidInput(
        f"as_of is {value!r}: give a cursor from this ledger (c1...) or an RFC 3339 time with "
        "its zone, e.g. 2025-03-01T09:00:00Z",
        field=FIELD,
        in_body=False,
    )


class Past:
    """The projections as a replay derived them: pairs and timelines of the people
    replayed, and the policies in force."""

    def __init__(self, fold: Fold, policies: PolicyTimeline) -> None:
        self.pairs = fold.pairs
        self.policies = policies
        self._people = fold.person_timeline
        self._pairs_timeline = fold.pair_timeline

    def sides_of(self, person: str) -> list[Side]:
        return [
            side_of(person, a, b, pair) for (a, b), pair in self.pairs.items() if person in (a, b)
        ]

    def pair(self, a: str, b: str) -> Pair | None:
        return self.pairs.get(key(a, b))

    def knows(self, person: str) -> bool:
        return any(who == person for who, _ in self._people)

    def timeline(self, people: tuple[str] | tuple[str, str]) -> list[TimelineEntry]:
        """A person's or a pair's entries in ``occurred_at`` order, as the live timelines."""
        entries: Iterable[TimelineEntry]
        if len(people) == 1:
            entries = (e for who, e in self._people if who == people[0])
        else:
            wanted = key(*people)
            entries = (e for pair, e in self._pairs_timeline if pair == wanted)
        return sorted(entries, key=lambda e: (e.occurred_at, e.position))


def page_after(
    entries: list[TimelineEntry], after: tuple[datetime, int], limit: int
) -> tuple[list[TimelineEntry], bool]:
    """The entries after ``after`` (``occurred_at``, ``position``), and whether more follow."""
    rest = [e for e in entries if (e.occurred_at, e.position) > after]
    return rest[:limit], len(rest) > limit
