"""A Python client for the ledger's v1 API (httpx + msgspec), sync and async.

::

    from ledger.client import FavorGranted, Ledger, event

    with Ledger("http://127.0.0.1:8000", key, read_your_writes=True) as ledger:
        ledger.append(event(FavorGranted(favor_id="f-1", giver="ben", receiver="ana",
                                         kind="introduction")))
        for balance in ledger.iterate(ledger.balances, "ana"):
            print(balance.counterparty, balance.net)

Events are built from the vocabulary's own types, with their ids chosen
before the first try, so automatic retries never write an event twice.
"""

from ledger.client.aio import AsyncLedger
from ledger.client.calls import Call, Retry
from ledger.client.errors import ProblemError
from ledger.client.events import Event, event
from ledger.client.sync import Ledger
from ledger.client.wire import (
    AppendResult,
    Balance,
    BalancePage,
    Envelope,
    EventPage,
    Horizon,
    PersonSummary,
    Problem,
    Relationship,
    RelationshipPage,
    Suggestion,
    SuggestionPage,
)
from ledger.events.vocabulary import (
    FavorDeclined,
    FavorGranted,
    FavorRequested,
    FavorWithdrawn,
    GratitudeExpressed,
    IntroductionConsented,
    IntroductionMade,
    IntroductionOffered,
    IntroductionRequested,
    MeetingHeld,
    MessageSent,
    NameInvoked,
    PersonForgotten,
    PersonRegistered,
    PolicyChanged,
)

__all__ = [
    "AppendResult",
    "AsyncLedger",
    "Balance",
    "BalancePage",
    "Call",
    "Envelope",
    "Event",
    "EventPage",
    "FavorDeclined",
    "FavorGranted",
    "FavorRequested",
    "FavorWithdrawn",
    "GratitudeExpressed",
    "Horizon",
    "IntroductionConsented",
    "IntroductionMade",
    "IntroductionOffered",
    "IntroductionRequested",
    "Ledger",
    "MeetingHeld",
    "MessageSent",
    "NameInvoked",
    "PersonForgotten",
    "PersonRegistered",
    "PersonSummary",
    "PolicyChanged",
    "Problem",
    "ProblemError",
    "Relationship",
    "RelationshipPage",
    "Retry",
    "Suggestion",
    "SuggestionPage",
    "event",
]
