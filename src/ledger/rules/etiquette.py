"""The v1 etiquette rules, E101-E111 (PRODUCT.md section 4), one function each.

Each rule is judged against the history just before the event (see
:mod:`ledger.rules.history`) with the policy in force when the event happened,
and says in plain words who did what, with the counts and thresholds involved.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta

from ledger.events.vocabulary import (
    FavorGranted,
    FavorRequested,
    IntroductionMade,
    IntroductionRequested,
    MeetingHeld,
    NameInvoked,
)
from ledger.policy import Policy
from ledger.projections.core import ProjectedEvent
from ledger.rules.catalogue import Finding, rule
from ledger.rules.history import CONDUIT_KINDS, Fact, History

AGENDA_PURPOSES = frozenset({"pitch", "resume_review"})
SOCIAL_PURPOSES = frozenset({"get_to_know", "catch_up"})


def _ask(event: ProjectedEvent) -> tuple[str, str, str] | None:
    """(requester, asked person, what was asked) for the two kinds of request."""
    data = event.data
    if isinstance(data, FavorRequested):
        return data.requester, data.asked_of, _favor(data.kind)
    if isinstance(data, IntroductionRequested):
        return data.requester, data.introducer, f"an introduction to {data.target}"
    return None


def _favor(kind: str) -> str:
    words = {
        "introduction": "an introduction",
        "referral": "a referral",
        "advice": "advice",
        "review": "a review",
        "resume_forward": "a resume forward",
        "contacts": "contacts",
        "endorsement": "an endorsement",
        "money": "money",
        "other": "a favor",
    }
    return words.get(kind, "a favor")


def _days(delta: timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:.0f} days" if days >= 2 else f"{delta.total_seconds() / 3600:.0f} hours"


# Evidence stays readable when a one-way flow runs to hundreds of favors: the
# first ones (where the span starts) and the latest ones, the count in words.
EVIDENCE_LIMIT = 50


def _bounded(facts: Sequence[Fact]) -> tuple[uuid.UUID, ...]:
    if len(facts) <= EVIDENCE_LIMIT:
        return tuple(f.event_id for f in facts)
    half = EVIDENCE_LIMIT // 2
    return tuple(f.event_id for f in (*facts[:half], *facts[-half:]))


def _n(count: int, what: str) -> str:
    return f"{count} {what}" if count == 1 else f"{count} {what}s"


@rule(
    "E101",
    title="ask on first contact",
    principle="The first interaction should not be a request.",
    severity="high",
    fires_on=(FavorRequested, IntroductionRequested),
)
def ask_on_first_contact(
    event: ProjectedEvent, history: History, policy: Policy
) -> Iterator[Finding]:
    """Fires when requester and asked person had no interaction before the request.

    Asking for advice is the mildest request, so it counts as low severity.
    """
    ask = _ask(event)
    assert ask is not None
    requester, asked, what = ask
    if history.contacts(requester, asked):
        return
    advice = isinstance(event.data, FavorRequested) and event.data.kind == "advice"
    yield Finding(
        offender=requester,
        affected=(asked,),
        severity="low" if advice else None,
        explanation=(
            f"{requester} asked {asked} for {what} on their first contact; "
            "the first interaction should not be a request"
        ),
    )


@rule(
    "E102",
    title="withdrawal before deposit",
    principle="Build capital before withdrawing it.",
    severity="medium",
    fires_on=(FavorRequested,),
)
def withdrawal_before_deposit(
    event: ProjectedEvent, history: History, policy: Policy
) -> Iterator[Finding]:
    """Fires on a request (not for advice) to someone the requester never gave anything."""
    data = event.data
    assert isinstance(data, FavorRequested)
    if data.kind == "advice" or history.granted(data.requester, data.asked_of):
        return
    if history.is_connection(data.requester, data.asked_of):
        return
    received = history.granted(data.asked_of, data.requester)
    yield Finding(
        offender=data.requester,
        affected=(data.asked_of,),
        explanation=(
            f"{data.requester} asked {data.asked_of} for {_favor(data.kind)} without ever having "
            f"given {data.asked_of} anything (and has received "
            f"{_n(len(received), 'favor')} from them); build capital before withdrawing it"
        ),
    )


@rule(
    "E103",
    title="uninvited introduction request",
    principle="Introductions are offered, not demanded.",
    severity="medium",
    fires_on=(IntroductionRequested,),
)
def uninvited_introduction_request(
    event: ProjectedEvent, history: History, policy: Policy
) -> Iterator[Finding]:
    """Fires when the introducer never offered to introduce the requester to anyone
    and the two are not a connection."""
    data = event.data
    assert isinstance(data, IntroductionRequested)
    offers = [
        f for f in history.done("offered", data.introducer, data.requester) if f.detail == "subject"
    ]
    if offers or history.is_connection(data.requester, data.introducer):
        return
    yield Finding(
        offender=data.requester,
        affected=(data.introducer, data.target),
        explanation=(
            f"{data.requester} asked {data.introducer} for an introduction to {data.target}, but "
            f"{data.introducer} never offered to introduce {data.requester} and they are not a "
            "connection; introductions are offered, not demanded"
        ),
    )


@rule(
    "E104",
    title="name dropped without consent",
    principle="A name is a door-opener only when its owner opens it.",
    severity="high",
    fires_on=(NameInvoked,),
)
def name_dropped_without_consent(
    event: ProjectedEvent, history: History, policy: Policy
) -> Iterator[Finding]:
    """Fires unless the referrer consented: consent ``given``, or (when unknown) an
    earlier offer or introduction by the referrer involving the contacted person.
    ``not_given`` fires whatever came before."""
    data = event.data
    assert isinstance(data, NameInvoked)
    if data.consent == "given":
        return
    doors = [
        f
        for f in history.between(data.referrer, data.contacted)
        if f.kind in ("offered", "introduced") and f.actor == data.referrer
    ]
    if data.consent == "unknown" and doors:
        return
    why = (
        f"{data.referrer} said no"
        if data.consent == "not_given"
        else f"{data.referrer} never offered or made an introduction to {data.contacted}"
    )
    yield Finding(
        offender=data.invoker,
        affected=(data.referrer, data.contacted),
        evidence=tuple(f.event_id for f in doors),
        explanation=(
            f"{data.invoker} used {data.referrer}'s name to approach {data.contacted} without "
            f"consent ({why}); a name is a door-opener only when its owner opens it"
        ),
    )


@rule(
    "E105",
    title="agenda meeting",
    principle="A meeting you asked for is about the other person.",
    severity="medium",
    fires_on=(MeetingHeld,),
)
def agenda_meeting(event: ProjectedEvent, history: History, policy: Policy) -> Iterator[Finding]:
    """Fires when the initiator's purpose is a pitch or a resume review with people
    who are not yet connections."""
    data = event.data
    assert isinstance(data, MeetingHeld)
    if data.purpose not in AGENDA_PURPOSES:
        return
    initiator = data.initiated_by
    strangers = tuple(
        p for p in data.participants if p != initiator and not history.is_connection(initiator, p)
    )
    if not strangers:
        return
    purpose = data.purpose.replace("_", " ")
    yield Finding(
        offender=initiator,
        affected=strangers,
        explanation=(
            f"{initiator} set up a {purpose} meeting with {', '.join(strangers)}, "
            f"{'who is' if len(strangers) == 1 else 'who are'} not yet a connection; "
            "a meeting you asked for is about the other person"
        ),
    )


@rule(
    "E106",
    title="the big ask",
    principle="A meeting you asked for is about the other person, not a pretext for a request.",
    severity="medium",
    fires_on=(FavorRequested,),
    thresholds=("big_ask_window_hours",),
)
def the_big_ask(event: ProjectedEvent, history: History, policy: Policy) -> Iterator[Finding]:
    """Fires on a request (not for advice) within the window after a get-to-know or
    catch-up meeting the requester initiated with that person, between non-connections."""
    data = event.data
    assert isinstance(data, FavorRequested)
    if data.kind == "advice" or history.is_connection(data.requester, data.asked_of):
        return
    window = timedelta(hours=policy.big_ask_window_hours)
    meetings = [
        f
        for f in history.done("met", data.requester, data.asked_of)
        if f.detail in SOCIAL_PURPOSES and event.occurred_at - f.occurred_at <= window
    ]
    if not meetings:
        return
    meeting = meetings[-1]
    yield Finding(
        offender=data.requester,
        affected=(data.asked_of,),
        evidence=(meeting.event_id,),
        explanation=(
            f"{data.requester} asked {data.asked_of} for {_favor(data.kind)} "
            f"{_days(event.occurred_at - meeting.occurred_at)} after a "
            f"{meeting.detail.replace('_', ' ')} meeting {data.requester} initiated "
            f"(within {policy.big_ask_window_hours:g} hours); the meeting should not be a "
            "pretext for a request"
        ),
    )


@rule(
    "E107",
    title="ask after silence",
    principle="Reconnect before you ask after years of silence.",
    severity="medium",
    fires_on=(FavorRequested,),
    thresholds=("silence_days", "reconnect_min_hours"),
)
def ask_after_silence(event: ProjectedEvent, history: History, policy: Policy) -> Iterator[Finding]:
    """Fires when the latest contact at least ``reconnect_min_hours`` before the ask is
    older than ``silence_days``: a quick hello right before asking does not count
    as reconnecting. People with no earlier contact at all are E101's concern."""
    data = event.data
    assert isinstance(data, FavorRequested)
    settled = event.occurred_at - timedelta(hours=policy.reconnect_min_hours)
    last = history.last_contact_by(data.requester, data.asked_of, settled)
    if last is None:
        return
    silence = event.occurred_at - last.occurred_at
    if silence <= timedelta(days=policy.silence_days):
        return
    yield Finding(
        offender=data.requester,
        affected=(data.asked_of,),
        evidence=(last.event_id,),
        explanation=(
            f"{data.requester} asked {data.asked_of} for {_favor(data.kind)} {_days(silence)} "
            f"after their last real contact (more than {policy.silence_days:g} days); reconnect "
            f"at least {policy.reconnect_min_hours:g} hours before asking after a long silence"
        ),
    )


@rule(
    "E108",
    title="quid pro quo",
    principle="Help given to create a debt is a trade, not a relationship.",
    severity="low",
    fires_on=(FavorGranted, FavorRequested),
)
def quid_pro_quo(event: ProjectedEvent, history: History, policy: Policy) -> Iterator[Finding]:
    """Fires on a favor granted with ``expects_return`` or requested with ``offers_in_return``."""
    data = event.data
    if isinstance(data, FavorGranted) and data.expects_return:
        yield Finding(
            offender=data.giver,
            affected=(data.receiver,),
            explanation=(
                f"{data.giver} gave {data.receiver} {_favor(data.kind)} expecting something in "
                "return; help given to create a debt is a trade, not a relationship"
            ),
        )
    elif isinstance(data, FavorRequested) and data.offers_in_return:
        yield Finding(
            offender=data.requester,
            affected=(data.asked_of,),
            explanation=(
                f"{data.requester} asked {data.asked_of} for {_favor(data.kind)} offering "
                f"{data.offers_in_return!r} in return; help bought is a trade, not a relationship"
            ),
        )


@rule(
    "E109",
    title="conduit",
    principle="People are not pass-throughs.",
    severity="medium",
    fires_on=(IntroductionRequested, FavorRequested),
    thresholds=("conduit_window_days", "conduit_min_asks"),
)
def conduit(event: ProjectedEvent, history: History, policy: Policy) -> Iterator[Finding]:
    """Fires on the ``conduit_min_asks``-th (and every further) ask for introductions or
    contacts of the same person within ``conduit_window_days``, while the requester
    gave that person nothing in the window."""
    ask = _ask(event)
    assert ask is not None
    requester, asked, _ = ask
    if isinstance(event.data, FavorRequested) and event.data.kind not in CONDUIT_KINDS:
        return
    since = event.occurred_at - timedelta(days=policy.conduit_window_days)
    asks = [
        f
        for f in history.done("asked", requester, asked)
        if f.detail in CONDUIT_KINDS and f.occurred_at >= since
    ]
    if len(asks) + 1 < policy.conduit_min_asks:
        return
    if any(f.occurred_at >= since for f in history.granted(requester, asked)):
        return
    yield Finding(
        offender=requester,
        affected=(asked,),
        evidence=_bounded(asks),
        explanation=(
            f"{requester} has asked {asked} for introductions or contacts "
            f"{len(asks) + 1} times within {policy.conduit_window_days:g} days (the limit is "
            f"{policy.conduit_min_asks - 1}) while giving them nothing; people are not "
            "pass-throughs"
        ),
    )


@rule(
    "E110",
    title="vouching for a stranger",
    principle="Nobody can vouch for a stranger.",
    severity="low",
    fires_on=(IntroductionMade,),
)
def vouching_for_a_stranger(
    event: ProjectedEvent, history: History, policy: Policy
) -> Iterator[Finding]:
    """Fires when the introducer had no contact with the subject before, other than
    the steps of this very introduction."""
    data = event.data
    assert isinstance(data, IntroductionMade)
    stream = data.stream()
    if any(f.stream != stream for f in history.contacts(data.introducer, data.subject)):
        return
    yield Finding(
        offender=data.introducer,
        affected=(data.target, data.subject),
        explanation=(
            f"{data.introducer} introduced {data.subject} to {data.target} without any "
            f"relationship with {data.subject}; nobody can vouch for a stranger"
        ),
    )


@rule(
    "E111",
    title="unreciprocated generosity",
    principle="Help that only flows one way erodes a network.",
    severity="low",
    fires_on=(FavorGranted,),
    thresholds=("generosity_min_favors", "generosity_min_span_days"),
)
def unreciprocated_generosity(
    event: ProjectedEvent, history: History, policy: Policy
) -> Iterator[Finding]:
    """Fires on a grant that brings one side to ``generosity_min_favors`` favors (or
    more), the first and this one ``generosity_min_span_days`` apart, with nothing
    received back; the taker is the offender."""
    data = event.data
    assert isinstance(data, FavorGranted)
    if history.granted(data.receiver, data.giver):
        return
    given = history.granted(data.giver, data.receiver)
    count = len(given) + 1
    if count < policy.generosity_min_favors or not given:
        return
    span = event.occurred_at - given[0].occurred_at
    if span < timedelta(days=policy.generosity_min_span_days):
        return
    yield Finding(
        offender=data.receiver,
        affected=(data.giver,),
        evidence=_bounded(given),
        explanation=(
            f"{data.receiver} has received {count} favors from {data.giver} over "
            f"{_days(span)} and given none back (at least {policy.generosity_min_favors} "
            f"favors over {policy.generosity_min_span_days:g} days); help that only flows "
            "one way erodes a network"
        ),
    )
