"""Each etiquette rule: a scenario where it fires and a near miss where it must not.

Judged in memory with the same functions the projector runs
(:func:`ledger.rules.replay.violations_of`); thresholds are probed at their
edges (23 h vs 25 h, 2 asks vs 3, 364 vs 366 days).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from ledger.projections.core import PolicyTimeline
from ledger.rules.catalogue import RULES, Violation, judge, rule
from ledger.rules.history import History
from ledger.rules.replay import violations_of
from tests.samples import START, event
from tests.test_projections import as_projected

DAY = 24


def favor_requested(requester: str, asked: str, kind: str = "referral", **extra: Any) -> Any:
    return (
        "favor.requested",
        {
            "favor_id": f"r-{uuid.uuid4().hex[:8]}",
            "requester": requester,
            "asked_of": asked,
            "kind": kind,
            **extra,
        },
    )


def favor_granted(giver: str, receiver: str, kind: str = "advice", **extra: Any) -> Any:
    return (
        "favor.granted",
        {
            "favor_id": f"g-{uuid.uuid4().hex[:8]}",
            "giver": giver,
            "receiver": receiver,
            "kind": kind,
            **extra,
        },
    )


def message(sender: str, to: str) -> Any:
    return "message.sent", {"from": sender, "to": to, "kind": "check_in"}


def meeting(initiator: str, *others: str, purpose: str = "catch_up") -> Any:
    return (
        "meeting.held",
        {
            "meeting_id": f"m-{uuid.uuid4().hex[:8]}",
            "participants": [initiator, *others],
            "initiated_by": initiator,
            "channel": "coffee",
            "purpose": purpose,
        },
    )


def intro_requested(requester: str, introducer: str, target: str) -> Any:
    return (
        "introduction.requested",
        {
            "introduction_id": f"i-{uuid.uuid4().hex[:8]}",
            "requester": requester,
            "introducer": introducer,
            "target": target,
        },
    )


def intro_offered(introducer: str, subject: str, target: str, intro: str | None = None) -> Any:
    return (
        "introduction.offered",
        {
            "introduction_id": intro or f"i-{uuid.uuid4().hex[:8]}",
            "introducer": introducer,
            "subject": subject,
            "target": target,
        },
    )


def intro_made(introducer: str, subject: str, target: str, intro: str | None = None) -> Any:
    return (
        "introduction.made",
        {
            "introduction_id": intro or f"i-{uuid.uuid4().hex[:8]}",
            "introducer": introducer,
            "subject": subject,
            "target": target,
        },
    )


def name_invoked(invoker: str, referrer: str, contacted: str, consent: str = "unknown") -> Any:
    return (
        "name.invoked",
        {"invoker": invoker, "referrer": referrer, "contacted": contacted, "consent": consent},
    )


def history(*steps: tuple[float, Any]) -> list[dict[str, Any]]:
    """Events ``hours`` after the start: ``(hours, (type, data))``."""
    return [
        event(type_, data, at=0, start=START + timedelta(hours=h)) for h, (type_, data) in steps
    ]


def judged(events: list[dict[str, Any]]) -> list[Violation]:
    projected = as_projected(events)
    return violations_of(projected, PolicyTimeline(projected))


def fired(events: list[dict[str, Any]], code: str) -> list[Violation]:
    return [v for v in judged(events) if v.code == code]


def on_last(events: list[dict[str, Any]], code: str) -> list[Violation]:
    """The ``code`` violations of the last event in the list."""
    last = uuid.UUID(events[-1]["id"])
    return [v for v in fired(events, code) if v.event_id == last]


# --- E101 ask on first contact ----------------------------------------------------


def test_e101_a_request_on_first_contact() -> None:
    events = history((0, favor_requested("ana", "ben", "introduction")))
    (v,) = fired(events, "E101")
    assert (v.offender, v.affected, v.severity) == ("ana", ("ben",), "high")
    assert "ana asked ben for an introduction on their first contact" in v.explanation
    assert v.evidence == (uuid.UUID(events[0]["id"]),)


def test_e101_advice_on_first_contact_is_low_and_an_introduction_request_counts() -> None:
    advice = fired(history((0, favor_requested("ana", "ben", "advice"))), "E101")
    assert [v.severity for v in advice] == ["low"]
    (intro,) = fired(history((0, intro_requested("ana", "ben", "cleo"))), "E101")
    assert (intro.offender, intro.affected) == ("ana", ("ben",))


def test_e101_near_miss_any_earlier_interaction() -> None:
    events = history((0, message("ben", "ana")), (1, favor_requested("ana", "ben", "introduction")))
    assert fired(events, "E101") == []


def test_e101_is_judged_in_valid_time_not_arrival_order() -> None:
    # The message happened first but arrives last: the request was not a first contact.
    events = history((1, favor_requested("ana", "ben")), (0, message("ana", "ben")))
    assert fired(events, "E101") == []


# --- E102 withdrawal before deposit -----------------------------------------------


def test_e102_asking_someone_you_never_gave_anything() -> None:
    events = history(
        (0, message("ana", "ben")),
        (1, favor_granted("ben", "ana")),
        (2, favor_requested("ana", "ben", "referral")),
    )
    (v,) = on_last(events, "E102")
    assert (v.offender, v.affected, v.severity) == ("ana", ("ben",), "medium")
    assert v.evidence == (uuid.UUID(events[2]["id"]),)
    assert "received 1 favor" in v.explanation


def test_e102_near_misses_a_deposit_first_or_advice() -> None:
    deposit = history(
        (0, favor_granted("ana", "ben")), (1, favor_requested("ana", "ben", "referral"))
    )
    assert fired(deposit, "E102") == []
    advice = history((0, message("ana", "ben")), (1, favor_requested("ana", "ben", "advice")))
    assert fired(advice, "E102") == []


# --- E103 uninvited introduction request --------------------------------------------


def test_e103_an_introduction_nobody_offered() -> None:
    events = history((0, message("ana", "ben")), (1, intro_requested("ana", "ben", "cleo")))
    (v,) = fired(events, "E103")
    assert (v.offender, v.affected) == ("ana", ("ben", "cleo"))
    assert "ben never offered to introduce ana" in v.explanation


def test_e103_near_misses_an_offer_or_a_connection() -> None:
    offered = history(
        (0, intro_offered("ben", "ana", "dev")), (1, intro_requested("ana", "ben", "cleo"))
    )
    assert fired(offered, "E103") == []
    connected = history(
        (0, favor_granted("ana", "ben")),
        (1, favor_granted("ben", "ana")),
        (2, intro_requested("ana", "ben", "cleo")),
    )
    assert fired(connected, "E103") == []
    # An offer to introduce someone else to ana does not invite ana's request.
    other = history(
        (0, intro_offered("ben", "dev", "ana")), (1, intro_requested("ana", "ben", "cleo"))
    )
    assert len(fired(other, "E103")) == 1


# --- E104 name dropped without consent -----------------------------------------------


def test_e104_a_name_used_without_consent() -> None:
    (v,) = fired(history((0, name_invoked("ana", "ben", "cleo"))), "E104")
    assert (v.offender, v.affected, v.severity) == ("ana", ("ben", "cleo"), "high")
    assert "ben never offered or made an introduction to cleo" in v.explanation


def test_e104_an_explicit_no_fires_even_after_an_offer() -> None:
    events = history(
        (0, intro_offered("ben", "ana", "cleo")),
        (1, name_invoked("ana", "ben", "cleo", "not_given")),
    )
    (v,) = fired(events, "E104")
    assert "ben said no" in v.explanation
    assert v.evidence[0] == uuid.UUID(events[0]["id"])


def test_e104_near_misses_consent_given_or_an_offer_from_the_referrer() -> None:
    assert fired(history((0, name_invoked("ana", "ben", "cleo", "given"))), "E104") == []
    offered = history(
        (0, intro_offered("ben", "ana", "cleo")), (1, name_invoked("ana", "ben", "cleo"))
    )
    assert fired(offered, "E104") == []
    made = history((0, intro_made("ben", "cleo", "ana")), (1, name_invoked("ana", "ben", "cleo")))
    assert fired(made, "E104") == []


def test_e104_an_offer_that_arrives_late_still_clears_the_name() -> None:
    # Recorded after the name was used, but it happened before: consent stands.
    events = history(
        (1, name_invoked("ana", "ben", "cleo")), (0, intro_offered("ben", "ana", "cleo"))
    )
    assert fired(events, "E104") == []


# --- E105 agenda meeting ----------------------------------------------------------------


def test_e105_a_pitch_to_people_who_are_not_connections() -> None:
    events = history(
        (0, favor_granted("ana", "ben")),
        (1, favor_granted("ben", "ana")),
        (2, meeting("ana", "ben", "cleo", purpose="pitch")),
    )
    (v,) = fired(events, "E105")
    assert (v.offender, v.affected) == ("ana", ("cleo",))
    assert "pitch meeting with cleo" in v.explanation


def test_e105_near_misses_a_pitch_among_connections_or_a_catch_up() -> None:
    connected = history(
        (0, favor_granted("ana", "ben")),
        (1, favor_granted("ben", "ana")),
        (2, meeting("ana", "ben", purpose="resume_review")),
    )
    assert fired(connected, "E105") == []
    assert fired(history((0, meeting("ana", "ben", purpose="catch_up"))), "E105") == []
    # The pitch was the other person's idea: not ana's agenda.
    assert fired(history((0, meeting("ben", "ana", purpose="get_to_know"))), "E105") == []


# --- E106 the big ask --------------------------------------------------------------------


@pytest.mark.parametrize(("hours", "fires"), [(23, True), (24, True), (25, False)])
def test_e106_a_request_right_after_a_meeting_you_initiated(hours: int, fires: bool) -> None:
    events = history(
        (0, meeting("ana", "ben", purpose="get_to_know")),
        (hours, favor_requested("ana", "ben", "referral")),
    )
    found = fired(events, "E106")
    assert bool(found) is fires
    if fires:
        assert found[0].evidence == (uuid.UUID(events[0]["id"]), uuid.UUID(events[1]["id"]))
        assert "within 24 hours" in found[0].explanation


def test_e106_near_misses_advice_or_a_meeting_the_other_initiated() -> None:
    advice = history(
        (0, meeting("ana", "ben", purpose="catch_up")), (2, favor_requested("ana", "ben", "advice"))
    )
    assert fired(advice, "E106") == []
    theirs = history(
        (0, meeting("ben", "ana", purpose="catch_up")), (2, favor_requested("ana", "ben"))
    )
    assert fired(theirs, "E106") == []


def test_e106_the_window_follows_the_policy_in_force() -> None:
    events = history(
        (-1, ("policy.changed", {"big_ask_window_hours": 48})),
        (0, meeting("ana", "ben", purpose="get_to_know")),
        (30, favor_requested("ana", "ben")),
    )
    (v,) = fired(events, "E106")
    assert "within 48 hours" in v.explanation


# --- E107 ask after silence ----------------------------------------------------------------


@pytest.mark.parametrize(("days", "fires"), [(364, False), (366, True)])
def test_e107_asking_after_a_year_of_silence(days: int, fires: bool) -> None:
    events = history((0, message("ana", "ben")), (days * DAY, favor_requested("ana", "ben")))
    found = fired(events, "E107")
    assert bool(found) is fires
    if fires:
        assert found[0].evidence == (uuid.UUID(events[0]["id"]), uuid.UUID(events[1]["id"]))
        assert f"{days} days after their last real contact" in found[0].explanation


def test_e107_a_reconnection_a_day_before_clears_it_a_quick_hello_does_not() -> None:
    ask_at = 400 * DAY
    reconnected = history(
        (0, message("ana", "ben")),
        (ask_at - 25, meeting("ana", "ben", purpose="catch_up")),
        (ask_at, favor_requested("ana", "ben", "advice")),
    )
    assert fired(reconnected, "E107") == []
    hello = history(
        (0, message("ana", "ben")),
        (ask_at - 2, message("ana", "ben")),
        (ask_at, favor_requested("ana", "ben", "advice")),
    )
    assert len(fired(hello, "E107")) == 1


# --- E108 quid pro quo -------------------------------------------------------------------


def test_e108_help_given_or_asked_as_a_trade() -> None:
    events = history(
        (0, favor_granted("ana", "ben", "review", expects_return=True)),
        (1, favor_requested("cleo", "dev", "review", offers_in_return="a dinner")),
        (2, favor_granted("ben", "ana", "review")),
    )
    found = fired(events, "E108")
    assert sorted((v.offender, v.affected) for v in found) == [
        ("ana", ("ben",)),
        ("cleo", ("dev",)),
    ]
    assert all(v.severity == "low" for v in found)


# --- E109 conduit --------------------------------------------------------------------------


def test_e109_three_asks_for_introductions_within_the_window() -> None:
    events = history(
        (0, favor_requested("ana", "ben", "introduction")),
        (30 * DAY, intro_requested("ana", "ben", "cleo")),
        (60 * DAY, favor_requested("ana", "ben", "contacts")),
    )
    (v,) = fired(events, "E109")
    assert v.event_id == uuid.UUID(events[2]["id"])
    assert v.evidence == tuple(uuid.UUID(e["id"]) for e in events)
    assert "3 times within 90 days" in v.explanation


def test_e109_near_misses_two_asks_a_wide_span_other_kinds_or_a_gift() -> None:
    two = history(
        (0, favor_requested("ana", "ben", "introduction")),
        (30 * DAY, intro_requested("ana", "ben", "cleo")),
    )
    assert fired(two, "E109") == []
    wide = history(
        (0, favor_requested("ana", "ben", "introduction")),
        (50 * DAY, intro_requested("ana", "ben", "cleo")),
        (91 * DAY, favor_requested("ana", "ben", "contacts")),
    )
    assert fired(wide, "E109") == []
    other_kinds = history(
        (0, favor_requested("ana", "ben", "introduction")),
        (1 * DAY, favor_requested("ana", "ben", "advice")),
        (2 * DAY, favor_requested("ana", "ben", "review")),
    )
    assert fired(other_kinds, "E109") == []
    gift = history(
        (0, favor_requested("ana", "ben", "introduction")),
        (1 * DAY, favor_granted("ana", "ben", "advice")),
        (2 * DAY, intro_requested("ana", "ben", "cleo")),
        (3 * DAY, favor_requested("ana", "ben", "contacts")),
    )
    assert fired(gift, "E109") == []


# --- E110 vouching for a stranger ------------------------------------------------------------


def test_e110_introducing_someone_you_do_not_know() -> None:
    (v,) = fired(history((0, intro_made("ben", "ana", "cleo"))), "E110")
    assert (v.offender, v.affected, v.severity) == ("ben", ("cleo", "ana"), "low")


def test_e110_the_introductions_own_steps_are_not_a_relationship() -> None:
    events = history(
        (0, intro_offered("ben", "ana", "cleo", intro="i-1")),
        (1, intro_made("ben", "ana", "cleo", intro="i-1")),
    )
    assert len(fired(events, "E110")) == 1


def test_e110_near_miss_an_earlier_contact() -> None:
    events = history((0, message("ana", "ben")), (1, intro_made("ben", "ana", "cleo")))
    assert fired(events, "E110") == []


# --- E111 unreciprocated generosity -----------------------------------------------------------


@pytest.mark.parametrize(
    ("grants_at_days", "fires"),
    [((0, 90, 180), True), ((0, 90, 179), False), ((0, 180), False)],
)
def test_e111_one_way_generosity(grants_at_days: tuple[int, ...], fires: bool) -> None:
    events = history(*((d * DAY, favor_granted("ben", "ana")) for d in grants_at_days))
    found = fired(events, "E111")
    assert bool(found) is fires
    if fires:
        (v,) = found
        assert (v.offender, v.affected) == ("ana", ("ben",))
        assert v.evidence == tuple(uuid.UUID(e["id"]) for e in events)
        assert "ana has received 3 favors from ben over 180 days" in v.explanation


def test_e111_evidence_stays_bounded_in_a_long_one_way_flow() -> None:
    events = history(*((d * 2 * DAY, favor_granted("ben", "ana")) for d in range(120)))
    last = on_last(events, "E111")
    (v,) = last
    ids = [uuid.UUID(e["id"]) for e in events]
    assert v.evidence == (*ids[:25], *ids[-26:-1], ids[-1])
    assert "ana has received 120 favors from ben over 238 days" in v.explanation


def test_e111_near_miss_one_favor_back() -> None:
    events = history(
        (0, favor_granted("ben", "ana")),
        (10 * DAY, favor_granted("ana", "ben")),
        (90 * DAY, favor_granted("ben", "ana")),
        (200 * DAY, favor_granted("ben", "ana")),
    )
    assert fired(events, "E111") == []


# --- the catalogue ------------------------------------------------------------------------------


def test_the_catalogue_has_e101_to_e111_each_with_a_principle() -> None:
    assert sorted(RULES) == [f"E{n}" for n in range(101, 112)]
    for r in RULES.values():
        assert r.title and r.principle.endswith(".")
        assert r.fires_on, r.code
        assert r.judge.__doc__, f"{r.code} needs a docstring saying when it fires"


def test_a_rule_is_one_registered_function() -> None:
    """Adding a rule is one function: registered, it is judged with the others."""

    @rule(
        "E999",
        title="test rule",
        principle="Tests can add rules.",
        severity="low",
        fires_on=(),
    )
    def never(*_: Any) -> Any:
        """Never fires."""
        yield from ()

    try:
        assert "E999" in RULES
        with pytest.raises(ValueError, match="registered twice"):
            rule("E999", title="x", principle="x.", severity="low", fires_on=())(never)
        with pytest.raises(ValueError, match="thresholds the policy lacks"):
            rule(
                "E998", title="x", principle="x.", severity="low", fires_on=(), thresholds=("nope",)
            )(never)
    finally:
        del RULES["E999"]


def test_well_behaved_people_have_no_violations() -> None:
    events = history(
        (0, meeting("ana", "ben", purpose="get_to_know")),
        (2 * DAY, favor_granted("ana", "ben", "advice")),
        (3 * DAY, favor_granted("ben", "ana", "review")),
        (5 * DAY, favor_requested("ana", "ben", "referral")),
        (6 * DAY, intro_offered("ben", "ana", "cleo", intro="i-9")),
        (7 * DAY, intro_made("ben", "ana", "cleo", intro="i-9")),
        (8 * DAY, name_invoked("ana", "ben", "cleo", "given")),
        (9 * DAY, ("gratitude.expressed", {"from": "ana", "to": "ben"})),
    )
    assert judged(events) == []


def test_judge_reads_only_the_history_it_is_given() -> None:
    (request,) = as_projected(history((0, favor_requested("ana", "ben", "advice"))))
    first = judge(request, History(), PolicyTimeline().latest())
    assert [v.code for v in first] == ["E101"]
    assert isinstance(first[0].occurred_at, datetime)
