"""Meetings and registration (issue 10): planning, registering, the waitlist, refusals, files.

Each test runs on SQLite and on PostgreSQL, through the core (the console's platform), with
every reply it looks at rendered in plain text, Telegram HTML and Slack mrkdwn.
"""

from __future__ import annotations

import asyncio
import csv
import io
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar
from sqlalchemy import func, select, text

from handlers.clock import FrozenClock
from handlers.dispatch import Core
from handlers.types import Incoming, Outgoing
from messages import Renderer
from storage import meetings as store
from storage.db import Database
from storage.models import (
    AuditEntry,
    Meeting,
    OutboxItem,
    Person,
    RoleName,
)
from tests.conftest import COORDINATOR, FP_CHILE, FP_GERMANY, Transcript

ALT_CHILE = "alt.chile@demo.invalid"
FP_NAMIBIA = "fp.namibia@demo.invalid"
FP_SPAIN = "fp.spain@demo.invalid"
WILPF = "wilpf@demo.invalid"
BERLIN = ZoneInfo("Europe/Berlin")
FORMATS = ("plain", "html", "mrkdwn")


def rendered(chat: Transcript, index: int = -1) -> str:
    """A reply in every format (each must render); the plain text is returned."""
    texts = [chat.text(index, fmt) for fmt in FORMATS]
    assert all(texts)
    return texts[0]


def all_text(chat: Transcript) -> str:
    return "\n".join(rendered(chat, i) for i in range(len(chat.replies)))


async def add_meeting(db: Database, clock: FrozenClock, **overrides: Any) -> int:
    """A meeting written straight to the store: Berlin-like, open now, starting in 5 weeks."""
    now = clock.now()
    values: dict[str, Any] = dict(
        uid=store.new_uid(), title="Network meeting in Berlin", kind="annual",
        venue="Federal Foreign Office, Berlin", timezone="Europe/Berlin",
        starts_at=now + timedelta(weeks=5), ends_at=now + timedelta(weeks=5, days=1),
        registration_opens_at=now - timedelta(days=1),
        registration_closes_at=now + timedelta(weeks=4), capacity=10, delegation_limit=3,
        eligible_roles=[RoleName.FOCAL_POINT, RoleName.ALTERNATE, RoleName.CIVIL_SOCIETY],
        created_at=now, updated_at=now)
    values.update(overrides)
    async with db.transaction() as session:
        row = Meeting(**values)
        session.add(row)
        await session.flush()
        return row.id


REGISTER_SELF = ["Myself", "Head of delegation", "-", "No", "-"]


async def register(chat: Transcript, who: str, meeting_id: int,
                   answers: list[str] | None = None) -> list[Outgoing]:
    """/register N, then answer every step; returns the last replies."""
    await chat.say(f"/register {meeting_id}", as_=who)
    assert chat.last().step is not None, all_text(chat)
    for answer in answers if answers is not None else REGISTER_SELF:
        await chat.say(answer, as_=who)
    return chat.replies


async def status_of(db: Database, meeting_id: int, email: str) -> str | None:
    async with db.transaction() as session:
        reg = await store.registration(session, meeting_id, email)
        return reg.status if reg else None


async def seats_taken(db: Database, meeting_id: int) -> int:
    async with db.transaction() as session:
        row = await session.get(Meeting, meeting_id)
        assert row is not None
        return row.confirmed_count


def calendar(out: Outgoing) -> Any:
    assert out.file is not None and out.file.mime_type == "text/calendar"
    return Calendar.from_ical(out.file.content)


# -- planning a meeting ----------------------------------------------------------------------
BERLIN_FORM = ["Berlin meeting of the Focal Points Network", "Annual meeting", "Germany",
               "Federal Foreign Office, Berlin", "-", "Europe/Berlin", "2018-04-09 09:00",
               "2018-04-10 17:00", "-", "2018-04-02 18:00", "3", "2",
               "Focal points and alternates", "No", "https://example.org/agenda", "No"]


async def plan(chat: Transcript, answers: list[str]) -> list[Outgoing]:
    await chat.say("/meeting new", as_=COORDINATOR)
    for answer in answers:
        await chat.say(answer, as_=COORDINATOR)
    return chat.replies


async def test_the_secretariat_plans_a_meeting_in_the_venues_time(
        chat: Transcript, demo_db: Database) -> None:
    await plan(chat, BERLIN_FORM)
    shown = rendered(chat)
    assert "is planned" in shown and "9 April 2018, 09:00 (Europe/Berlin)" in shown
    async with demo_db.transaction() as session:
        row = await session.scalar(select(Meeting).where(Meeting.title.startswith("Berlin")))
        assert row is not None
        assert row.starts_at == datetime(2018, 4, 9, 7, 0, tzinfo=UTC)
        assert row.registration_closes_at == datetime(2018, 4, 2, 16, 0, tzinfo=UTC)
        assert (row.capacity, row.delegation_limit, row.host.name if row.host else None) == (
            3, 2, "Germany")
        assert sorted(row.eligible_roles) == ["alternate", "focal_point"]
        audit = await session.scalar(select(AuditEntry).where(
            AuditEntry.action == "meeting.created"))
        assert audit is not None and audit.subject == f"meeting:{row.id}"
    await chat.say("/meeting new", as_=FP_CHILE)
    assert chat.keys == ["errors.secretariat_only"]
    rendered(chat)


@pytest.mark.parametrize(("step", "answer", "error"), [
    (5, "Mars/Olympus", "is not a time zone I know"),
    (7, "2018-04-08 17:00", "The end must come after the start"),
    (9, "2018-04-09 12:00", "Registration must close no later than the meeting starts"),
    (6, "9 April", "is not a date and time"),
    (10, "-3", "is not a whole number above 0"),
])
async def test_a_wrong_meeting_answer_is_asked_again_with_the_reason(
        chat: Transcript, demo_db: Database, step: int, answer: str, error: str) -> None:
    await plan(chat, BERLIN_FORM[:step])
    question = rendered(chat)
    await chat.say(answer, as_=COORDINATOR)
    out = chat.last()
    assert out.step is not None and error in " ".join(out.errors.values())
    reason, *again = rendered(chat).splitlines()
    assert reason.startswith("! ") and error in reason
    assert "\n".join(again) == question  # the same question again, nothing lost
    async with demo_db.transaction() as session:
        assert not await session.scalar(select(func.count()).select_from(Meeting)
                                        .where(Meeting.title.startswith("Berlin")))


async def test_a_modal_refuses_an_end_before_the_start_on_its_field(
        chat: Transcript, core: Core) -> None:
    await chat.say("/meeting new", as_=COORDINATOR)
    form = chat.last().form
    assert form is not None and len(form.fields) == 16
    values = dict(zip([f.name for f in form.fields], BERLIN_FORM, strict=True))
    values.update(kind="annual", eligible="members", approval="no", chatham="no",
                  online_url="", opens="", ends="2018-04-08 10:00", timezone="Europe/Berlin")
    await chat.say(as_=COORDINATOR, values=values, value="meeting",
                   form_version=form.version)
    assert chat.last().errors == {"ends": "The end must come after the start."}


# -- registering -----------------------------------------------------------------------------
async def test_a_focal_point_registers_and_gets_the_calendar_invitation(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock, starts_at=datetime(2018, 4, 9, 7, tzinfo=UTC),
                            ends_at=datetime(2018, 4, 10, 15, tzinfo=UTC),
                            online_url="https://meet.example.org/fpn", chatham_house=True)
    await chat.say("/meetings", as_=FP_CHILE)
    listing = rendered(chat)
    assert f"#{mid} · Network meeting in Berlin" in listing
    assert "9 April 2018, 04:00 (America/Santiago)" in listing  # the reader's own zone
    assert "10 of 10 seats left" in listing
    assert f"/register {mid}" in [c.value for c in chat.last().choices]

    await register(chat, FP_CHILE, mid, [*REGISTER_SELF, "I agree"])
    receipt = rendered(chat)
    assert "you are registered for Network meeting in Berlin" in receipt
    assert "<b>Registered</b>" in chat.text(-1, "html")
    cal = calendar(chat.last())
    assert cal["METHOD"] == "REQUEST"
    [event] = cal.walk("VEVENT")
    assert event.decoded("DTSTART").astimezone(UTC) == datetime(2018, 4, 9, 7, tzinfo=UTC)
    assert str(event["DTSTART"].params["TZID"]) == "Europe/Berlin"
    assert [str(tz["TZID"]) for tz in cal.walk("VTIMEZONE")] == ["Europe/Berlin"]
    assert str(event["URL"]) == "https://meet.example.org/fpn"
    assert int(event["SEQUENCE"]) == 0 and "mailto:fp.chile@demo.invalid" in str(
        event["ATTENDEE"])
    assert "Chatham House Rule applies" in str(event["DESCRIPTION"])

    async with demo_db.transaction() as session:
        reg = await store.registration(session, mid, FP_CHILE)
        assert reg is not None and reg.member is not None
        assert (reg.status, reg.member.name, reg.delegation_role, reg.chatham_ack) == (
            "confirmed", "Chile", "head", True)
        audit = await session.scalar(select(AuditEntry).where(
            AuditEntry.action == "registration.created"))
        assert audit is not None and audit.details["status"] == "confirmed"
        chile = await session.scalar(select(Person).where(Person.email == FP_CHILE))
        germany = await session.scalar(select(Person).where(Person.email == FP_GERMANY))
        assert chile is not None and germany is not None
        assert await store.owes_registration(session, mid, chile.id) is False
        assert await store.owes_registration(session, mid, germany.id) is True

    await chat.say("/meetings", as_=FP_CHILE)
    assert "You: registered" in rendered(chat)
    await chat.say("/myregistrations", as_=FP_CHILE)
    assert "Network meeting in Berlin" in rendered(chat) and "registered" in rendered(chat)


async def test_registering_twice_is_refused(chat: Transcript, demo_db: Database,
                                            clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock)
    await register(chat, WILPF, mid, ["Member of the delegation", "-", "No", "-"])
    assert chat.keys == ["meetings.registered_confirmed"]
    await chat.say(f"/register {mid}", as_=WILPF)
    assert chat.keys == ["meetings.already"]
    assert "You are already registered for" in rendered(chat)
    # A focal point already registered registers a delegate instead, and can't add herself.
    await register(chat, FP_CHILE, mid)
    await chat.say(f"/register {mid}", as_=FP_CHILE)
    assert "You are registered yourself; this registers someone of your delegation" in (
        rendered(chat, 0))
    for answer in ["Catalina Rojas", FP_CHILE]:
        await chat.say(answer, as_=FP_CHILE)
    assert chat.last().step is not None and chat.last().step.field.name == "email"
    assert "is your own e-mail address" in rendered(chat)  # refused at its own step
    assert await seats_taken(demo_db, mid) == 2


@pytest.mark.parametrize("when", ["past", "cancelled", "not_open", "closed"])
async def test_registering_outside_the_window_is_refused(
        chat: Transcript, demo_db: Database, clock: FrozenClock, when: str) -> None:
    now = clock.now()
    overrides: dict[str, Any] = {
        "past": dict(starts_at=now - timedelta(days=2), ends_at=now - timedelta(days=1),
                     registration_opens_at=now - timedelta(days=30),
                     registration_closes_at=now - timedelta(days=3)),
        "cancelled": dict(status="cancelled"),
        "not_open": dict(registration_opens_at=now + timedelta(days=3)),
        "closed": dict(registration_closes_at=now - timedelta(hours=1)),
    }[when]
    mid = await add_meeting(demo_db, clock, **overrides)
    await chat.say(f"/register {mid}", as_=FP_CHILE)
    assert chat.keys == [f"meetings.refused_{when}"]
    expected = {"past": "has already taken place", "cancelled": "is cancelled",
                "not_open": "opens 4 March 2018, 06:00 (America/Santiago)",
                "closed": "closed 1 March 2018, 05:00 (America/Santiago)"}[when]
    assert expected in rendered(chat)
    assert await status_of(demo_db, mid, FP_CHILE) is None


async def test_registration_closing_while_the_form_is_open_is_refused_at_submit(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock, registration_closes_at=clock.now()
                            + timedelta(minutes=5))
    await chat.say(f"/register {mid}", as_=FP_CHILE)
    for answer in REGISTER_SELF[:-1]:
        await chat.say(answer, as_=FP_CHILE)
    clock.advance(minutes=10)
    await chat.say("-", as_=FP_CHILE)
    assert chat.keys == ["meetings.refused_closed"]
    assert "closed" in rendered(chat)
    assert await status_of(demo_db, mid, FP_CHILE) is None


async def test_a_role_that_may_not_register_is_refused(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock,
                            eligible_roles=[RoleName.FOCAL_POINT, RoleName.ALTERNATE])
    await chat.say(f"/register {mid}", as_=WILPF)
    assert chat.keys == ["meetings.refused_role"]
    assert "open to: Focal points and alternates" in rendered(chat)
    # The secretariat can still add them.
    await chat.say(f"/participants {mid} add {WILPF}", as_=COORDINATOR)
    assert chat.keys == ["meetings.added"] and "registered" in rendered(chat)
    assert await status_of(demo_db, mid, WILPF) == "confirmed"


async def test_a_delegation_over_its_limit_is_refused(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock, delegation_limit=2)
    await register(chat, FP_CHILE, mid)
    await chat.say(f"/register {mid}", as_=FP_CHILE)
    for answer in ["Ana Pérez", "ana.perez@minrel.example", "Adviser on gender",
                   "Adviser", "Wheelchair access", "Yes", "Vegetarian"]:
        await chat.say(answer, as_=FP_CHILE)
    assert "Ana Pérez is registered" in rendered(chat) or "Ana Pérez is" in rendered(chat)
    await chat.say(f"/register {mid}", as_=ALT_CHILE)  # refused before the form opens
    assert chat.keys == ["meetings.delegation_full"] and chat.last().step is None
    assert "Chile's delegation to" in rendered(chat) and "at most 2" in rendered(chat)
    assert await status_of(demo_db, mid, ALT_CHILE) is None
    async with demo_db.transaction() as session:
        ana = await store.registration(session, mid, "ana.perez@minrel.example")
        assert ana is not None and ana.member is not None
        assert (ana.member.name, ana.delegation_role, ana.visa_letter, ana.dietary,
                ana.accessibility, ana.role) == ("Chile", "adviser", True, "Vegetarian",
                                                 "Wheelchair access", "delegate")


async def test_cancelling_a_registration_that_is_not_yours_is_refused(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock)
    await register(chat, FP_GERMANY, mid)
    await chat.say(f"/unregister {mid} {FP_GERMANY}", as_=FP_CHILE)
    assert chat.keys == ["meetings.not_yours"]
    assert "is not yours to cancel" in rendered(chat)
    assert await status_of(demo_db, mid, FP_GERMANY) == "confirmed"
    await chat.say(f"/unregister {mid}", as_=FP_CHILE)
    assert chat.keys == ["meetings.not_registered"]
    rendered(chat)


async def test_a_cancellation_promotes_the_first_on_the_waitlist(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock, capacity=1)
    await register(chat, FP_CHILE, mid)
    await register(chat, FP_GERMANY, mid)
    assert chat.keys == ["meetings.registered_waitlisted"]
    assert "number 1 on the waitlist" in rendered(chat) and chat.last().file is None
    clock.advance(minutes=1)
    await register(chat, FP_NAMIBIA, mid)
    assert "number 2 on the waitlist" in rendered(chat)

    await chat.say(f"/unregister {mid} confirm", as_=FP_CHILE)
    assert "Your registration for" in rendered(chat) and "first person on the waitlist" in (
        rendered(chat))
    assert calendar(chat.last())["METHOD"] == "CANCEL"
    assert [await status_of(demo_db, mid, e) for e in (FP_CHILE, FP_GERMANY, FP_NAMIBIA)] == [
        "cancelled", "confirmed", "waitlisted"]
    assert await seats_taken(demo_db, mid) == 1
    async with demo_db.transaction() as session:
        germany = await session.scalar(select(Person).where(Person.email == FP_GERMANY))
        assert germany is not None
        [notice] = await session.scalars(select(OutboxItem).where(
            OutboxItem.person_id == germany.id))
        out = Outgoing.from_dict(notice.message)
        assert out.key == "meetings.promoted"
        assert "A seat came free for you" in chat.renderer.render(out.key, "en", "plain", **out.context)
        assert calendar(out).walk("VEVENT")[0]["UID"]
        assert await session.scalar(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "registration.promoted")) == 1


async def test_approval_keeps_registrations_pending_until_the_secretariat_decides(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock, needs_approval=True, capacity=1)
    await register(chat, FP_CHILE, mid)
    assert chat.keys == ["meetings.registered_pending"] and chat.last().file is None
    assert "waits for the secretariat's approval" in rendered(chat)
    await register(chat, FP_SPAIN, mid)
    await chat.say(f"/participants {mid} pending", as_=COORDINATOR)
    listing = rendered(chat)
    assert "Catalina Rojas" in listing and "Lucía Martín" in listing
    approve = [c.value for c in chat.last().choices if c.label.startswith("Approve")]
    assert len(approve) == 2
    await chat.say(approve[0], as_=COORDINATOR)
    assert "is now registered" in rendered(chat)
    await chat.say(approve[1], as_=COORDINATOR)
    assert "is now on the waitlist" in rendered(chat)  # capacity 1
    await chat.say(approve[1], as_=COORDINATOR)
    assert chat.keys == ["meetings.already_decided"]
    rendered(chat)
    assert [await status_of(demo_db, mid, e) for e in (FP_CHILE, FP_SPAIN)] == [
        "confirmed", "waitlisted"]


async def test_after_closing_the_secretariat_adds_and_marks_attendance(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock, registration_closes_at=clock.now()
                            - timedelta(days=1))
    await chat.say(f"/participants {mid} add {FP_NAMIBIA}", as_=COORDINATOR)
    assert "Ndapewa Shikongo (demo) (fp.namibia@demo.invalid) is now registered" in (
        rendered(chat))
    await chat.say(f"/participants {mid} add nobody@example.org", as_=COORDINATOR)
    assert chat.keys == ["meetings.unknown_person"]
    rendered(chat)
    await chat.say(f"/participants {mid} add {FP_NAMIBIA}", as_=COORDINATOR)
    assert chat.keys == ["meetings.already"]
    await chat.say(f"/participants {mid} list", as_=COORDINATOR)
    [button] = chat.last().choices
    await chat.say(button.value, as_=COORDINATOR)
    assert "attended" in rendered(chat)
    await chat.say(f"/participants {mid} attended {FP_CHILE}", as_=COORDINATOR)
    assert chat.keys == ["meetings.not_registered"]
    await chat.say(f"/participants {mid}", as_=COORDINATOR)
    counts = rendered(chat)
    assert "1 registration: 1 registered" in counts and "1 attended" in counts
    assert "Namibia 1" in counts and "African States 1" in counts
    await chat.say(f"/participants {mid}", as_=FP_CHILE)
    assert chat.keys == ["errors.secretariat_only"]


async def test_the_csv_export_lists_the_confirmed_participants(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock, capacity=2)
    for who in (FP_CHILE, FP_GERMANY, FP_NAMIBIA):
        await register(chat, who, mid)
    await chat.say(f"/participants {mid} csv", as_=COORDINATOR)
    assert "2 rows" in rendered(chat)
    out = chat.last()
    assert out.file is not None and out.file.mime_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(out.file.content.decode("utf-8-sig"))))
    assert [r["E-mail"] for r in rows] == [FP_CHILE, FP_GERMANY]
    assert rows[0]["Member"] == "Chile" and rows[0]["Region"] == (
        "Latin American and Caribbean States")
    assert rows[0]["Role"] == "Focal point" and rows[0]["Status"] == "registered"
    assert set(rows[0]) >= {"Name", "Registered at", "Visa letter", "Accessibility"}
    await chat.say(f"/participants {mid} csv all", as_=COORDINATOR)
    assert chat.last().file is not None
    assert len(list(csv.DictReader(io.StringIO(chat.last().file.content.decode("utf-8-sig"))))) == 3


async def test_moving_a_meeting_sends_an_update_and_cancelling_a_cancel(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    await plan(chat, BERLIN_FORM)
    async with demo_db.transaction() as session:
        mid = await session.scalar(select(Meeting.id).where(Meeting.title.startswith("Berlin")))
    assert mid is not None
    await register(chat, FP_CHILE, mid)
    first = calendar(chat.last()).walk("VEVENT")[0]
    await register(chat, FP_SPAIN, mid)
    await register(chat, FP_NAMIBIA, mid)
    await register(chat, FP_GERMANY, mid)
    assert chat.keys == ["meetings.registered_waitlisted"]

    # A capacity below the three registered is refused, with the count.
    await chat.say(f"/meeting edit {mid}", as_=COORDINATOR)
    assert "Editing meeting" in rendered(chat, 0)
    answers = ["-"] * 16
    answers[10] = "2"
    for answer in answers:
        await chat.say(answer, as_=COORDINATOR)
    assert chat.keys == ["meetings.capacity_below"]
    assert "3 people are already registered" in rendered(chat)
    assert "at least 3" in rendered(chat)

    # Moved by a day: same UID, SEQUENCE 1, everyone told.
    await chat.say(f"/meeting edit {mid}", as_=COORDINATOR)
    answers = ["-"] * 16
    answers[6], answers[7] = "2018-04-10 09:00", "2018-04-11 17:00"
    for answer in answers:
        await chat.say(answer, as_=COORDINATOR)
    assert "time or place changed: 4 people registered or waitlisted were told" in (
        rendered(chat))
    async with demo_db.transaction() as session:
        chile = await session.scalar(select(Person).where(Person.email == FP_CHILE))
        germany = await session.scalar(select(Person).where(Person.email == FP_GERMANY))
        assert chile is not None and germany is not None
        [moved] = [Outgoing.from_dict(i.message) for i in await session.scalars(
            select(OutboxItem).where(OutboxItem.person_id == chile.id))]
        [waiting] = [Outgoing.from_dict(i.message) for i in await session.scalars(
            select(OutboxItem).where(OutboxItem.person_id == germany.id))]
    assert "has changed" in chat.renderer.render(moved.key, "en", "plain", **moved.context)
    update = calendar(moved).walk("VEVENT")[0]
    assert (str(update["UID"]), int(update["SEQUENCE"])) == (str(first["UID"]), 1)
    assert update.decoded("DTSTART").astimezone(UTC) == datetime(2018, 4, 10, 7, tzinfo=UTC)
    assert waiting.file is None
    assert "on the waitlist" in chat.renderer.render(waiting.key, "en", "plain",
                                                     **waiting.context)

    # Cancelled: METHOD:CANCEL, SEQUENCE 2, registrants told; registering is refused.
    await chat.say(f"/meeting cancel {mid}", as_=COORDINATOR)
    assert "4 people registered or waitlisted will be told" in rendered(chat)
    await chat.say(chat.last().choices[0].value, as_=COORDINATOR)
    assert "is cancelled; 4 people registered or waitlisted were told" in rendered(chat)
    async with demo_db.transaction() as session:
        items = [Outgoing.from_dict(i.message) for i in await session.scalars(
            select(OutboxItem).where(OutboxItem.person_id == chile.id)
            .order_by(OutboxItem.id))]
    cancel = calendar(items[-1])
    assert cancel["METHOD"] == "CANCEL"
    event = cancel.walk("VEVENT")[0]
    assert (str(event["UID"]), int(event["SEQUENCE"]), str(event["STATUS"])) == (
        str(first["UID"]), 2, "CANCELLED")
    await chat.say(f"/register {mid}", as_=ALT_CHILE)
    assert chat.keys == ["meetings.refused_cancelled"]


async def test_demo_meetings_are_open_and_dated_from_the_load_day(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    await chat.say("/meetings", as_=FP_NAMIBIA)
    listing = rendered(chat)
    assert "#1 · Annual meeting of the Focal Points Network, Berlin" in listing  # chair 2018
    assert "hosted by Germany" in listing and "#2 · Follow-up meeting" in listing
    assert "Alicante" not in listing
    async with demo_db.transaction() as session:
        past = [m.title for m in await session.scalars(
            select(Meeting).where(Meeting.ends_at < clock.now()).order_by(Meeting.starts_at))]
        ny = await session.get(Meeting, 2)
        assert ny is not None
        assert ny.starts_at.astimezone(ZoneInfo("America/New_York")).hour == 15
    assert len(past) == 3 and "Alicante" in past[0] and past[2] == "Expert Group Meeting"
    async with demo_db.transaction() as session:  # loading again adds nothing
        assert await store.load_demo_meetings(session, clock.now()) == 0


async def test_the_dashboard_shows_upcoming_meetings_with_a_register_button(
        core: Core, renderer: Renderer) -> None:
    await core.console_identity(FP_CHILE)
    home = await core.home("console", FP_CHILE)
    for fmt in FORMATS:
        assert "Upcoming meetings" in renderer.render(home.key, "en", fmt, **home.context)
    assert [c.value for c in home.choices] == ["/register 1", "/register 2"]


# -- two people, the last seat, the same instant ----------------------------------------------
async def _ready_to_submit(chat: Transcript, who: str, mid: int) -> None:
    await chat.say(f"/register {mid}", as_=who)
    for answer in REGISTER_SELF[:-1]:
        await chat.say(answer, as_=who)


async def test_two_people_taking_the_last_seat_at_once_get_one_seat_and_one_waitlist(
        chat: Transcript, core: Core, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock, capacity=1)
    for who in (FP_CHILE, FP_GERMANY):
        await _ready_to_submit(chat, who, mid)
    # Both last answers at the same instant, each in its own transaction (and, on
    # PostgreSQL, its own connection: the engine of these tests does not pool).
    results = await asyncio.gather(*(
        core.handle(Incoming(platform="console", user_id=who, chat_id=who, text="-"))
        for who in (FP_CHILE, FP_GERMANY)))
    keys = sorted(r[-1].key for r in results)
    assert keys == ["meetings.registered_confirmed", "meetings.registered_waitlisted"]
    assert sorted([await status_of(demo_db, mid, e) for e in (FP_CHILE, FP_GERMANY)]) == [
        "confirmed", "waitlisted"]
    assert await seats_taken(demo_db, mid) == 1


async def test_the_seat_counter_update_holds_between_two_real_sessions(
        demo_db: Database, clock: FrozenClock) -> None:
    """The conditional UPDATE alone: the second session waits for the first, then finds
    the meeting full. On PostgreSQL we watch the second one wait on the row lock."""
    mid = await add_meeting(demo_db, clock, capacity=1)
    first = demo_db.sessions()
    second = demo_db.sessions()
    try:
        await first.begin()
        meeting_a = await first.get(Meeting, mid)
        assert meeting_a is not None and await store.take_seat(first, meeting_a) is True
        if demo_db.is_sqlite:
            await first.commit()
            async with second.begin():
                meeting_b = await second.get(Meeting, mid)
                assert meeting_b is not None and await store.take_seat(second, meeting_b) is False
        else:
            await second.begin()
            meeting_b = await second.get(Meeting, mid)
            assert meeting_b is not None
            racing = asyncio.ensure_future(store.take_seat(second, meeting_b))
            # Each look in a transaction of its own: within one, PostgreSQL shows the same
            # snapshot of pg_stat_activity every time, and a first look taken before the
            # UPDATE waited kept this loop going for ever (a CI run hung 45 minutes here).
            give_up = asyncio.get_running_loop().time() + 30
            async with demo_db.engine.connect() as watcher:
                while True:
                    waiting = await watcher.scalar(text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query LIKE 'UPDATE meeting%'"))
                    await watcher.rollback()
                    if waiting:
                        break
                    assert not racing.done()
                    assert asyncio.get_running_loop().time() < give_up, "never saw it wait"
                    await asyncio.sleep(0)  # let the racing task run; no timing assumed
            assert not racing.done()
            await first.commit()
            assert await racing is False
            await second.commit()
    finally:
        await first.close()
        await second.close()
    assert await seats_taken(demo_db, mid) == 1


def test_the_console_files_folder_is_a_setting() -> None:
    from bot.settings import Settings

    assert Settings.load(environ={}).files_dir == "fpbot-files"
    assert Settings.load(environ={"FPBOT_FILES_DIR": "/srv/fpbot/out"}).files_dir == (
        "/srv/fpbot/out")


async def test_both_forms_make_modals_slack_accepts(chat: Transcript, demo_db: Database,
                                                    clock: FrozenClock) -> None:
    from slack_sdk.models.views import View

    from bot.adapters import slack_blocks as kit

    mid = await add_meeting(demo_db, clock, chatham_house=True)
    await chat.say("/meeting new", as_=COORDINATOR)
    forms_seen = [chat.last().form]
    await chat.say(f"/register {mid}", as_=FP_CHILE)
    forms_seen.append(chat.last().form)
    for form in forms_seen:
        assert form is not None
        modal = kit.modal(form, {"cancel": "Cancel"})
        View(**modal).validate_json()  # slack_sdk's own Block Kit checks
    register_modal = kit.modal(forms_seen[1], {"cancel": "Cancel"})
    assert [b["block_id"] for b in register_modal["blocks"]][-1] == "chatham"


def test_the_calendar_libraries_load_with_the_first_calendar_file() -> None:
    probe = ("import sys, handlers; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'icalendar', 'slugify'}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"
