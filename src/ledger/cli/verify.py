"""``ledger verify``: the audit's re-derivation, for operators and cron jobs.

Exit status 0 when every projection of every tenant checked equals its
re-derivation from the log, 1 when any differs (each difference is printed),
2 when the tenant does not exist.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec

from ledger.audit.compare import Difference
from ledger.audit.verify import Report, verify
from ledger.cli.progress import Progress
from ledger.config import Settings
from ledger.store.database import Connection

Verdicts = list[tuple[str, Report]]
WithConnection = Callable[[Settings, Callable[[Connection], Awaitable[Verdicts]]], Verdicts]

_TENANTS: Final = (
    "SELECT tenant_id, name FROM tenants WHERE $1::text IS NULL OR name = $1 ORDER BY name"
)
_json: Final = msgspec.json.Encoder()


def add_parsers(commands: Any, with_connection: WithConnection) -> None:
    """Register ``verify`` on the top-level ``commands``."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "verify",
        help="re-derive every projection from the log and report differences (exit 1 if any)",
        description=(
            "Replay each tenant's log with the projector's own code up to each projection's "
            "checkpoint and compare with the live tables, row by row. Prints each difference; "
            "exit status 0 when there are none, 1 when there are, 2 for an unknown tenant. "
            "Shows a progress bar with events/s and ETA."
        ),
    )
    parser.add_argument("--tenant", help="only this tenant (default: every tenant)")
    parser.set_defaults(
        run=lambda args, settings: _verify(args, settings, with_connection),
    )


def _verify(args: argparse.Namespace, settings: Settings, with_connection: WithConnection) -> int:
    async def work(conn: Connection) -> Verdicts:
        tenants = await conn.fetch(_TENANTS, args.tenant)
        verdicts = []
        for tenant in tenants:
            bar = Progress(f"verify {tenant['name']}")
            report = await verify(conn, tenant["tenant_id"], progress=bar)
            bar.finish()
            verdicts.append((tenant["name"], report))
        return verdicts

    verdicts = with_connection(settings, work)
    if not verdicts:
        if args.tenant is None:
            print("no tenants yet")
            return 0
        print(
            f"ledger: no tenant named {args.tenant!r}; `ledger keys list` shows them",
            file=sys.stderr,
        )
        return 2
    failed = False
    for name, report in verdicts:
        for checked in report.projections:
            print(
                f"verified {checked.projection} for {name}: {checked.checked_events:,} events up "
                f"to {checked.cursor}, {checked.differences} difference(s)"
            )
        for difference in report.differences:
            print(_line(name, difference))
        if report.truncated:
            print(f"... more differences for {name}, not shown")
        failed = failed or bool(report.differences)
    return 1 if failed else 0


def _line(tenant: str, d: Difference) -> str:
    key = _json.encode(d.key).decode()
    if d.column is None:
        state = "missing" if d.live is None else "unexpected"
        row = d.expected if d.live is None else d.live
        return f"DIFF {tenant} {d.table} {key}: {state} row {_json.encode(row).decode()}"
    live, expected = _json.encode(d.live).decode(), _json.encode(d.expected).decode()
    return f"DIFF {tenant} {d.table} {key} {d.column}: live {live}, expected {expected}"
