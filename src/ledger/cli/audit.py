"""``ledger export``, ``ledger import`` and ``ledger verify-digest``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from ledger.audit.digest_store import recompute
from ledger.audit.export import digest_of_file
from ledger.audit.transfer import Imported, export, import_file
from ledger.cli.progress import Progress
from ledger.config import Settings
from ledger.errors import InvalidInput, NotFound
from ledger.store.database import Connection
from ledger.tenants.keys import ensure_tenant

T = TypeVar("T")

_TENANT_ID = "SELECT tenant_id FROM tenants WHERE name = $1"


def register(commands: Any) -> None:
    """Add the audit commands to the ``ledger`` parser's subcommands."""
    exporting = commands.add_parser(
        "export",
        help="write a tenant's log as NDJSON (with positions, sealed personal data and keys)",
        description=(
            "Write the tenant's log, one JSON object a line: a header, the keys of people not "
            "forgotten, every event as stored (personal data stays sealed), and an end line "
            "with the digest. Shows progress on stderr."
        ),
    )
    exporting.add_argument("--tenant", required=True, help="the tenant to export")
    exporting.add_argument("--output", type=Path, help="file to write (default: stdout)")
    exporting.set_defaults(run=_export)

    importing = commands.add_parser(
        "import",
        help="replay an export into an empty tenant (rerun to resume; idempotent)",
        description=(
            "Append an export's events into TENANT (created if new) in the file's order, in "
            "batches. Interrupted, run it again: the events already imported are skipped. "
            "Ends by checking that the tenant's digest equals the file's."
        ),
    )
    importing.add_argument("--tenant", required=True, help="the tenant to import into")
    importing.add_argument("file", type=Path, help="an NDJSON file from `ledger export`")
    importing.set_defaults(run=_import)

    verify = commands.add_parser(
        "verify-digest",
        help="recompute an export's digest and say whether it matches",
        description=(
            "Recompute the hash chain over an export's events and compare it with the digest "
            "recorded in the file, with --digest (one you kept from GET /v1/audit/digest), and "
            "with --tenant's log recomputed in full from the database. Exit status 0 when all "
            "match, 1 when one does not."
        ),
    )
    verify.add_argument("file", type=Path, help="an NDJSON file from `ledger export`")
    verify.add_argument("--digest", help="a digest to compare with (hex)")
    verify.add_argument("--tenant", help="also recompute this tenant's log from the database")
    verify.set_defaults(run=_verify_digest)


def _on_database(settings: Settings, work: Callable[[Connection], Awaitable[T]]) -> T:
    """The package's own helper (migrate, connect, run), imported late: the
    package imports this module while it is being defined."""
    from ledger.cli import _with_connection

    return _with_connection(settings, work)


async def _tenant_id(conn: Connection, name: str) -> int:
    tenant_id: int | None = await conn.fetchval(_TENANT_ID, name)
    if tenant_id is None:
        raise NotFound(f"no tenant named {name!r}; `ledger keys list` shows them", field="tenant")
    return tenant_id


def _export(args: argparse.Namespace, settings: Settings) -> int:
    async def work(conn: Connection) -> tuple[int, str, float]:
        tenant_id = await _tenant_id(conn, args.tenant)
        bar = Progress(f"export {args.tenant}")
        if args.output is None:
            end = await export(conn, tenant_id, args.tenant, sys.stdout.buffer, bar)
        else:
            with args.output.open("wb") as out:
                end = await export(conn, tenant_id, args.tenant, out, bar)
        return end.events, end.digest, bar.finish()

    events, digest, seconds = _on_database(settings, work)
    where = "stdout" if args.output is None else str(args.output)
    print(
        f"exported {events:,} events of {args.tenant} to {where} in {seconds:.1f} s; "
        f"digest {digest}",
        file=sys.stderr,
    )
    return 0


def _lines(path: Path) -> Any:
    if not path.is_file():
        raise NotFound(f"no file {str(path)!r}", field="file")
    return path.open("rb")


def _import(args: argparse.Namespace, settings: Settings) -> int:
    with _lines(args.file) as lines:
        checked = digest_of_file(lines)
    if checked.end is not None and not checked.matches_end:
        raise InvalidInput(
            f"{args.file} says {checked.end.events} events with digest {checked.end.digest}, "
            f"but its events are {checked.events} hashing to {checked.digest}: it was altered; "
            "nothing imported",
            field="file",
        )

    async def work(conn: Connection) -> tuple[Imported, float]:
        tenant_id = await ensure_tenant(conn, args.tenant)
        bar = Progress(f"import {args.tenant}")
        with _lines(args.file) as lines:
            done = await import_file(conn, tenant_id, lines, bar)
        return done, bar.finish()

    done, seconds = _on_database(settings, work)
    print(
        f"imported {done.events:,} events into {args.tenant} in {seconds:.1f} s "
        f"({done.skipped:,} were already there, {done.appended:,} appended); "
        f"digest {done.digest}"
    )
    if not done.complete:
        print(
            f"ledger: {args.file} has no end line: it was cut short after {done.events:,} "
            "events; import the complete file to finish (what is imported stays)",
            file=sys.stderr,
        )
        return 1
    if done.digest != done.file_digest:
        print(f"ledger: the tenant's digest differs from the file's {done.file_digest}")
        return 1
    print("the tenant's digest matches the file's")
    return 0


def _verify_digest(args: argparse.Namespace, settings: Settings) -> int:
    with _lines(args.file) as lines:
        found = digest_of_file(lines)
    print(f"{args.file}: {found.events:,} events of {found.header.tenant}, digest {found.digest}")
    checks: list[tuple[str, str | None]] = [
        ("the digest recorded in the file", None if found.end is None else found.end.digest)
    ]
    if found.end is not None and found.end.events != found.events:
        checks[0] = ("the digest recorded in the file", None)
    if args.digest:
        checks.append(("--digest", args.digest.strip().lower()))
    if args.tenant:

        async def work(conn: Connection) -> str:
            tenant_id = await _tenant_id(conn, args.tenant)
            report = await recompute(conn, tenant_id, events=found.events)
            return report.digest if report.events == found.events else f"{report.events} events"

        checks.append((f"tenant {args.tenant}'s log, recomputed", _on_database(settings, work)))
    failed = 0
    for name, expected in checks:
        if expected is None:
            print(f"NO MATCH: {name}: the file has no end line for its events (cut short?)")
            failed += 1
        elif expected == found.digest:
            print(f"matches {name}")
        else:
            print(f"NO MATCH: {name} is {expected}")
            failed += 1
    return 1 if failed else 0
