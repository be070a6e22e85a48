"""The Python client in a dozen lines: append a story, read it back.

Run it against a server (`make run`) with a key:

    LEDGER_URL=http://127.0.0.1:8000 LEDGER_KEY=$(.venv/bin/ledger keys create --tenant demo \
        | tail -n 1) .venv/bin/python examples/client_quickstart.py
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

from ledger.client import FavorGranted, FavorRequested, Ledger, MeetingHeld, event


def main() -> None:
    url, key = os.environ.get("LEDGER_URL", "http://127.0.0.1:8000"), os.environ["LEDGER_KEY"]
    now = datetime.now(UTC)
    favor = f"f-{uuid.uuid4().hex[:8]}"
    with Ledger(url, key, read_your_writes=True) as ledger:
        appended = ledger.append(
            event(
                MeetingHeld(
                    meeting_id=f"m-{uuid.uuid4().hex[:8]}",
                    participants=("ana", "ben"),
                    initiated_by="ana",
                    channel="coffee",
                    purpose="get_to_know",
                ),
                occurred_at=now - timedelta(days=10),
            ),
            event(
                FavorRequested(favor_id=favor, requester="ana", asked_of="ben", kind="advice"),
                occurred_at=now - timedelta(days=3),
            ),
            event(
                FavorGranted(favor_id=favor, giver="ben", receiver="ana", kind="advice"),
                occurred_at=now - timedelta(days=2),
            ),
        )
        print(f"appended {len(appended.events)} events; log cursor {appended.cursor}")
        for balance in ledger.iterate(ledger.balances, "ana"):
            print(f"ana and {balance.counterparty}: net {balance.net:+g}")
        relationship = ledger.relationship("ana", "ben")
        print(f"ana and ben: {relationship.stage}, strength {relationship.strength:.2f}")


if __name__ == "__main__":
    main()
