"""The violations projection: storage adapter around the rules' pure fold.

Rules judge events in valid-time order, so a late event (back-filled last
year) can change the verdict on events recorded before it. Each batch
therefore:

1. completes the pair histories it judges against with the full stored
   history of each touched pair it lacks, and stores the batch's facts
   (``rule_facts``);
2. finds the events to (re-)judge: the batch, plus every event that left facts
   on one of the touched pairs *after* (in valid time) the new facts there;
3. judges those events in valid-time order with
   :func:`ledger.rules.catalogue.judge`, each against the histories as they
   stood just before it (:meth:`ledger.rules.history.History.before`);
4. replaces those events' violations.

The live projector keeps the histories it has read from one batch to the next
(:mod:`ledger.rules.memory`), so a batch reads only pairs it has not seen and
costs about as much as its own events; without them (a rebuild catching up, a
new process) a batch costs as much as the history of the pairs it touches,
never the tenant's whole log. A ``policy.changed`` event re-derives the
tenant (thresholds changed for every later event). A rebuild (:func:`refold`)
reads the log twice: its stream-opening events in log order for the parties
of favors and introductions, then all of it in valid-time order to judge; the
pair histories it holds in memory grow with the number of facts (about two
per event).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Final

from ledger.events.vocabulary import PolicyChanged
from ledger.projections.core import OPENING_TYPES, Parties, ProjectedEvent
from ledger.projections.projector import (
    FLUSH_ROWS,
    Flushes,
    Projection,
    collector_paused,
    policies_until,
    to_projected,
)
from ledger.rules.catalogue import Violation, judge
from ledger.rules.feed import announce, item_of
from ledger.rules.history import Fact, History, facts_of
from ledger.rules.memory import PairMemory
from ledger.rules.read import item_of_row
from ledger.rules.replay import Judging, parties_in
from ledger.store.cursor import Cursor
from ledger.store.database import Connection
from ledger.store.read import VISIBLE

NAME: Final = "violations"

# This process's copy of live pair histories (see ledger.rules.memory).
MEMORY: Final = PairMemory()

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

# Statements that look rows up by a list of event ids go one id at a time
# through the event_id index, and only then keep the tenant's generation
# (LATERAL ... OFFSET 0, the filter outside it). A table never analysed
# (autovacuum off, or not round yet) looks to the planner as if a tenant's
# generation held a row or two, and it would otherwise walk all of the
# generation's rows once for every id.
_PAIRS_OF_EVENTS: Final = """
SELECT DISTINCT f.a, f.b
FROM unnest($3::uuid[]) AS k(event_id)
CROSS JOIN LATERAL (
    SELECT f.tenant_id, f.generation, f.a, f.b FROM rule_facts f
    WHERE f.event_id = k.event_id
    OFFSET 0
) AS f
WHERE f.tenant_id = $1 AND f.generation = $2
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
SELECT e.id, e.type, e.occurred_at, e.tx_id::text::bigint AS tx_id, e.position, e.data
FROM unnest($2::uuid[]) AS k(id)
CROSS JOIN LATERAL (SELECT * FROM events WHERE id = k.id OFFSET 0) AS e
WHERE e.tenant_id = $1
"""

# With each violation go its rows in violation_people (offender and affected).
# Rows are found one key at a time (see _PAIRS_OF_EVENTS), deleted by ctid.
_DELETE_VIOLATIONS: Final = """
WITH doomed AS (
    SELECT v.ctid AS row, v.id, v.offender, v.affected, v.occurred_at, v.position
    FROM unnest($3::uuid[]) AS k(event_id)
    CROSS JOIN LATERAL (
        SELECT v.ctid, v.* FROM violations v WHERE v.event_id = k.event_id OFFSET 0
    ) AS v
    WHERE v.tenant_id = $1 AND v.generation = $2
), listed AS (
    SELECT p.ctid AS row
    FROM doomed d
    CROSS JOIN unnest(array_prepend(d.offender, d.affected)) AS who(person)
    CROSS JOIN LATERAL (
        SELECT p.ctid FROM violation_people p
        WHERE p.tenant_id = $1 AND p.generation = $2 AND p.person = who.person
          AND p.occurred_at = d.occurred_at AND p.position = d.position AND p.id = d.id
        OFFSET 0
    ) AS p
), unlisted AS (
    DELETE FROM violation_people WHERE ctid = ANY(ARRAY(SELECT row FROM listed))
)
DELETE FROM violations WHERE ctid = ANY(ARRAY(SELECT row FROM doomed))
RETURNING id
"""

_LIVE_STATE: Final = """
SELECT generation, checkpoint_tx, checkpoint_position, current_database() AS database
FROM projection_state WHERE tenant_id = $1 AND projection = $2
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
    """With COPY, live as in a refold: only new events make facts, so nothing
    stored collides, and COPY costs less than an INSERT of the same rows."""
    if facts:
        await conn.copy_records_to_table(
            "rule_facts",
            columns=("tenant_id", "generation", *_FACT_COLUMNS),
            records=[(tenant_id, generation, *_fact_row(f)) for f in facts],
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
    """Judge a batch and re-judge what it changes; a policy change re-derives instead.

    The live generation is judged against the pair histories this process
    remembers from its previous batch (:mod:`ledger.rules.memory`); any other
    (a rebuild catching up) against histories read for the batch alone.
    """
    state = await conn.fetchrow(_LIVE_STATE, tenant_id, NAME)
    live = state is not None and state["generation"] == generation
    tenant = (state["database"] if state is not None else "", tenant_id)
    if any(isinstance(e.data, PolicyChanged) for e in events):
        MEMORY.drop(tenant)
        before = [row["id"] for row in await conn.fetch(_IDS, tenant_id, generation)]
        folded = await refold(
            conn, tenant_id, generation, Cursor(events[-1].tx_id, events[-1].position)
        )
        if live:
            rows = await conn.fetch(_ROWS_EXCEPT, tenant_id, generation, before)
            await announce(conn, tenant_id, [item_of_row(row) for row in rows])
        return folded
    if live:
        assert state is not None
        checkpoint = Cursor(state["checkpoint_tx"], state["checkpoint_position"])
        history = MEMORY.claim(tenant, generation, checkpoint)
    else:
        history = History()
    found, ids, used = await _judge_batch(conn, tenant_id, generation, events, history)
    gone = {row["id"] for row in await conn.fetch(_DELETE_VIOLATIONS, tenant_id, generation, ids)}
    await _insert_violations(conn, tenant_id, generation, found)
    if live:
        await announce(conn, tenant_id, [item_of(v) for v in found if v.id not in gone])
        MEMORY.settle(tenant, Cursor(events[-1].tx_id, events[-1].position), used)
    return None


async def _judge_batch(
    conn: Connection,
    tenant_id: int,
    generation: int,
    events: list[ProjectedEvent],
    history: History,
) -> tuple[list[Violation], list[uuid.UUID], set[tuple[str, str]]]:
    """Store the batch's facts and judge, in valid-time order, its events and every
    event with facts on a touched pair after (valid time) the new facts there.

    ``history`` is completed with the full histories of the pairs it lacks.
    Returns the violations found, the ids of the events judged (their old
    violations are replaced) and the pairs read.
    """
    parties = await _parties_for(conn, tenant_id, events)
    new_facts = [fact for event in events for fact in facts_of(event, parties)]
    earliest: dict[tuple[str, str], tuple[datetime, int]] = {}
    for fact in new_facts:
        if fact.pair not in earliest or fact.order < earliest[fact.pair]:
            earliest[fact.pair] = fact.order
    await _recall(conn, tenant_id, generation, history, earliest)
    await _insert_facts(conn, tenant_id, generation, new_facts)

    batch = {e.id: e for e in events}
    rejudged = {
        fact.event_id
        for pair, moment in earliest.items()
        for fact in history.after(pair, moment)
        if fact.event_id not in batch
    }
    history.observe(new_facts)
    judged: dict[uuid.UUID, ProjectedEvent] = dict(batch)
    used = set(earliest)
    if rejudged:
        ids = list(rejudged)
        for row in await conn.fetch(_EVENTS_BY_ID, tenant_id, ids):
            judged[row["id"]] = to_projected(row)
        pairs = {
            (row["a"], row["b"])
            for row in await conn.fetch(_PAIRS_OF_EVENTS, tenant_id, generation, ids)
        }
        await _recall(conn, tenant_id, generation, history, pairs)
        used |= pairs

    last = events[-1]
    policies = await policies_until(conn, tenant_id, Cursor(last.tx_id, last.position))
    found: list[Violation] = []
    for event in sorted(judged.values(), key=lambda e: (e.occurred_at, e.position)):
        moment = (event.occurred_at, event.position)
        found.extend(judge(event, history.before(moment), policies.at(event.occurred_at)))
    return found, list(judged), used


async def _recall(
    conn: Connection,
    tenant_id: int,
    generation: int,
    history: History,
    pairs: Iterable[tuple[str, str]],
) -> None:
    """Read into ``history`` the full stored histories of the ``pairs`` it lacks."""
    missing = sorted(pair for pair in pairs if not history.knows(pair))
    if missing:
        rows = await conn.fetch(
            _FACTS_ON_PAIRS,
            tenant_id,
            generation,
            [a for a, _ in missing],
            [b for _, b in missing],
        )
        history.observe(map(_fact_of, rows))


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
    reader: Connection | None = None,
) -> int:
    """Re-derive a generation from the log up to ``until`` (see the module docstring;
    ``reader`` as in :class:`ledger.projections.projector.Refold`)."""
    await VIOLATIONS.drop(conn, tenant_id, generation)
    log = conn if reader is None else reader
    policies = await policies_until(log, tenant_id, until)
    parties = await _parties_until(log, tenant_id, until, batch_size)
    judging = Judging(policies, parties)
    folded = 0
    after: tuple[Any, int] = (_DAWN, 0)
    facts: list[Fact] = []
    found: list[Violation] = []
    async with Flushes(overlap=reader is not None) as flushes:
        while rows := await log.fetch(
            _EVENTS_BY_VALID_TIME, tenant_id, *after, str(until.tx_id), until.position, batch_size
        ):
            for row in rows:
                event = to_projected(row)
                verdict, left = judging.step(event)
                found.extend(verdict)
                facts.extend(left)
            if len(facts) >= FLUSH_ROWS:
                await flushes.write(_copy(conn, tenant_id, generation, facts, found))
                facts, found = [], []
            folded += len(rows)
            after = (rows[-1]["occurred_at"], rows[-1]["position"])
            if progress is not None:
                progress(len(rows))
        await flushes.write(_copy(conn, tenant_id, generation, facts, found))
    return folded


async def _copy(
    conn: Connection, tenant_id: int, generation: int, facts: list[Fact], found: list[Violation]
) -> None:
    """A refold's facts, sorted by pair as their index is (a refold judges in valid
    time, which scatters them over it: see FLUSH_ROWS), and its violations."""
    facts.sort(key=_pair_of)
    head = (tenant_id, generation)
    await _insert_facts(conn, tenant_id, generation, facts)
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


def _pair_of(fact: Fact) -> tuple[str, str]:
    return fact.pair


VIOLATIONS: Final = Projection(
    name=NAME,
    tables=("rule_facts", "violations", "violation_people"),
    advance=advance,
    refold=refold,
)
