"""Verify: re-derive each projection from the log and compare with the live tables.

Verification is a list of per-projection verifiers (:data:`VERIFIERS`); each
re-derives its projection with the pure core the live projector runs and
reports every row that disagrees: the network projection (pairs, parties,
timelines) and the violations projection (violations and the pair facts the
rules read). A projection more is one entry, a function
``(conn, tenant_id, progress) -> Verification``
(:func:`ledger.audit.compare.compare_rows` does the comparing).

Not racing the projector: each verifier reads in one REPEATABLE READ, read-only
transaction. The projector moves its checkpoint in the same transaction as the
rows it writes, so that snapshot holds exactly the rows of the log up to the
checkpoint it shows, and the verifier replays the log up to that checkpoint.
The projector keeps running meanwhile; a read-only transaction takes no xid,
so it does not hold back the log's commit horizon for writers and followers.

Cost: the whole log up to the checkpoint is read and folded (as a rebuild
does, without writing), and the live rows are loaded: memory grows with the
tenant's pairs and timeline rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

import msgspec

from ledger.audit.compare import Difference, compare_rows, pair_row
from ledger.projections import read
from ledger.projections.core import Fold, Parties, ProjectedEvent
from ledger.projections.projector import PROJECTION, log_until, pair_of
from ledger.rules.catalogue import Violation
from ledger.rules.projection import VIOLATIONS
from ledger.rules.replay import Judging, parties_in
from ledger.store.database import Connection

MAX_DIFFERENCES: Final = 1000

Progress = Callable[[int, int], None]


class Verification(msgspec.Struct, frozen=True, kw_only=True):
    """One projection's verdict: how far into the log it was checked, and what differs."""

    projection: str
    cursor: str
    checked_events: int
    differences: list[Difference]


class Checked(msgspec.Struct, frozen=True, kw_only=True):
    """A projection's line in the report: the checkpoint it was checked at."""

    projection: str
    cursor: str
    checked_events: int
    differences: int


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """Every projection's verdict. ``differences`` is empty on a healthy tenant;
    it stops at :data:`MAX_DIFFERENCES` (then ``truncated``)."""

    checked_events: int
    differences: list[Difference]
    truncated: bool
    projections: list[Checked]


Verifier = Callable[[Connection, int, Progress | None], Awaitable[Verification]]

_COUNT_UNTIL: Final = """
SELECT count(*) FROM events
WHERE tenant_id = $1 AND (tx_id, position) <= ($2::text::xid8, $3::bigint)
"""

_APPLIED: Final = """
SELECT events_applied FROM projection_state WHERE tenant_id = $1 AND projection = $2
"""

_LIVE_PAIRS: Final = """
SELECT p.a, p.b, p.given_ab, p.given_ba, p.favors_ab, p.favors_ba, p.contacts,
       p.first_contact, p.last_contact, p.strength_log2, p.counts
FROM network_pairs p WHERE p.tenant_id = $1 AND p.generation = $2
"""

_LIVE_PARTIES: Final = """
SELECT stream, parties FROM network_parties WHERE tenant_id = $1 AND generation = $2
"""

_LIVE_PERSON_TIMELINE: Final = """
SELECT person, occurred_at, position, event_id FROM timeline_person
WHERE tenant_id = $1 AND generation = $2
"""

_LIVE_PAIR_TIMELINE: Final = """
SELECT a, b, occurred_at, position, event_id FROM timeline_pair
WHERE tenant_id = $1 AND generation = $2
"""


async def verify_network(
    conn: Connection, tenant_id: int, progress: Progress | None = None
) -> Verification:
    """Balances, relationships, parties and timelines against a fold of the log."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        snapshot = await read.snapshot(conn, tenant_id)
        until = snapshot.checkpoint
        total: int = await conn.fetchval(_COUNT_UNTIL, tenant_id, str(until.tx_id), until.position)
        fold = Fold(snapshot.policy)
        checked = 0
        async for events in log_until(conn, tenant_id, until):
            fold.apply_all(events)
            checked += len(events)
            if progress is not None:
                progress(checked, max(total, checked))
        if progress is not None and checked == 0:
            progress(0, 0)
        gen = snapshot.generation
        live_pairs = {
            (r["a"], r["b"]): pair_row(pair_of(r))
            for r in await conn.fetch(_LIVE_PAIRS, tenant_id, gen)
        }
        live_parties = {
            (r["stream"],): {"parties": list(r["parties"])}
            for r in await conn.fetch(_LIVE_PARTIES, tenant_id, gen)
        }
        live_people = {
            (r["person"], r["occurred_at"], r["position"]): {"event_id": r["event_id"]}
            for r in await conn.fetch(_LIVE_PERSON_TIMELINE, tenant_id, gen)
        }
        live_pair_timeline = {
            (r["a"], r["b"], r["occurred_at"], r["position"]): {"event_id": r["event_id"]}
            for r in await conn.fetch(_LIVE_PAIR_TIMELINE, tenant_id, gen)
        }
        applied = await conn.fetchval(_APPLIED, tenant_id, PROJECTION)
    differences = list(
        itertools.chain(
            compare_rows(
                PROJECTION,
                "network_pairs",
                ("a", "b"),
                live_pairs,
                {k: pair_row(p) for k, p in fold.pairs.items()},
            ),
            compare_rows(
                PROJECTION,
                "network_parties",
                ("stream",),
                live_parties,
                {(s,): {"parties": list(who)} for s, who in fold.parties.items()},
            ),
            compare_rows(
                PROJECTION,
                "timeline_person",
                ("person", "occurred_at", "position"),
                live_people,
                {
                    (p, e.occurred_at, e.position): {"event_id": e.event_id}
                    for p, e in fold.person_timeline
                },
            ),
            compare_rows(
                PROJECTION,
                "timeline_pair",
                ("a", "b", "occurred_at", "position"),
                live_pair_timeline,
                {
                    (a, b, e.occurred_at, e.position): {"event_id": e.event_id}
                    for (a, b), e in fold.pair_timeline
                },
            ),
            _applied_difference(applied, checked),
        )
    )
    return Verification(
        projection=PROJECTION,
        cursor=until.encode(),
        checked_events=checked,
        differences=differences,
    )


def _applied_difference(
    applied: int | None, checked: int, projection: str = PROJECTION
) -> Iterator[Difference]:
    """The checkpoint's event count must be the number of events up to it."""
    if (applied or 0) != checked:
        yield Difference(
            projection=projection,
            table="projection_state",
            key={"projection": projection},
            column="events_applied",
            live=applied,
            expected=checked,
        )


_LIVE_VIOLATIONS: Final = """
SELECT id, event_id, code, severity, offender, affected, evidence, occurred_at, explanation
FROM violations WHERE tenant_id = $1 AND generation = $2
"""

_LIVE_FACTS: Final = """
SELECT a, b, event_id, kind, actor, other, occurred_at, position, stream, detail
FROM rule_facts WHERE tenant_id = $1 AND generation = $2
"""


def _violation_row(v: Violation) -> dict[str, Any]:
    return {
        "event_id": v.event_id,
        "code": v.code,
        "severity": v.severity,
        "offender": v.offender,
        "affected": list(v.affected),
        "evidence": list(v.evidence),
        "occurred_at": v.occurred_at,
        "explanation": v.explanation,
    }


def _fact_key(a: str, b: str, event_id: Any, kind: str, actor: str, other: str) -> tuple[Any, ...]:
    return (a, b, event_id, kind, actor, other)


async def verify_violations(
    conn: Connection, tenant_id: int, progress: Progress | None = None
) -> Verification:
    """Violations and the pair facts the rules read, against a judging of the log.

    Holds the log up to the checkpoint in memory (the rules judge in valid-time
    order, which the log is not in), then judges it as a rebuild does.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        snapshot = await read.snapshot(conn, tenant_id, VIOLATIONS.name)
        until = snapshot.checkpoint
        total: int = await conn.fetchval(_COUNT_UNTIL, tenant_id, str(until.tx_id), until.position)
        logged: list[ProjectedEvent] = []
        async for events in log_until(conn, tenant_id, until):
            logged.extend(events)
            if progress is not None:
                progress(len(logged), max(total, len(logged)))
        if progress is not None and not logged:
            progress(0, 0)
        gen = snapshot.generation
        live_violations = {
            (r["id"],): {
                "event_id": r["event_id"],
                "code": r["code"],
                "severity": r["severity"],
                "offender": r["offender"],
                "affected": list(r["affected"]),
                "evidence": list(r["evidence"]),
                "occurred_at": r["occurred_at"],
                "explanation": r["explanation"],
            }
            for r in await conn.fetch(_LIVE_VIOLATIONS, tenant_id, gen)
        }
        live_facts = {
            _fact_key(r["a"], r["b"], r["event_id"], r["kind"], r["actor"], r["other"]): {
                "occurred_at": r["occurred_at"],
                "position": r["position"],
                "stream": r["stream"],
                "detail": r["detail"],
            }
            for r in await conn.fetch(_LIVE_FACTS, tenant_id, gen)
        }
        applied = await conn.fetchval(_APPLIED, tenant_id, VIOLATIONS.name)
    parties: dict[str, Parties] = {}
    parties_in(logged, parties)
    judging = Judging(snapshot.policy, parties)
    expected_violations: dict[tuple[Any, ...], dict[str, Any]] = {}
    expected_facts: dict[tuple[Any, ...], dict[str, Any]] = {}
    for event in sorted(logged, key=lambda e: (e.occurred_at, e.position)):
        found, facts = judging.step(event)
        for v in found:
            expected_violations[(v.id,)] = _violation_row(v)
        for f in facts:
            a, b = f.pair
            expected_facts[_fact_key(a, b, f.event_id, f.kind, f.actor, f.other)] = {
                "occurred_at": f.occurred_at,
                "position": f.position,
                "stream": f.stream,
                "detail": f.detail,
            }
    differences = list(
        itertools.chain(
            compare_rows(
                VIOLATIONS.name, "violations", ("id",), live_violations, expected_violations
            ),
            compare_rows(
                VIOLATIONS.name,
                "rule_facts",
                ("a", "b", "event_id", "kind", "actor", "other"),
                live_facts,
                expected_facts,
            ),
            _applied_difference(applied, len(logged), VIOLATIONS.name),
        )
    )
    return Verification(
        projection=VIOLATIONS.name,
        cursor=until.encode(),
        checked_events=len(logged),
        differences=differences,
    )


# One entry per projection.
VERIFIERS: Final[dict[str, Verifier]] = {
    PROJECTION: verify_network,
    VIOLATIONS.name: verify_violations,
}


async def verify(conn: Connection, tenant_id: int, progress: Progress | None = None) -> Report:
    """Run every verifier; ``checked_events`` is the longest log any of them replayed."""
    verdicts = [await verifier(conn, tenant_id, progress) for verifier in VERIFIERS.values()]
    every = [d for v in verdicts for d in v.differences]
    return Report(
        checked_events=max((v.checked_events for v in verdicts), default=0),
        differences=every[:MAX_DIFFERENCES],
        truncated=len(every) > MAX_DIFFERENCES,
        projections=[
            Checked(
                projection=v.projection,
                cursor=v.cursor,
                checked_events=v.checked_events,
                differences=len(v.differences),
            )
            for v in verdicts
        ],
    )
