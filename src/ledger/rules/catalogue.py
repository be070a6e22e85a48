"""The catalogue: which rules exist, what they are about, and how one is judged.

A rule is one function registered with :func:`rule`, which is also its
catalogue entry (code, title, principle, severity, the events it fires on and
the policy thresholds it reads). Adding E112 is adding one such function to
:mod:`ledger.rules.etiquette`; nothing else names a rule's details.

:func:`judge` runs every rule that fires on an event against the history just
before it. The live projector, rebuilds and every replay call it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Final, Literal

import msgspec

from ledger.events.vocabulary import EventData
from ledger.policy import Policy
from ledger.projections.core import ProjectedEvent
from ledger.rules.history import History

Severity = Literal["low", "medium", "high"]
SEVERITIES: Final[tuple[Severity, ...]] = ("low", "medium", "high")

# Violation ids are derived, not drawn: re-judging an event after a late
# arrival gives the same id for the same verdict.
_NAMESPACE: Final = uuid.UUID("6c1d2a8e-4f7b-5e0a-9b3c-2d8f1e7a6b50")


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """What a rule says about one event; the engine adds code, ids and time."""

    offender: str
    affected: tuple[str, ...]
    explanation: str
    # The earlier events that established the state; the judged event is added.
    evidence: tuple[uuid.UUID, ...] = ()
    severity: Severity | None = None  # when it differs from the rule's (E101 on advice)


class Violation(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    id: uuid.UUID
    code: str
    severity: Severity
    offender: str
    affected: tuple[str, ...]
    evidence: tuple[uuid.UUID, ...]
    occurred_at: datetime
    explanation: str
    event_id: uuid.UUID
    position: int

    @property
    def people(self) -> tuple[str, ...]:
        """Whose violations it is among: its offender's and each affected person's."""
        return tuple(dict.fromkeys((self.offender, *self.affected)))


Judge = Callable[[ProjectedEvent, History, Policy], Iterator[Finding]]


class Rule(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    title: str
    principle: str
    severity: Severity
    fires_on: tuple[str, ...]
    thresholds: tuple[str, ...]
    judge: Judge


RULES: Final[dict[str, Rule]] = {}


def rule(
    code: str,
    *,
    title: str,
    principle: str,
    severity: Severity,
    fires_on: tuple[type[EventData], ...],
    thresholds: tuple[str, ...] = (),
) -> Callable[[Judge], Judge]:
    """Register a rule function under ``code``; the decorator is its catalogue entry."""

    def register(judge: Judge) -> Judge:
        if code in RULES:
            raise ValueError(f"rule {code} is registered twice")
        unknown = [t for t in thresholds if t not in Policy.__struct_fields__]
        if unknown:
            raise ValueError(f"rule {code} names thresholds the policy lacks: {unknown}")
        RULES[code] = Rule(
            code=code,
            title=title,
            principle=principle,
            severity=severity,
            fires_on=tuple(t.type_name for t in fires_on),
            thresholds=thresholds,
            judge=judge,
        )
        return judge

    return register


def _by_type() -> dict[str, list[Rule]]:
    table: dict[str, list[Rule]] = {}
    for r in sorted(RULES.values(), key=lambda r: r.code):
        for event_type in r.fires_on:
            table.setdefault(event_type, []).append(r)
    return table


_FIRING: dict[str, list[Rule]] = {}


def judge(event: ProjectedEvent, history: History, policy: Policy) -> list[Violation]:
    """Every violation ``event`` commits, given the history just before it."""
    if not _FIRING:
        _FIRING.update(_by_type())
    found: list[Violation] = []
    for r in _FIRING.get(event.type, ()):
        for finding in r.judge(event, history, policy):
            found.append(
                Violation(
                    id=uuid.uuid5(_NAMESPACE, f"{event.id}/{r.code}/{finding.offender}"),
                    code=r.code,
                    severity=finding.severity or r.severity,
                    offender=finding.offender,
                    affected=finding.affected,
                    evidence=tuple(dict.fromkeys((*finding.evidence, event.id))),
                    occurred_at=event.occurred_at,
                    explanation=finding.explanation,
                    event_id=event.id,
                    position=event.position,
                )
            )
    return found
