"""``/v1/rules``, ``/v1/policy`` and ``/v1/violations``: the etiquette rules as the API serves them.

Violations are a projection like balances: reads carry ``Ledger-Cursor`` and
honour ``Ledger-Min-Cursor`` (read-your-writes), against the violations
projection's own checkpoint.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Final

import msgspec
from litestar import Request, Response, get, put
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from ledger.api.asof import AsOf, replaying
from ledger.api.asof import answer as as_of_answer
from ledger.api.events import Limit, PageCursor
from ledger.api.network import consistent, reflecting
from ledger.api.state import pool_of
from ledger.audit.asof import rfc3339
from ledger.audit.replay import Bound, knows, policies_within
from ledger.errors import InvalidInput, NotFound
from ledger.events.envelope import INCOMING_TYPES, EventBatch, prepare, split_error
from ledger.events.vocabulary import PolicyChanged
from ledger.policy import DEFAULT_POLICY, Policy
from ledger.projections.core import PolicyTimeline
from ledger.projections.projector import log_until, to_projected
from ledger.rules import read
from ledger.rules.catalogue import RULES, SEVERITIES, Violation
from ledger.rules.feed import item_of
from ledger.rules.projection import NAME as VIOLATIONS
from ledger.rules.replay import violations_of
from ledger.store.append import append
from ledger.store.database import Connection
from ledger.tenants.keys import Principal


class RuleView(msgspec.Struct, frozen=True):
    code: str
    title: str
    principle: str
    severity: str
    fires_on: list[str]
    # The policy's thresholds this rule reads, with the values in force now.
    thresholds: dict[str, float]


class RulePage(msgspec.Struct, frozen=True):
    items: list[RuleView]
    next_cursor: str | None


class PolicyView(msgspec.Struct, frozen=True):
    """The policy in force now, and which change set it (none: the defaults)."""

    version: int
    changed_at: datetime | None
    event_id: uuid.UUID | None
    policy: Policy
    # After a PUT: the append's cursor, for `Ledger-Min-Cursor` on the next read.
    cursor: str | None = None


_POLICY_CHANGES: Final = """
SELECT id, type, occurred_at, tx_id::text::bigint AS tx_id, position, data
FROM events WHERE tenant_id = $1 AND type = 'policy.changed'
ORDER BY occurred_at, position
"""

_POLICY_DECODER: Final = msgspec.json.Decoder(PolicyChanged)
_POLICY_EVENT: Final = next(
    t for t in INCOMING_TYPES if t.__struct_config__.tag == "policy.changed"
)

_PERSON_SEEN: Final = """
SELECT EXISTS (SELECT 1 FROM events WHERE tenant_id = $1 AND people @> jsonb_build_array($2::text))
"""


async def _policy_now(conn: Connection, tenant_id: int) -> PolicyView:
    now = datetime.now(UTC)
    changes = [
        to_projected(row)
        for row in await conn.fetch(_POLICY_CHANGES, tenant_id)
        if row["occurred_at"] <= now
    ]
    last = changes[-1] if changes else None
    return PolicyView(
        version=len(changes),
        changed_at=None if last is None else last.occurred_at,
        event_id=None if last is None else last.id,
        policy=PolicyTimeline(changes).at(now),
    )


@get("/v1/rules", opt={"scope": "projections:read"}, summary="The etiquette rules in force")
async def list_rules(
    request: Request[Any, Any, Any], principal: NamedDependency[Principal]
) -> RulePage:
    async with pool_of(request).acquire() as conn:
        policy = (await _policy_now(conn, principal.tenant_id)).policy
    return RulePage(
        [
            RuleView(
                code=r.code,
                title=r.title,
                principle=r.principle,
                severity=r.severity,
                fires_on=list(r.fires_on),
                thresholds={name: getattr(policy, name) for name in r.thresholds},
            )
            for r in sorted(RULES.values(), key=lambda r: r.code)
        ],
        None,
    )


@get("/v1/policy", opt={"scope": "projections:read"}, summary="The tenant's policy in force now")
async def get_policy(
    request: Request[Any, Any, Any], principal: NamedDependency[Principal]
) -> PolicyView:
    async with pool_of(request).acquire() as conn:
        return await _policy_now(conn, principal.tenant_id)


@put(
    "/v1/policy",
    opt={"scope": "admin", "request_body": "PolicyChanged"},
    summary="Replace the tenant's policy",
    description=(
        "Records a `policy.changed` event taking effect now. The body has the fields of "
        "`policy.changed`; omitted thresholds and weights take their defaults (this replaces "
        "the whole policy). Earlier events keep being judged by the policy of their time."
    ),
    status_code=200,
)
async def put_policy(
    request: Request[Any, Any, Any], principal: NamedDependency[Principal]
) -> PolicyView:
    try:
        change = _POLICY_DECODER.decode(await request.body())
    except msgspec.ValidationError as exc:
        message, field = split_error(str(exc))
        raise InvalidInput(message, field=field) from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"The body is not valid JSON: {exc}") from None
    full = _complete(change)
    now = datetime.now(UTC)
    batch = EventBatch(
        events=[
            _POLICY_EVENT(
                occurred_at=now,
                data=full,
                metadata={"actor": f"api-key:{principal.key_id}"},
            )
        ]
    )
    async with pool_of(request).acquire() as conn:
        result, _ = await append(conn, principal.tenant_id, prepare(batch, now=now))
        view = await _policy_now(conn, principal.tenant_id)
    return msgspec.structs.replace(view, cursor=result.cursor)


def _complete(change: PolicyChanged) -> PolicyChanged:
    """The change with every omitted field set to its default: PUT replaces."""
    policy = DEFAULT_POLICY.changed(change)
    fields = {name: getattr(policy, name) for name in PolicyChanged.__struct_fields__}
    return PolicyChanged(**fields)


def _filters(
    *,
    person: str | None,
    offender: str | None,
    codes: list[str] | None,
    severities: list[str] | None,
    since: str | None,
    until: str | None,
) -> read.Filters:
    for i, code in enumerate(codes or []):
        if code not in RULES:
            raise InvalidInput(
                f"unknown rule code {code!r}; known codes: {', '.join(sorted(RULES))}",
                field="code" if len(codes or []) == 1 else f"code[{i}]",
                in_body=False,
            )
    for i, severity in enumerate(severities or []):
        if severity not in SEVERITIES:
            raise InvalidInput(
                f"unknown severity {severity!r}; one of {', '.join(SEVERITIES)}",
                field="severity" if len(severities or []) == 1 else f"severity[{i}]",
                in_body=False,
            )
    moments: dict[str, datetime | None] = {}
    for name, text in (("since", since), ("until", until)):
        moments[name] = None if text is None else rfc3339(text)
        if text is not None and moments[name] is None:
            raise InvalidInput(
                f"{name} is {text[:80]!r}: give an RFC 3339 time with its zone, e.g. "
                "2025-03-01T00:00:00Z",
                field=name,
                in_body=False,
            )
    start, end = moments["since"], moments["until"]
    if start is not None and end is not None and start >= end:
        raise InvalidInput("since must be before until", field="until", in_body=False)
    return read.Filters(
        person=person,
        offender=offender,
        codes=codes,
        severities=severities,
        since=start,
        until=end,
    )


Codes = Annotated[
    list[str] | None, QueryParameter(name="code", description="Only these rule codes (repeatable).")
]
Severities = Annotated[
    list[str] | None,
    QueryParameter(name="severity", description="Only these severities: low, medium, high."),
]
Since = Annotated[
    str | None,
    QueryParameter(description="Only violations that happened at or after this (RFC 3339)."),
]
Until = Annotated[
    str | None, QueryParameter(description="Only violations that happened before this (RFC 3339).")
]


@get(
    "/v1/violations",
    opt={"scope": "projections:read"},
    summary="Etiquette violations, in the order they happened",
)
async def list_violations(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    person: Annotated[
        str | None,
        QueryParameter(description="Only violations with this person as offender or affected."),
    ] = None,
    offender: Annotated[str | None, QueryParameter(description="Only this offender's.")] = None,
    codes: Codes = None,
    severities: Severities = None,
    since: Since = None,
    until: Until = None,
    cursor: PageCursor = None,
    limit: Limit = 100,
    as_of: AsOf = None,
) -> Response[read.ViolationPage]:
    filters = _filters(
        person=person,
        offender=offender,
        codes=codes,
        severities=severities,
        since=since,
        until=until,
    )
    return await _violations(request, principal, filters, cursor, limit, as_of)


@get(
    "/v1/people/{person:str}/violations",
    opt={"scope": "projections:read"},
    summary="The violations a person committed or was affected by",
)
async def list_person_violations(
    request: Request[Any, Any, Any],
    principal: NamedDependency[Principal],
    person: FromPath[str],
    codes: Codes = None,
    severities: Severities = None,
    since: Since = None,
    until: Until = None,
    cursor: PageCursor = None,
    limit: Limit = 100,
    as_of: AsOf = None,
) -> Response[read.ViolationPage]:
    filters = _filters(
        person=person, offender=None, codes=codes, severities=severities, since=since, until=until
    )
    return await _violations(request, principal, filters, cursor, limit, as_of, person=person)


async def _violations(
    request: Request[Any, Any, Any],
    principal: Principal,
    filters: read.Filters,
    cursor: str | None,
    limit: int,
    as_of: str | None,
    *,
    person: str | None = None,
) -> Response[read.ViolationPage]:
    """One page of violations, live or ``as_of``; with ``person`` (the person route)
    an empty first page for someone the log never mentions is a 404."""
    after = read.START if cursor is None else read.decode_cursor(cursor)
    if as_of is not None:
        page, bound = await _judged_as_of(
            request, principal, as_of, filters, after, limit, person=person
        )
        return as_of_answer(page, bound)
    async with consistent(request, principal.tenant_id, VIOLATIONS) as (conn, snap):
        page = await read.violations(
            conn, principal.tenant_id, snap.generation, filters, after, limit
        )
        if (
            person is not None
            and not page.items
            and cursor is None
            and not await conn.fetchval(_PERSON_SEEN, principal.tenant_id, person)
        ):
            raise NotFound(
                f"no events involve {person!r} (yet); check the id",
                field="person",
                in_body=False,
            )
    return reflecting(page, snap)


async def _judged_as_of(
    request: Request[Any, Any, Any],
    principal: Principal,
    as_of: str,
    filters: read.Filters,
    after: tuple[datetime, int, uuid.UUID],
    limit: int,
    *,
    person: str | None = None,
) -> tuple[read.ViolationPage, Bound]:
    """Violations as of a cursor or a time: the tenant's log within the bound, judged
    by the rules in memory. Costs a replay of the whole log up to the bound."""
    async with replaying(request, principal, as_of) as (conn, bound):
        if person is not None and not await knows(conn, principal.tenant_id, person, bound):
            raise NotFound(
                f"no events within as_of involve {person!r}", field="person", in_body=False
            )
        events = [
            e
            async for batch in log_until(conn, principal.tenant_id, bound.cursor)
            for e in batch
            if bound.happened_by is None or e.occurred_at <= bound.happened_by
        ]
        policies = await policies_within(conn, principal.tenant_id, bound)
    found = _ordered(violations_of(events, policies))
    chosen = [(key, item) for key, item in found if key > after and read.matches(filters, item)]
    page = [item for _, item in chosen[:limit]]
    following = read.encode_cursor(*chosen[limit - 1][0]) if len(chosen) > limit else None
    return read.ViolationPage(page, following), bound


def _ordered(
    found: list[Violation],
) -> list[tuple[tuple[datetime, int, uuid.UUID], read.ViolationItem]]:
    """In the list's order, each with its page key (occurred_at, position, id)."""
    keyed = [((v.occurred_at, v.position, v.id), item_of(v)) for v in found]
    return sorted(keyed, key=lambda pair: pair[0])


ROUTES: Final = [list_rules, get_policy, put_policy, list_violations, list_person_violations]
