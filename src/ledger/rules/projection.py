"""The violations projection: storage adapter around the rules' pure fold.

Rules judge events in valid-time order, so a late event (back-filled last
year) can change the verdict on events recorded before it. Each batch
therefore:

1. stores the facts its events leave on pairs (``rule_facts``);
2. finds the events to (re-)judge: the batch, plus every event that left facts
   on one of the touched pairs *after* (in valid time) the new facts there;
3. loads the full fact history of every pair those events read, folds it in
   valid-time order with :class:`ledger.rules.history.History`, judging the
   chosen events with :func:`ledger.rules.catalogue.judge` on the way;
4. replaces those events' violations.

Cost: proportional to the history of the pairs touched, not to the tenant's
log. A ``policy.changed`` event re-derives the tenant (thresholds changed for
every later event). A rebuild (:func:`refold`) reads the log twice: its
stream-opening events in log order for the parties of favors and
introductions, then all of it in valid-time order to judge; the pair histories
it holds in memory grow with the number of facts (about two per event).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from itertools import groupby
from typing import Any, Final

from ledger.events.vocabulary import PolicyChanged
from ledger.projections.core import OPENING_TYPES, Parties, PolicyTimeline, ProjectedEvent
from ledger.projections.projector import (
    Projection,
    collector_paused,
    policies_until,
    to_projected,
)
from ledger.rules.catalogue import Violation, judge
from ledger.rules.feed import announce, item_of
from ledger.rules.history import Fact, History, facts_of
from ledger.rules.read import item_of_row
from ledger.rules.replay import Judging, parties_in
from ledger.store.cursor import Cursor
from ledger.store.database import Connection
from ledger.store.read import VISIBLE

NAME: Final = "violations"

_FIRST_OF_STREAMS: Final = """
SELECT DISTINCT ON (stream) id, type, occurred_at, tx_id::text::bigint AS tx_id, position, data
FROM events
WHERE tenant_id = $1 AND stream = ANY($2::text[])
ORDER BY stream, version
"""

_FACT_COLUMNS: Final = (
    "a",
    "b",
    "occurred_at",
    "position",
    "event_id",
    "kind",
    "actor",
    "other",
    "stream",
    "detail",
)

_INSERT_FACTS: Final = """
INSERT INTO rule_facts (tenant_id, generation, a, b, occurred_at, position, event_id,
                        kind, actor, other, stream, detail)
SELECT $1, $2, * FROM unnest($3::text[], $4::text[], $5::timestamptz[], $6::bigint[],
                             $7::uuid[], $8::text[], $9::text[], $10::text[], $11::text[],
                             $12::text[])
"""

# Events with facts on a touched pair later (valid time) than the new facts there.
# LATERAL ... OFFSET 0 keeps one index range scan per pair whatever the table's
# statistics say: a hash join over the generation would make each batch cost
# as much as the tenant's whole history.
_LATER_ON_PAIRS: Final = """
SELECT DISTINCT f.event_id
FROM unnest($3::text[], $4::text[], $5::timestamptz[], $6::bigint[]) AS k(a, b, at, pos)
CROSS JOIN LATERAL (
    SELECT f.event_id FROM rule_facts f
    WHERE f.tenant_id = $1 AND f.generation = $2 AND f.a = k.a AND f.b = k.b
      AND (f.occurred_at, f.position) > (k.at, k.pos)
    OFFSET 0
) AS f
"""

_PAIRS_OF_EVENTS: Final = """
SELECT DISTINCT a, b FROM rule_facts
WHERE tenant_id = $1 AND generation = $2 AND event_id = ANY($3::uuid[])
"""

_FACTS_ON_PAIRS: Final = """
SELECT f.kind, f.actor, f.other, f.occurred_at, f.position, f.event_id, f.stream, f.detail
FROM unnest($3::text[], $4::text[]) AS k(a, b)
CROSS JOIN LATERAL (
    SELECT * FROM rule_facts f
    WHERE f.tenant_id = $1 AND f.generation = $2 AND f.a = k.a AND f.b = k.b
    OFFSET 0
) AS f
ORDER BY f.occurred_at, f.position
"""

_EVENTS_BY_ID: Final = """
SELECT id, type, occurred_at, tx_id::text::bigint AS tx_id, position, data
FROM events WHERE tenant_id = $1 AND id = ANY($2::uuid[])
"""

# With each violation go its rows in violation_people (offender and affected).
_DELETE_VIOLATIONS: Final = """
WITH gone AS (
    DELETE FROM violations
    WHERE tenant_id = $1 AND generation = $2 AND event_id = ANY($3::uuid[])
    RETURNING id, offender, affected, occurred_at, position
), unlisted AS (
    DELETE FROM violation_people vp
    USING gone, unnest(array_prepend(gone.offender, gone.affected)) AS who(person)
    WHERE vp.tenant_id = $1 AND vp.generation = $2 AND vp.person = who.person
      AND vp.occurred_at = gone.occurred_at AND vp.position = gone.position
      AND vp.id = gone.id
)
SELECT id FROM gone
"""

_LIVE_GENERATION: Final = """
SELECT generation FROM projection_state WHERE tenant_id = $1 AND projection = $2
"""

_IDS: Final = "SELECT id FROM violations WHERE tenant_id = $1 AND generation = $2"

_ROWS_EXCEPT: Final = """
SELECT id, code, severity, offender, affected, evidence, occurred_at, explanation
FROM violations
WHERE tenant_id = $1 AND generation = $2 AND NOT (id = ANY($3::uuid[]))
ORDER BY occurred_at, position, id
"""

_VIOLATION_COLUMNS: Final = (
    "id",
    "event_id",
    "code",
    "severity",
    "offender",
    "affected",
    "evidence",
    "occurred_at",
    "position",
    "explanation",
)

_INSERT_VIOLATIONS: Final = """
INSERT INTO violations (tenant_id, generation, id, event_id, code, severity, offender,
                        affected, evidence, occurred_at, position, explanation)
SELECT $1, $2, v.id, v.event_id, v.code, v.severity, v.offender,
       string_to_array(v.affected, chr(31)), string_to_array(v.evidence, ',')::uuid[],
       v.occurred_at, v.position, v.explanation
FROM unnest($3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::text[], $10::timestamptz[], $11::bigint[], $12::text[])
     AS v(id, event_id, code, severity, offender, affected, evidence, occurred_at, position,
          explanation)
"""

_INSERT_VIOLATION_PEOPLE: Final = """
INSERT INTO violation_people (tenant_id, generation, person, occurred_at, position, id)
SELECT $1, $2, * FROM unnest($3::text[], $4::timestamptz[], $5::bigint[], $6::uuid[])
"""

_VIOLATION_PEOPLE_COLUMNS: Final = ("person", "occurred_at", "position", "id")

# A full re-derivation judges the log in valid-time order, a page at a time.
_EVENTS_BY_VALID_TIME: Final = """
SELECT id, type, occurred_at, tx_id::text::bigint AS tx_id, position, data
FROM events
WHERE tenant_id = $1
  AND (occurred_at, position) > ($2, $3)
  AND (tx_id, position) <= ($4::text::xid8, $5::bigint)
ORDER BY occurred_at, position
LIMIT $6
"""


def _fact_row(fact: Fact) -> tuple[Any, ...]:
    a, b = fact.pair
    return (
        a,
        b,
        fact.occurred_at,
        fact.position,
        fact.event_id,
        fact.kind,
        fact.actor,
        fact.other,
        fact.stream,
        fact.detail,
    )


def _fact_of(row: Any) -> Fact:
    return Fact(
        row["kind"],
        row["actor"],
        row["other"],
        row["occurred_at"],
        row["position"],
        row["event_id"],
        row["stream"],
        row["detail"],
    )


def _violation_row(v: Violation) -> tuple[Any, ...]:
    return (
        v.id,
        v.event_id,
        v.code,
        v.severity,
        v.offender,
        list(v.affected),
        list(v.evidence),
        v.occurred_at,
        v.position,
        v.explanation,
    )


def _columns(rows: Iterable[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


async def _parties_for(
    conn: Connection, tenant_id: int, events: list[ProjectedEvent]
) -> dict[str, Parties]:
    """The parties of the streams whose one-person steps are in ``events``."""
    streams = sorted({e.data.stream() for e in events if e.type in _ONE_PERSON_STEPS})
    parties: dict[str, Parties] = {}
    if streams:
        parties_in(
            (to_projected(row) for row in await conn.fetch(_FIRST_OF_STREAMS, tenant_id, streams)),
            parties,
        )
    parties_in(events, parties)
    return parties


_ONE_PERSON_STEPS: Final = frozenset({"favor.declined", "introduction.consented"})


async def _insert_facts(
    conn: Connection, tenant_id: int, generation: int, facts: list[Fact]
) -> None:
    if facts:
        await conn.execute(
            _INSERT_FACTS, tenant_id, generation, *_columns(_fact_row(f) for f in facts)
        )


async def _insert_violations(
    conn: Connection, tenant_id: int, generation: int, found: list[Violation]
) -> None:
    if not found:
        return
    # unnest cannot take ragged arrays (affected, evidence): they travel joined,
    # by a unit separator and by commas, and are split back in the statement.
    rows = [
        (
            v.id,
            v.event_id,
            v.code,
            v.severity,
            v.offender,
            "\x1f".join(v.affected),
            ",".join(str(e) for e in v.evidence),
            v.occurred_at,
            v.position,
            v.explanation,
        )
        for v in found
    ]
    await conn.execute(_INSERT_VIOLATIONS, tenant_id, generation, *_columns(rows))
    await conn.execute(
        _INSERT_VIOLATION_PEOPLE, tenant_id, generation, *_columns(_people_rows(found))
    )


def _people_rows(found: list[Violation]) -> list[tuple[Any, ...]]:
    """violation_people rows: a violation once for each person it is about."""
    return [(person, v.occurred_at, v.position, v.id) for v in found for person in v.people]


async def advance(
    conn: Connection, tenant_id: int, generation: int, events: list[ProjectedEvent]
) -> int | None:
    """Judge a batch and re-judge what it changes; a policy change re-derives instead."""
    live = await conn.fetchval(_LIVE_GENERATION, tenant_id, NAME) == generation
    if any(isinstance(e.data, PolicyChanged) for e in events):
        before = [row["id"] for row in await conn.fetch(_IDS, tenant_id, generation)]
        folded = await refold(
            conn, tenant_id, generation, Cursor(events[-1].tx_id, events[-1].position)
        )
        if live:
            rows = await conn.fetch(_ROWS_EXCEPT, tenant_id, generation, before)
            await announce(conn, tenant_id, [item_of_row(row) for row in rows])
        return folded
    parties = await _parties_for(conn, tenant_id, events)
    new_facts = [fact for event in events for fact in facts_of(event, parties)]
    await _insert_facts(conn, tenant_id, generation, new_facts)

    earliest: dict[tuple[str, str], Fact] = {}
    for fact in new_facts:
        if fact.pair not in earliest or fact.order < earliest[fact.pair].order:
            earliest[fact.pair] = fact
    keys = list(earliest.items())
    later = await conn.fetch(
        _LATER_ON_PAIRS,
        tenant_id,
        generation,
        [a for (a, _), _ in keys],
        [b for (_, b), _ in keys],
        [f.occurred_at for _, f in keys],
        [f.position for _, f in keys],
    )
    batch = {e.id: e for e in events}
    rejudged = [row["event_id"] for row in later if row["event_id"] not in batch]
    judged: dict[uuid.UUID, ProjectedEvent] = dict(batch)
    if rejudged:
        for row in await conn.fetch(_EVENTS_BY_ID, tenant_id, rejudged):
            judged[row["id"]] = to_projected(row)

    ids = list(judged)
    pairs = await conn.fetch(_PAIRS_OF_EVENTS, tenant_id, generation, ids)
    facts = await conn.fetch(
        _FACTS_ON_PAIRS,
        tenant_id,
        generation,
        [row["a"] for row in pairs],
        [row["b"] for row in pairs],
    )
    last = events[-1]
    policies = await policies_until(conn, tenant_id, Cursor(last.tx_id, last.position))
    found = _judge_along(map(_fact_of, facts), judged, policies)
    gone = {row["id"] for row in await conn.fetch(_DELETE_VIOLATIONS, tenant_id, generation, ids)}
    await _insert_violations(conn, tenant_id, generation, found)
    if live:
        await announce(conn, tenant_id, [item_of(v) for v in found if v.id not in gone])
    return None


def _judge_along(
    facts: Iterable[Fact], judged: dict[uuid.UUID, ProjectedEvent], policies: PolicyTimeline
) -> list[Violation]:
    """Fold pair histories in valid-time order, judging the chosen events as they come."""
    history = History()
    found: list[Violation] = []
    for event_id, group in groupby(facts, key=lambda f: f.event_id):
        event = judged.get(event_id)
        if event is not None:
            found.extend(judge(event, history, policies.at(event.occurred_at)))
        history.observe(group)
    return found


# The stream-opening events of the log up to a cursor, in log order (the first
# one of a stream wins), as far as the commit horizon: the projector's reader
# (ledger.projections.projector.EVENTS_AFTER) narrowed to the types that matter.
_OPENINGS_AFTER: Final = f"""
SELECT e.id, e.type, e.occurred_at, e.tx_id::text::bigint AS tx_id, e.position, e.data
FROM events e
WHERE e.tenant_id = $1
  AND (e.tx_id, e.position) > ($2::text::xid8, $3::bigint)
  AND (e.tx_id, e.position) <= ($4::text::xid8, $5::bigint)
  AND e.type = ANY($6::text[])
  AND e.{VISIBLE}
ORDER BY e.tx_id, e.position
LIMIT $7
"""


async def _parties_until(
    conn: Connection, tenant_id: int, until: Cursor, batch_size: int
) -> dict[str, Parties]:
    """Every stream's parties up to ``until``: a rebuild's first pass reads the
    events that open streams (about a fifth of the log), not the whole log."""
    parties: dict[str, Parties] = {}
    after = Cursor(0, 0)
    bound = (str(until.tx_id), until.position)
    while rows := await conn.fetch(
        _OPENINGS_AFTER,
        tenant_id,
        str(after.tx_id),
        after.position,
        *bound,
        list(OPENING_TYPES),
        batch_size,
    ):
        parties_in(map(to_projected, rows), parties)
        after = Cursor(rows[-1]["tx_id"], rows[-1]["position"])
    return parties


@collector_paused
async def refold(
    conn: Connection,
    tenant_id: int,
    generation: int,
    until: Cursor,
    *,
    progress: Callable[[int], None] | None = None,
    batch_size: int = 5000,
) -> int:
    """Re-derive a generation from the log up to ``until`` (see the module docstring)."""
    await VIOLATIONS.drop(conn, tenant_id, generation)
    policies = await policies_until(conn, tenant_id, until)
    parties = await _parties_until(conn, tenant_id, until, batch_size)
    judging = Judging(policies, parties)
    folded = 0
    after: tuple[Any, int] = (_DAWN, 0)
    while rows := await conn.fetch(
        _EVENTS_BY_VALID_TIME, tenant_id, *after, str(until.tx_id), until.position, batch_size
    ):
        facts: list[Fact] = []
        found: list[Violation] = []
        for row in rows:
            event = to_projected(row)
            verdict, left = judging.step(event)
            found.extend(verdict)
            facts.extend(left)
        await _copy(conn, tenant_id, generation, facts, found)
        folded += len(rows)
        after = (rows[-1]["occurred_at"], rows[-1]["position"])
        if progress is not None:
            progress(len(rows))
    return folded


async def _copy(
    conn: Connection, tenant_id: int, generation: int, facts: list[Fact], found: list[Violation]
) -> None:
    head = (tenant_id, generation)
    if facts:
        await conn.copy_records_to_table(
            "rule_facts",
            columns=("tenant_id", "generation", *_FACT_COLUMNS),
            records=[(*head, *_fact_row(f)) for f in facts],
        )
    if found:
        await conn.copy_records_to_table(
            "violations",
            columns=("tenant_id", "generation", *_VIOLATION_COLUMNS),
            records=[(*head, *_violation_row(v)) for v in found],
        )
        await conn.copy_records_to_table(
            "violation_people",
            columns=("tenant_id", "generation", *_VIOLATION_PEOPLE_COLUMNS),
            records=[(*head, *row) for row in _people_rows(found)],
        )


_DAWN: Final = datetime.min.replace(tzinfo=UTC)

VIOLATIONS: Final = Projection(
    name=NAME,
    tables=("rule_facts", "violations", "violation_people"),
    advance=advance,
    refold=refold,
)
