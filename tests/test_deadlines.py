"""Deadlines, action points, /away and /timezone as people use them, plus working time."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from handlers.clock import FrozenClock
from handlers.deadlines import parse_until
from handlers.dispatch import Core
from handlers.reminders import due_reminders, sweep
from messages.render import FORMATS
from storage.db import Database
from storage.deadlines import (
    DEFAULT_OFFSETS,
    audience,
    find_timezone,
    load_demo_chairs,
    parse_offsets,
    scheduled_at,
    send_time,
    sync_deadline,
    useful_offsets,
)
from storage.models import ActionPoint, Chair, Deadline, DeadlineKind, Person, Reminder, RoleName
from tests.conftest import COORDINATOR, FP_CHILE, FP_GERMANY, Transcript

ALT_CHILE = "alt.chile@demo.invalid"


def every_format(chat: Transcript, index: int = -1) -> dict[str, str]:
    return {fmt: chat.text(index, fmt) for fmt in FORMATS}


async def fill(chat: Transcript, as_: str, *answers: str) -> None:
    for answer in answers:
        await chat.say(answer, as_=as_)
        assert not chat.last().errors, (answer, chat.last().errors, chat.text())


# -- working time, offsets, parsing ---------------------------------------------------------


def test_days_count_on_the_wall_clock_across_the_dst_change() -> None:
    due = datetime(2026, 3, 31, 15, 0, tzinfo=UTC)  # Tuesday 17:00 in Berlin (CEST)
    week = scheduled_at(due, "7d", "Europe/Berlin")
    assert week == datetime(2026, 3, 24, 16, 0, tzinfo=UTC)  # 17:00 CET, not 18:00
    # Two days before is Sunday 29 March, the day clocks jump: moved to Monday 09:00 CEST.
    assert send_time(due, "2d", "Europe/Berlin", "DE") == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)


def test_quiet_hours_weekends_and_holidays_move_to_the_next_working_morning() -> None:
    due = datetime(2018, 10, 5, 15, 0, tzinfo=UTC)  # Friday 5 October, 17:00 Berlin
    # 2 days before: Wednesday 3 October, German Unity Day -> Thursday 09:00.
    assert send_time(due, "2d", "Europe/Berlin", "DE") == datetime(2018, 10, 4, 7, 0, tzinfo=UTC)
    assert send_time(due, "2d", "Europe/Madrid", "ES") == datetime(2018, 10, 3, 15, 0, tzinfo=UTC)
    late = datetime(2018, 10, 5, 20, 30, tzinfo=UTC)  # 22:30 Berlin
    # 1 day before is 22:30 on Thursday: moved to Friday 09:00, still before the deadline.
    assert send_time(late, "1d", "Europe/Berlin", "DE") == datetime(2018, 10, 5, 7, 0, tzinfo=UTC)
    # 12 hours before is 10:30 Friday; the morning of a 06:00 deadline would pass it: kept.
    early = datetime(2018, 10, 8, 4, 0, tzinfo=UTC)  # Monday 06:00 Berlin
    assert send_time(early, "1d", "Europe/Berlin", "DE") == datetime(2018, 10, 7, 4, 0,
                                                                      tzinfo=UTC)


def test_offsets_parse_strictly_and_those_already_past_are_never_planned() -> None:
    assert parse_offsets("1d, 7D 12h morning 7d") == ["7d", "1d", "12h", "morning"]
    assert parse_offsets("0d") == ["morning"]
    for bad in ("7", "1w", "0h", "soon"):
        with pytest.raises(ValueError):
            parse_offsets(bad)
    d = Deadline(due_at=datetime(2018, 3, 5, 17, tzinfo=UTC), offsets=list(DEFAULT_OFFSETS),
                 created_at=datetime(2018, 3, 1, 9, tzinfo=UTC))
    assert useful_offsets(d) == ["2d", "1d", "morning"]  # 7 days is longer than the time left


@pytest.mark.parametrize(("text", "expected"), [
    ("2018-04-20", date(2018, 4, 20)), ("20 April", date(2018, 4, 20)),
    ("April 20, 2018", date(2018, 4, 20)), ("in 2 weeks", date(2018, 3, 15)),
    ("in a month", date(2018, 4, 1)), ("tomorrow", date(2018, 3, 2)),
    ("1 feb", date(2019, 2, 1)),  # a day already past this year means next year
])
def test_away_dates_parse(text: str, expected: date) -> None:
    assert parse_until(text, date(2018, 3, 1)) == expected


@pytest.mark.parametrize("text", ["someday", "in 2 fortnights", "31 June", "2018-13-01",
                                  "next week-ish", ""])
def test_away_dates_that_mean_nothing_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_until(text, date(2018, 3, 1))


def test_time_zones_are_found_in_any_case_with_suggestions_for_typos() -> None:
    assert find_timezone("europe/berlin") == ("Europe/Berlin", [])
    found, close = find_timezone("Europe/Berln")
    assert found is None and "Europe/Berlin" in close
    assert find_timezone("Berlin")[1] == ["Europe/Berlin"]


# -- /timezone and /away --------------------------------------------------------------------


async def test_timezone_is_validated_with_suggestions(chat: Transcript, demo_db: Database
                                                      ) -> None:
    await chat.say("/timezone Europe/Berln", as_=FP_GERMANY)
    texts = every_format(chat)
    assert "I don't know the time zone “Europe/Berln”. Did you mean Europe/Berlin" in \
        texts["plain"]
    await chat.say("/timezone america/santiago", as_=FP_GERMANY)
    assert "Your time zone is now America/Santiago (it is 1 March 2018, 06:00" in chat.text()
    async with demo_db.transaction() as session:
        tz = await session.scalar(select(Person.timezone).where(Person.email == FP_GERMANY))
    assert tz == "America/Santiago"


async def test_away_pauses_reminders_and_hands_them_to_the_alternate(
    chat: Transcript, demo_db: Database, clock: FrozenClock
) -> None:
    await chat.say("/away until 2018-02-20", as_=FP_CHILE)
    assert chat.text() == ("20 February 2018 has already passed: give a day from today on, "
                           "e.g. /away in 2 weeks.")
    await chat.say("/away until someday", as_=FP_CHILE)
    assert "I could not read “until someday” as a day." in chat.text()
    await chat.say("/away in 2 weeks", as_=FP_CHILE)
    texts = every_format(chat)
    assert texts["plain"].startswith("Your reminders are paused until 15 March 2018 "
                                     "(inclusive); meanwhile the alternates of Chile get them")
    # A deadline in 10 days: its 7-day reminder goes to Chile's alternate, not its focal point.
    async with demo_db.transaction() as session:
        await sync_deadline(session, DeadlineKind.CUSTOM, None, clock.now() + timedelta(days=10),
                            "Share the NAP review", audience(roles=[RoleName.FOCAL_POINT]),
                            now=clock.now())
    at = clock.now() + timedelta(days=3, hours=8)  # Sunday 4 March... moved to Monday
    at = datetime(2018, 3, 5, 15, 0, tzinfo=UTC)  # Monday, 12:00 in Santiago
    async with demo_db.transaction() as session:
        due = [c for c in await due_reminders(session, at=at)
               if c.deadline.title == "Share the NAP review" and c.member
               and c.member.code == "chile"]
    assert [(c.person.email, c.status, c.reason, c.handed_over) for c in due] == [
        (FP_CHILE, "skipped", "away", False), (ALT_CHILE, "due", "", True)]
    await chat.say("/away off", as_=FP_CHILE)
    assert chat.text() == "Welcome back: your reminders are on again."


# -- /deadline new, /deadlines, /deadline done ----------------------------------------------


async def test_the_secretariat_sets_a_deadline_and_bad_answers_are_re_asked(
    chat: Transcript, demo_db: Database
) -> None:
    await chat.say("/deadline new", as_=FP_CHILE)
    assert "Only the secretariat can use /deadline new" in chat.text()
    await chat.say("/deadline new", as_=COORDINATOR)
    assert chat.last().step is not None and chat.last().step.field.name == "title"
    await fill(chat, COORDINATOR, "Nominations for the focal point spotlight", "-")
    await chat.say("2018-02-01", as_=COORDINATOR)  # a deadline in the past
    assert chat.last().errors == {"due_date": "That moment has already passed: a deadline "
                                              "must lie in the future."}
    await fill(chat, COORDINATOR, "2018-03-06")
    await chat.say("25:00", as_=COORDINATOR)
    assert "“25:00” is not a time" in chat.last().errors["due_time"]
    await fill(chat, COORDINATOR, "12:00", "1")  # noon New York; every member
    await chat.say("7d 1d", as_=COORDINATOR)  # 7 days is longer than the 5 days left
    assert chat.last().errors == {"offsets": "A reminder 7d before cannot go out: the deadline "
                                             "is 5 days away. Give shorter offsets."}
    await chat.say("2d morning", as_=COORDINATOR)
    assert chat.keys == ["deadlines.created"]
    texts = every_format(chat)
    assert texts["plain"].startswith("Deadline #")
    assert "due 6 March 2018, 12:00 (America/New_York), for every member" in texts["plain"]
    assert "Reminders: 2 days before, the morning of, in each person's working hours." in \
        texts["plain"]
    assert "<b>Nominations for the focal point spotlight</b>" in texts["html"]
    async with demo_db.transaction() as session:
        d = await session.scalar(select(Deadline).where(Deadline.title.startswith("Nominations")))
    assert d is not None and d.offsets == ["2d", "morning"]
    assert d.due_at == datetime(2018, 3, 6, 17, 0, tzinfo=UTC)

    await chat.say("/deadlines", as_=FP_CHILE)
    texts = every_format(chat)
    assert "Your deadlines (times in America/Santiago)" in texts["plain"]
    assert f"#{d.id} Nominations for the focal point spotlight: due 6 March 2018, 14:00 " \
           "(America/Santiago) · for Chile" in texts["plain"]
    await chat.say(f"/deadline done {d.id}", as_=FP_CHILE)
    assert chat.text() == ("Marked done: “Nominations for the focal point spotlight” for Chile. "
                           "No more reminders about it.")
    await chat.say("/deadlines", as_=ALT_CHILE)  # done for the member, so for its alternate
    assert "(America/Santiago) · for Chile · done" in chat.text()
    await chat.say("/deadline done 999", as_=FP_CHILE)
    assert chat.text() == "There is no open deadline #999. Send /deadlines to see yours."
    await chat.say("/deadline frobnicate", as_=FP_CHILE)
    assert chat.text().startswith("Use /deadline done N")


async def test_those_who_are_done_get_no_reminder(demo_db: Database, clock: FrozenClock,
                                                  chat: Transcript) -> None:
    async with demo_db.transaction() as session:
        d = await sync_deadline(session, DeadlineKind.CUSTOM, None,
                                datetime(2018, 3, 9, 20, 0, tzinfo=UTC), "Photo for the spotlight",
                                audience(roles=[RoleName.FOCAL_POINT]), now=clock.now())
    await chat.say(f"/deadline done {d.id}", as_=ALT_CHILE)
    async with demo_db.transaction() as session:
        won = await sweep(session, at=datetime(2018, 3, 8, 14, 0, tzinfo=UTC))
    chile = [(c.person.email, c.status, c.reason) for c in won
             if c.deadline.id == d.id and c.member and c.member.code == "chile"
             and c.reason != "superseded"]  # the 7-day one fell while nobody swept
    assert sorted(chile) == [(ALT_CHILE, "skipped", "done"), (FP_CHILE, "skipped", "done")]
    germany = [c for c in won if c.deadline.id == d.id and c.person.email == FP_GERMANY
               and c.status == "due"]
    assert [(c.status, c.offset) for c in germany] == [("due", "2d")]


async def test_clock_jumps_over_quiet_hours_and_over_the_deadline(
    demo_db: Database, clock: FrozenClock
) -> None:
    due = datetime(2018, 3, 9, 17, 0, tzinfo=UTC)  # Friday 18:00 Berlin
    async with demo_db.transaction() as session:
        await sync_deadline(session, DeadlineKind.CUSTOM, None, due, "Jump",
                            audience(roles=[RoleName.FOCAL_POINT]), now=clock.now())
    night = datetime(2018, 3, 7, 22, 0, tzinfo=UTC)  # 23:00 in Berlin: the 2-day one waits
    async with demo_db.transaction() as session:
        assert not [c for c in await sweep(session, at=night) if c.person.email == FP_GERMANY
                    and c.deadline.title == "Jump" and c.status == "due"]
    morning = datetime(2018, 3, 8, 9, 0, tzinfo=UTC)  # the clock jumped to 10:00 Berlin
    async with demo_db.transaction() as session:
        won = [c for c in await sweep(session, at=morning) if c.person.email == FP_GERMANY
               and c.deadline.title == "Jump"]
    assert [(c.offset, c.status) for c in won] == [("2d", "due")]
    after = due + timedelta(hours=1)  # down over the deadline: the rest is recorded, not sent
    async with demo_db.transaction() as session:
        won = [c for c in await sweep(session, at=after) if c.person.email == FP_GERMANY
               and c.deadline.title == "Jump"]
    assert {(c.status, c.reason) for c in won} <= {("skipped", "deadline_passed"),
                                                   ("skipped", "superseded")}
    assert ("skipped", "deadline_passed") in {(c.status, c.reason) for c in won}
    async with demo_db.transaction() as session:
        rows = list(await session.scalars(select(Reminder).join(
            Deadline, Deadline.id == Reminder.deadline_id).where(Deadline.title == "Jump",
                                                                 Reminder.status == "queued",
                                                                 Reminder.send_at >= due)))
    assert rows == []


# -- action points --------------------------------------------------------------------------


async def test_action_points_of_the_2017_summary_are_listed_and_closed_by_their_owners(
    chat: Transcript, demo_db: Database
) -> None:
    await chat.say("/actions all", as_=FP_CHILE)
    texts = every_format(chat)
    assert "operational guidelines on the functioning of the Network" in texts["plain"]
    assert "due 31 December 2017 · done · Second meeting of the Network, New York, " \
           "21 September 2017" in texts["plain"]
    await chat.say("/actions", as_=FP_CHILE)
    assert "operational guidelines" not in chat.text()
    async with demo_db.transaction() as session:
        newsletter = await session.scalar(select(ActionPoint.id).where(
            ActionPoint.text == "Produce and disseminate a regular newsletter"))
    await chat.say(f"/action done {newsletter}", as_=FP_CHILE)
    assert chat.text() == (f"Action point #{newsletter} is not yours to close: its owner or "
                           "the secretariat can.")
    await chat.say(f"/action done {newsletter}", as_=COORDINATOR)
    assert chat.text() == (f"Done: action point #{newsletter}, “Produce and disseminate a "
                           "regular newsletter”. Its reminders stop.")
    await chat.say("/action new", as_=COORDINATOR)
    await fill(chat, COORDINATOR, "Circulate the Berlin concept note", "Troika call")
    await chat.say("the moon", as_=COORDINATOR)
    assert "“the moon” is not an owner" in chat.last().errors["owner"]
    await chat.say("Germany", as_=COORDINATOR)
    await chat.say("2018-01-10", as_=COORDINATOR)
    assert "already passed" in chat.last().errors["due"]
    await chat.say("2018-03-20", as_=COORDINATOR)
    texts = every_format(chat)
    assert texts["plain"].startswith("Action point #") and "owned by Germany, due 20 March " \
        "2018, 17:00 (America/New_York); its owners will be reminded." in texts["plain"]
    await chat.say("/deadlines", as_=FP_GERMANY)
    assert "Circulate the Berlin concept note: due 20 March 2018, 22:00 (Europe/Berlin) · " \
           "for Germany" in chat.text()


async def test_whoami_shows_the_troika_seat(chat: Transcript) -> None:
    await chat.say("/whoami", as_=FP_GERMANY)
    assert "Germany is in the 2018 troika (chair this year)" in chat.text()


async def test_demo_chairs_around_today_make_a_current_troika_marked_demo(
    chat: Transcript, demo_db: Database, clock: FrozenClock
) -> None:
    clock.at = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    async with demo_db.transaction() as session:
        await load_demo_chairs(session, clock.now())
        await load_demo_chairs(session, clock.now())  # safe to run again
        chairs = {c.year: (c.member.code, c.is_demo) for c in await session.scalars(
            select(Chair).where(Chair.year >= 2025))}
    assert chairs == {2025: ("namibia", True), 2026: ("chile", True), 2027: ("germany", True)}
    await chat.say("/whoami", as_=FP_CHILE)
    assert "Chile is in the 2026 troika (chair this year, a demo chair)" in chat.text()
    await chat.say("/troika", as_=FP_CHILE)
    texts = every_format(chat)
    assert "· Chile · chair (demo)" in texts["plain"]
    assert "· Germany · next chair (2027) (demo)" in texts["plain"]
    await chat.say("/troika 2018", as_=FP_CHILE)
    assert "(demo)" not in chat.text()  # the real chairs are not marked


async def test_the_dashboard_lists_a_persons_deadlines(chat: Transcript, core: Core) -> None:
    await chat.say("/whoami", as_=FP_CHILE)  # binds the console account
    home = await core.home("console", FP_CHILE)
    for fmt in FORMATS:
        text = chat.renderer.render(home.key, "en", fmt, **home.context)
        assert "Contributions to the next newsletter (demo) · due 11 March 2018, 14:00 " \
               "(America/Santiago)" in text
