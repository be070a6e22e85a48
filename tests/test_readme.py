"""The README's curl examples, run as written against a live server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.test_cli import env_with, serving

README = Path(__file__).resolve().parents[1] / "README.md"


def api_examples() -> str:
    text = README.read_text()
    section = text.split("## API by example", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL))


def test_the_readme_examples_work_as_written(database_url: str) -> None:
    env = env_with(LEDGER_DATABASE_URL=database_url)
    script = api_examples().replace(".venv/bin/ledger", f"{sys.executable} -m ledger.cli")
    assert "curl" in script
    assert "BASE=http://127.0.0.1:8000" in script
    with serving(env) as base:
        script = script.replace("BASE=http://127.0.0.1:8000", f"BASE={base}")
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=README.parent,
            check=False,
        )
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert '"stream":"favor-f-1","version":2' in out  # the batch was appended
    assert '"actual_version":2' in out  # the expected_version conflict
    assert '"field":"events[0].data.giver"' in out  # the malformed event
    assert '"status":"ok"' in out  # health
    assert '"counterparty":"ben","given":1.0' in out  # read your own write
    assert '"code":"E102","severity":"medium","offender":"ana"' in out  # a violation
    assert '"field":"silence_days"' in out  # policy nonsense
    assert "ledger 1.0.0" in out
    assert '"email":null,"erased":true' in out  # person.forgotten shredded the data
    assert "the tenant's digest matches the file's" in out  # export, then import
    assert "matches tenant acme-copy's log, recomputed" in out
    assert '"weight_from":"policy","policy_version":0' in out  # explain
    assert '"differences":[]' in out and "0 difference(s)" in out  # verify, API and command
    assert not re.search(r'"status":5\d\d', out), out
