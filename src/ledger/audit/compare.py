"""Comparing live projection rows with the rows a replay expects (pure).

Rows are keyed by their table's primary key (without tenant and generation)
and compared column by column, so a difference names the table, the row and
the column, with both values: enough for an operator to see what went wrong.
Floats compare with a relative tolerance: the live projector adds the same
terms as a replay, in another order (batch by batch).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, Final

import msgspec

from ledger.projections.core import Pair

Row = Mapping[str, Any]
REL_TOLERANCE: Final = 1e-9
ABS_TOLERANCE: Final = 1e-9


class Difference(msgspec.Struct, frozen=True, kw_only=True):
    """One way the live tables disagree with the log.

    ``column`` is None when the whole row is missing (``live`` is None) or should
    not exist (``expected`` is None); the values are then the whole row.
    """

    projection: str
    table: str
    key: dict[str, Any]
    column: str | None
    live: Any
    expected: Any


def same_value(live: Any, expected: Any) -> bool:
    if isinstance(live, float) and isinstance(expected, float):
        return math.isclose(live, expected, rel_tol=REL_TOLERANCE, abs_tol=ABS_TOLERANCE)
    return bool(live == expected)


def compare_rows(
    projection: str,
    table: str,
    key_columns: tuple[str, ...],
    live: Mapping[tuple[Any, ...], Row],
    expected: Mapping[tuple[Any, ...], Row],
) -> Iterator[Difference]:
    """Differences between two keyed row sets, in key order."""
    for row_key in sorted(live.keys() | expected.keys()):
        key = dict(zip(key_columns, row_key, strict=True))
        mine, theirs = live.get(row_key), expected.get(row_key)
        if mine is None or theirs is None:
            yield Difference(
                projection=projection,
                table=table,
                key=key,
                column=None,
                live=None if mine is None else dict(mine),
                expected=None if theirs is None else dict(theirs),
            )
            continue
        for column, value in theirs.items():
            if not same_value(mine.get(column), value):
                yield Difference(
                    projection=projection,
                    table=table,
                    key=key,
                    column=column,
                    live=mine.get(column),
                    expected=value,
                )


def pair_row(pair: Pair) -> dict[str, Any]:
    """A pair as the columns of its ``network_pairs`` row."""
    return {
        "given_ab": pair.given_ab,
        "given_ba": pair.given_ba,
        "favors_ab": pair.favors_ab,
        "favors_ba": pair.favors_ba,
        "contacts": pair.contacts,
        "first_contact": pair.first_contact,
        "last_contact": pair.last_contact,
        "strength_log2": pair.strength_log2,
        "counts": dict(pair.counts),
    }
