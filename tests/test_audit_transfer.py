"""``ledger export`` / ``import`` / ``verify-digest``, run as separate processes.

The promise: an export imported into a fresh tenant gives identical projections
and the identical digest, an interrupted import rerun gives the same result,
and forgotten people stay forgotten wherever the file goes.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar
from litestar.testing import AsyncTestClient

from ledger.store.database import Pool
from ledger.tenants.keys import create_key
from tests.conftest import Tenant, make_tenant
from tests.samples import event, story
from tests.test_api_events import count_events, post
from tests.test_audit_digest import tamper
from tests.test_cli import LEDGER, env_with, run

Client = AsyncTestClient[Litestar]
PEOPLE = ("ana", "ben", "cleo", "dev")


def a_history() -> list[dict[str, Any]]:
    """The story (Ana registered, then forgotten) and Ben, registered and remembered."""
    ben = event(
        "person.registered",
        {"person": "ben", "display_name": "Ben", "email": f"ben.{uuid.uuid4().hex}@example.org"},
    )
    return [ben, *story()]


async def settled_digest(client: Client, tenant: Tenant, events: int) -> dict[str, Any]:
    """The tenant's digest once its log shows ``events`` events."""
    deadline = time.monotonic() + 30
    while True:
        body: dict[str, Any] = (await client.get("/v1/audit/digest", headers=tenant.headers)).json()
        if body["events"] >= events or time.monotonic() > deadline:
            assert body["events"] == events, body
            return body
        await asyncio.sleep(0.05)


async def projections(client: Client, tenant: Tenant, cursor: str) -> dict[str, Any]:
    """Everything the network projections say about everyone, once they reach ``cursor``."""
    headers = {**tenant.headers, "Ledger-Min-Cursor": cursor}
    deadline = time.monotonic() + 60
    while True:  # 503 while the projections wait for the commit horizon
        first = await client.get(f"/v1/people/{PEOPLE[0]}/balances", headers=headers)
        if first.status_code != 503 or time.monotonic() > deadline:
            break
    seen: dict[str, Any] = {}
    for person in PEOPLE:
        balances = await client.get(f"/v1/people/{person}/balances", headers=headers)
        assert balances.status_code == 200, balances.text
        seen[f"balances/{person}"] = balances.json()["items"]
        for other in PEOPLE:
            if other > person:
                pair = await client.get(f"/v1/relationships/{person}/{other}", headers=headers)
                assert pair.status_code == 200, pair.text
                body = pair.json()
                # Strength decays with the moment of reading; the stored pair does not.
                body["strength"] = round(body["strength"], 6)
                body.pop("overdue_days")
                seen[f"pair/{person}/{other}"] = body
    return seen


async def tenant_named(pool: Pool, name: str) -> Tenant:
    """A key for a tenant that an import created."""
    async with pool.acquire() as conn:
        _, key = await create_key(conn, name, [])
        tenant_id = await conn.fetchval("SELECT tenant_id FROM tenants WHERE name = $1", name)
    return Tenant(name, tenant_id, key)


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for line in path.read_bytes().splitlines()]


async def test_export_then_import_reproduces_projections_digest_and_erasure(
    client: Client, tenant: Tenant, pool: Pool, database_url: str, tmp_path: Path
) -> None:
    env = env_with(LEDGER_DATABASE_URL=database_url)
    history = a_history()
    await post(client, tenant, history)
    source = await settled_digest(client, tenant, len(history))
    before = await projections(client, tenant, source["cursor"])

    out = tmp_path / "export.ndjson"
    exported = run(env, "export", "--tenant", tenant.name, "--output", str(out))
    assert f"exported {len(history)} events" in exported.stderr
    assert "100.0%" in exported.stderr  # the progress bar
    text = out.read_text()
    for personal in ("ana@example.org", history[0]["data"]["email"]):
        assert personal not in text
    lines = lines_of(out)
    assert [line["kind"] for line in lines] == ["header", "key"] + ["event"] * len(history) + [
        "end"
    ]
    assert lines[1]["person"] == "ben"  # Ana was forgotten: her key does not travel
    assert [line["id"] for line in lines[2:-1]] == [e["id"] for e in history]
    assert lines[-1]["digest"] == source["digest"]
    assert lines[-1]["cursor"] == source["cursor"]

    copy_name = f"copy-{secrets.token_hex(4)}"
    imported = run(env, "import", "--tenant", copy_name, str(out))
    assert f"imported {len(history)} events" in imported.stdout
    assert "the tenant's digest matches the file's" in imported.stdout
    assert "100.0%" in imported.stderr
    copy = await tenant_named(pool, copy_name)
    copied = await settled_digest(client, copy, len(history))
    assert copied["digest"] == source["digest"]
    assert copied["cursor"] != source["cursor"]  # new positions, same content
    assert await projections(client, copy, copied["cursor"]) == before

    ben, ana = history[0], history[1]
    ben_read = (await client.get(f"/v1/events/{ben['id']}", headers=copy.headers)).json()
    assert ben_read["data"] == ben["data"]
    ana_read = (await client.get(f"/v1/events/{ana['id']}", headers=copy.headers)).json()
    assert ana_read["data"] == {
        "person": "ana",
        "display_name": None,
        "email": None,
        "erased": True,
    }

    verified = run(
        env, "verify-digest", str(out), "--tenant", copy_name, "--digest", source["digest"]
    )
    assert verified.stdout.count("matches") == 3, verified.stdout


async def test_a_truncated_import_then_the_full_file_gives_the_same_log(
    client: Client, tenant: Tenant, pool: Pool, database_url: str, tmp_path: Path
) -> None:
    env = env_with(LEDGER_DATABASE_URL=database_url)
    history = a_history()
    await post(client, tenant, history)
    source = await settled_digest(client, tenant, len(history))
    out = tmp_path / "export.ndjson"
    run(env, "export", "--tenant", tenant.name, "--output", str(out))
    whole = out.read_bytes()
    cut = tmp_path / "cut.ndjson"
    cut.write_bytes(whole[: len(whole) // 2])  # mid-line

    copy_name = f"copy-{secrets.token_hex(4)}"
    partial = run(env, "import", "--tenant", copy_name, str(cut), check=False)
    assert partial.returncode == 1
    assert "cut short" in partial.stderr
    copy = await tenant_named(pool, copy_name)
    imported_first = await count_events(pool, copy)
    assert 0 < imported_first < len(history)

    full = run(env, "import", "--tenant", copy_name, str(out))
    assert f"{imported_first} were already there" in full.stdout
    again = run(env, "import", "--tenant", copy_name, str(out))
    assert "0 appended" in again.stdout
    assert await count_events(pool, copy) == len(history)
    assert (await settled_digest(client, copy, len(history)))["digest"] == source["digest"]


async def test_an_import_killed_mid_way_and_rerun_gives_the_same_log(
    client: Client, pool: Pool, database_url: str, tmp_path: Path
) -> None:
    env = env_with(LEDGER_DATABASE_URL=database_url)
    tenant = await make_tenant(pool)
    total = 4000
    for start in range(0, total, 1000):
        batch = [
            event("message.sent", {"from": f"p{i % 13}", "to": f"q{i % 7}", "kind": "reply"}, at=i)
            for i in range(start, start + 1000)
        ]
        assert (await post(client, tenant, batch)).status_code == 201
    source = await settled_digest(client, tenant, total)
    out = tmp_path / "export.ndjson"
    run(env, "export", "--tenant", tenant.name, "--output", str(out))

    copy_name = f"copy-{secrets.token_hex(4)}"
    process = await asyncio.create_subprocess_exec(
        *LEDGER,
        "import",
        "--tenant",
        copy_name,
        str(out),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    imported = 0
    async with pool.acquire() as conn:
        while imported == 0 and time.monotonic() < deadline and process.returncode is None:
            imported = await conn.fetchval(
                "SELECT count(*) FROM events e JOIN tenants t USING (tenant_id) WHERE t.name = $1",
                copy_name,
            )
    process.kill()
    await asyncio.wait_for(process.wait(), timeout=30)
    copy = await tenant_named(pool, copy_name)
    killed_at = await count_events(pool, copy)
    assert 0 < killed_at < total, "the import was not caught mid-way"
    assert killed_at % 500 == 0  # whole batches, never half of one

    rerun = run(env, "import", "--tenant", copy_name, str(out))
    assert f"{killed_at:,} were already there" in rerun.stdout
    assert await count_events(pool, copy) == total
    assert (await settled_digest(client, copy, total))["digest"] == source["digest"]


async def test_verify_digest_catches_an_edited_database_and_an_edited_file(
    client: Client, tenant: Tenant, pool: Pool, database_url: str, tmp_path: Path, fresh_conn: Any
) -> None:
    env = env_with(LEDGER_DATABASE_URL=database_url)
    history = a_history()
    await post(client, tenant, history)
    kept = await settled_digest(client, tenant, len(history))
    out = tmp_path / "export.ndjson"
    run(env, "export", "--tenant", tenant.name, "--output", str(out))
    honest = run(
        env, "verify-digest", str(out), "--tenant", tenant.name, "--digest", kept["digest"]
    )
    assert honest.stdout.count("matches") == 3

    await tamper(fresh_conn, tenant, history[5]["id"], "data = jsonb_set(data, '{weight}', '9')")
    caught = run(env, "verify-digest", str(out), "--tenant", tenant.name, check=False)
    assert caught.returncode == 1
    assert f"NO MATCH: tenant {tenant.name}'s log, recomputed" in caught.stdout

    edited = tmp_path / "edited.ndjson"
    edited.write_text(out.read_text().replace('"kind":"thank_you"', '"kind":"reply"'))
    assert edited.read_text() != out.read_text()
    refused = run(env, "verify-digest", str(edited), "--digest", kept["digest"], check=False)
    assert refused.returncode == 1
    assert "NO MATCH: the digest recorded in the file" in refused.stdout
    assert "NO MATCH: --digest" in refused.stdout

    copy_name = f"copy-{secrets.token_hex(4)}"
    not_imported = run(env, "import", "--tenant", copy_name, str(edited), check=False)
    assert not_imported.returncode == 1
    assert "it was altered; nothing imported" in not_imported.stderr
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM tenants WHERE name = $1", copy_name) == 0


async def test_import_refuses_a_tenant_with_other_events(
    client: Client,
    tenant: Tenant,
    other_tenant: Tenant,
    pool: Pool,
    database_url: str,
    tmp_path: Path,
) -> None:
    env = env_with(LEDGER_DATABASE_URL=database_url)
    await post(client, tenant, a_history())
    await settled_digest(client, tenant, len(a_history()))
    await post(client, other_tenant, story())
    out = tmp_path / "export.ndjson"
    run(env, "export", "--tenant", tenant.name, "--output", str(out))
    before = await count_events(pool, other_tenant)
    refused = run(env, "import", "--tenant", other_tenant.name, str(out), check=False)
    assert refused.returncode == 1
    assert "not the start of this export" in refused.stderr
    assert await count_events(pool, other_tenant) == before


async def test_export_to_stdout_and_the_commands_errors(
    client: Client, tenant: Tenant, database_url: str, tmp_path: Path
) -> None:
    env = env_with(LEDGER_DATABASE_URL=database_url)
    await post(client, tenant, story())
    await settled_digest(client, tenant, len(story()))
    to_stdout = run(env, "export", "--tenant", tenant.name)
    lines = [msgspec.json.decode(line) for line in to_stdout.stdout.splitlines()]
    assert lines[0]["kind"] == "header"
    assert lines[0]["tenant"] == tenant.name
    assert lines[-1]["events"] == len(story())

    unknown = run(env, "export", "--tenant", "nobody-here", check=False)
    assert unknown.returncode == 1
    assert "no tenant named 'nobody-here'" in unknown.stderr
    missing = run(env, "import", "--tenant", "x", str(tmp_path / "absent.ndjson"), check=False)
    assert missing.returncode == 1
    assert "no file" in missing.stderr
    garbage = tmp_path / "garbage.ndjson"
    garbage.write_text('{"kind":"event"}\n')
    wrong = run(env, "verify-digest", str(garbage), check=False)
    assert wrong.returncode == 1
    assert "line 1" in wrong.stderr


async def test_import_refuses_bad_lines_and_a_second_importer(
    client: Client, tenant: Tenant, pool: Pool, database_url: str, tmp_path: Path
) -> None:
    env = env_with(LEDGER_DATABASE_URL=database_url)
    await post(client, tenant, story())
    await settled_digest(client, tenant, len(story()))
    out = tmp_path / "export.ndjson"
    run(env, "export", "--tenant", tenant.name, "--output", str(out))
    lines = out.read_text().splitlines(keepends=True)

    def without_end(*changed: str) -> Path:
        path = tmp_path / f"{uuid.uuid4().hex}.ndjson"
        path.write_text("".join([lines[0], *changed]))
        return path

    event_line = next(line for line in lines if '"type":"person.registered"' in line)
    cases = {
        "unknown event type 'favor.stolen'": event_line.replace(
            '"type":"person.registered"', '"type":"favor.stolen"'
        ),
        "is not its data's stream": event_line.replace('"person-ana"', '"person-bob"'),
        "events[0].data": event_line.replace('"data":{"person":"ana"}', '"data":{"who":"ana"}'),
        "line 2 is not a ledger export line": "{not json\n",
    }
    for expected, bad in cases.items():
        assert bad != event_line
        name = f"bad-{secrets.token_hex(4)}"
        refused = run(env, "import", "--tenant", name, str(without_end(bad)), check=False)
        assert refused.returncode == 1, expected
        assert expected in refused.stderr, refused.stderr
        async with pool.acquire() as conn:
            written = await conn.fetchval(
                "SELECT count(*) FROM events JOIN tenants USING (tenant_id) WHERE name = $1", name
            )
        assert written == 0

    cut = without_end(*lines[1:3])
    short = run(env, "verify-digest", str(cut), check=False)
    assert short.returncode == 1
    assert "NO MATCH: the digest recorded in the file: the file has no end line" in short.stdout

    busy = f"busy-{secrets.token_hex(4)}"
    busy_tenant = await tenant_named(pool, busy)
    async with pool.acquire() as conn:
        await conn.execute(
            "SELECT pg_advisory_lock(hashtextextended('ledger-import/' || $1::bigint::text, 0))",
            busy_tenant.id,
        )
        try:
            second = run(env, "import", "--tenant", busy, str(out), check=False)
        finally:
            await conn.execute("SELECT pg_advisory_unlock_all()")
    assert second.returncode == 1
    assert "another import into this tenant is running" in second.stderr
    assert await count_events(pool, busy_tenant) == 0
