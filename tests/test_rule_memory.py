"""The pair histories a live violations projector remembers between batches
(ledger.rules.memory): verdicts stay those of a sorted replay whatever the
memory holds, forgets, or is left holding by someone else's batch."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta
from typing import Any

import pytest

from ledger.projections.core import PolicyTimeline
from ledger.projections.projector import catch_up, state_of, to_projected
from ledger.rules import projection
from ledger.rules.history import Fact, History
from ledger.rules.memory import PairMemory
from ledger.rules.projection import VIOLATIONS
from ledger.rules.replay import violations_of
from ledger.store.append import append
from ledger.store.cursor import Cursor
from ledger.store.database import Connection, Pool
from tests.conftest import make_tenant
from tests.samples import START
from tests.test_store import new_events
from tests.test_violations import a_generated_history, settle, stored_verdicts


def fact(kind: Any, actor: str, other: str, day: int, position: int) -> Fact:
    return Fact(kind, actor, other, START + timedelta(days=day), position, uuid.uuid4(), "s")


def test_a_late_fact_is_slotted_in_and_a_view_from_a_moment_hides_what_came_after() -> None:
    history = History()
    history.observe([fact("granted", "ana", "ben", 1, 10), fact("granted", "ana", "ben", 9, 30)])
    history.observe([fact("granted", "ana", "ben", 5, 40)])  # recorded last, happened between

    assert [f.position for f in history.granted("ana", "ben")] == [10, 40, 30]
    assert [f.position for f in history.between("ben", "ana")] == [10, 40, 30]
    seen = history.before((START + timedelta(days=5), 40))
    assert [f.position for f in seen.granted("ana", "ben")] == [10]
    assert [f.position for f in seen.between("ana", "ben")] == [10]
    assert [f.position for f in history.after(("ana", "ben"), (START + timedelta(days=1), 10))] == [
        40,
        30,
    ]
    assert history.size == 3
    history.forget(("ana", "ben"))
    assert history.size == 0 and not history.knows(("ana", "ben"))


def test_memory_keeps_the_most_recent_pairs_within_its_budget() -> None:
    memory = PairMemory(budget=4)
    tenant = ("db", 1)
    history = memory.claim(tenant, 1, Cursor(0, 0))
    history.observe([fact("contact", "a", "b", 1, 1), fact("contact", "a", "b", 2, 2)])
    history.observe([fact("contact", "a", "c", 1, 3), fact("contact", "a", "c", 2, 4)])
    history.observe([fact("contact", "a", "d", 3, 5)])
    memory.settle(tenant, Cursor(7, 5), [("a", "b"), ("a", "c"), ("a", "d")])

    assert memory.size == 3, "the least recent pair (a, b) went to fit the budget"
    history = memory.claim(tenant, 1, Cursor(7, 5))
    assert not history.knows(("a", "b")) and history.knows(("a", "c"))
    assert memory.claim(tenant, 1, Cursor(7, 5)).size == 0, "an unsettled copy is not used"


async def expected_verdicts(conn: Connection, tenant_id: int) -> set[tuple[Any, ...]]:
    rows = await conn.fetch(
        "SELECT id, type, occurred_at, tx_id::text::bigint AS tx_id, position, data "
        "FROM events WHERE tenant_id = $1",
        tenant_id,
    )
    logged = [to_projected(r) for r in rows]
    return {
        (v.id, v.code, v.offender, v.affected, v.evidence, v.explanation)
        for v in violations_of(logged, PolicyTimeline(logged))
    }


def shuffled_history(seed: int, count: int) -> list[dict[str, Any]]:
    """Rule-relevant events arriving in any order, without policy changes (which
    re-derive the tenant and so would start the memory over on their own)."""
    rng = random.Random(seed)
    events = [e for e in a_generated_history(rng, count) if e["type"] != "policy.changed"]
    rng.shuffle(events)
    return events


@pytest.mark.parametrize("seed", range(4))
async def test_a_memory_too_small_for_the_history_still_judges_as_a_replay_does(
    pool: Pool, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = PairMemory(budget=6)
    monkeypatch.setattr(projection, "MEMORY", memory)
    tenant = await make_tenant(pool)
    events = shuffled_history(seed, 60)
    async with pool.acquire() as conn:
        for i in range(0, len(events), 5):
            result, _ = await append(conn, tenant.id, new_events(*events[i : i + 5]))
            await settle(conn, tenant.id, Cursor.decode(result.cursor))
            assert memory.size <= 6
        expected = await expected_verdicts(conn, tenant.id)
        assert await stored_verdicts(conn, tenant.id) == expected
        assert expected


@pytest.mark.parametrize("seed", range(4))
async def test_a_batch_by_another_worker_makes_the_memory_start_over(
    pool: Pool, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes take turns: each must see the other's facts, not its own stale copy."""
    workers = [PairMemory(), PairMemory()]
    tenant = await make_tenant(pool)
    events = shuffled_history(seed, 60)
    async with pool.acquire() as conn:
        for turn, i in enumerate(range(0, len(events), 5)):
            monkeypatch.setattr(projection, "MEMORY", workers[turn % 2])
            result, _ = await append(conn, tenant.id, new_events(*events[i : i + 5]))
            await settle(conn, tenant.id, Cursor.decode(result.cursor))
        assert await stored_verdicts(conn, tenant.id) == await expected_verdicts(conn, tenant.id)
        database = await conn.fetchval("SELECT current_database()")
        checkpoint = (await state_of(conn, tenant.id, VIOLATIONS.name)).checkpoint
    idle = workers[len(range(0, len(events), 5)) % 2]  # the one that did not take the last turn
    assert idle.claim((database, tenant.id), 1, checkpoint).size == 0


async def test_a_batch_rolled_back_leaves_nothing_behind_in_memory(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = PairMemory()
    monkeypatch.setattr(projection, "MEMORY", memory)
    tenant = await make_tenant(pool)
    events = shuffled_history(11, 40)
    async with pool.acquire() as conn:
        result, _ = await append(conn, tenant.id, new_events(*events[:20]))
        await settle(conn, tenant.id, Cursor.decode(result.cursor))
        remembered = memory.size
        result, _ = await append(conn, tenant.id, new_events(*events[20:]))
        transaction = conn.transaction()
        await transaction.start()
        applied = await catch_up(conn, tenant.id, projection=VIOLATIONS)
        await transaction.rollback()
        assert applied == 20 and memory.size > remembered, "the memory took the batch"

        await settle(conn, tenant.id, Cursor.decode(result.cursor))
        assert await stored_verdicts(conn, tenant.id) == await expected_verdicts(conn, tenant.id)
        assert memory.size == await conn.fetchval(
            "SELECT count(*) FROM rule_facts WHERE tenant_id = $1", tenant.id
        ), "the copy was dropped and every pair read again, once"
