"""The client's read-your-writes helpers send the append's cursor, and the server waits for it."""

from __future__ import annotations

import pytest

from ledger.client import Ledger, ProblemError
from tests.test_cli import env_with, run, serving
from tests.test_client import NO_WAIT, introduction_story


def test_read_your_writes_sends_the_cursor(database_url: str) -> None:
    """Without a projector nothing ever catches up: the read must wait, then say so.

    A module of its own: a fresh database that no other test's projector reaches."""
    env = env_with(LEDGER_DATABASE_URL=database_url, LEDGER_MIN_CURSOR_WAIT="0.2")
    key = run(env, "keys", "create", "--tenant", "waiting").stdout.strip().splitlines()[-1]
    with serving(env, "--no-projector") as base:
        with Ledger(base, key, retry=NO_WAIT, read_your_writes=True) as ledger:
            ledger.append(*introduction_story())
            with pytest.raises(ProblemError) as waited:
                ledger.balances("ana")
            assert (waited.value.status, waited.value.field) == (503, "Ledger-Min-Cursor")
            assert waited.value.problem.ledger_cursor is not None
        with Ledger(base, key) as ledger, pytest.raises(ProblemError) as unseen:
            ledger.balances("ana")
        assert unseen.value.status == 404, "without the cursor the read does not wait"
