"""Editions and meetings wired into the deadlines, the reminders and the digest (issue 12).

On the demo with its newsletter (edition 1, as `fpbot demo` loads it): the edition's deadline
reminds the focal points of the members that have not submitted, and no longer one that has;
closing the edition ends it. A meeting's registration closing reminds those who have not
registered (per member: nobody of its delegation), and its confirmed participants get a
reminder a week and a day before, with the venue and the calendar file. The digest shows the
edition's missing members by region and each meeting's registrations against capacity.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from icalendar import Calendar
from sqlalchemy import select

from handlers.clock import FrozenClock
from handlers.digest import build_digest
from handlers.reminders import due_reminders, sweep
from handlers.types import Outgoing
from messages import Renderer
from messages.render import FORMATS
from storage import meetings as meeting_store
from storage.db import Database
from storage.deadlines import send_time
from storage.demo import load_demo
from storage.meeting_deadlines import sync_meeting
from storage.models import (
    Deadline,
    DeadlineKind,
    Edition,
    Member,
    NationalUpdate,
    OutboxItem,
    Person,
    RoleName,
)
from tests.conftest import COORDINATOR, FP_CHILE, FP_GERMANY, Transcript
from tests.message_coverage import render_everywhere

FP_SPAIN = "fp.spain@demo.invalid"
FP_NAMIBIA = "fp.namibia@demo.invalid"
FP_AU = "fp.au@demo.invalid"
ALT_CHILE = "alt.chile@demo.invalid"
WILPF = "wilpf@demo.invalid"
EDITION = "Contributions to National action plans, and the road to Berlin"
NY = 2  # the demo's follow-up meeting in New York: no Chatham House Rule, 100 seats
REGISTER_SELF = ["Myself", "Head of delegation", "-", "No", "-"]


@pytest.fixture
async def demo_db(db: Database, clock: FrozenClock) -> Database:
    """The demo as `fpbot demo` loads it: with newsletter edition 1 and its updates."""
    async with db.transaction() as session:
        _, report = await load_demo(session, clock.now(), newsletter=True)
    assert report.ok, report.errors
    return db


async def due(db: Database, at: datetime, kind: str) -> dict[str, str]:
    """e-mail -> offset of the reminders of `kind` due at `at`."""
    async with db.transaction() as session:
        found = await due_reminders(session, at=at)
    return {c.person.email: c.offset for c in found
            if c.status == "due" and c.deadline.kind == kind}


async def queued(db: Database, email: str, kind: str) -> list[Outgoing]:
    """The reminders of `kind` queued in the outbox for `email`, oldest first."""
    async with db.transaction() as session:
        kinds = {d.id: d.kind for d in await session.scalars(select(Deadline))}
        rows = await session.scalars(
            select(OutboxItem).join(Person, Person.id == OutboxItem.person_id)
            .where(Person.email == email, OutboxItem.dedupe_key.like("reminder:%"))
            .order_by(OutboxItem.id))
        return [Outgoing.from_dict(r.message) for r in rows
                if kinds[int(r.dedupe_key.split(":")[1])] == kind]


def every_format(renderer: Renderer, out: Outgoing, tz: str) -> dict[str, str]:
    """As the recipient reads it, in their time zone (and as every adapter shows it)."""
    render_everywhere(renderer, out)
    return {fmt: renderer.render(out.key, "en", fmt, tz=tz, **out.context) for fmt in FORMATS}


async def edition_deadline(db: Database) -> Deadline:
    async with db.transaction() as session:
        found = list(await session.scalars(
            select(Deadline).where(Deadline.kind == DeadlineKind.EDITION_SUBMISSION)))
        custom = list(await session.scalars(
            select(Deadline).where(Deadline.kind == DeadlineKind.CUSTOM)))
    assert len(found) == 1 and custom == []  # the edition's deadline is the newsletter's
    return found[0]


async def test_the_edition_deadline_reminds_members_that_have_not_submitted(
    demo_db: Database, clock: FrozenClock, renderer: Renderer, chat: Transcript
) -> None:
    deadline = await edition_deadline(demo_db)
    assert deadline.title == EDITION and deadline.due_at == clock.now() + timedelta(days=14)
    week_before = deadline.due_at - timedelta(days=7)  # Thursday 8 March 2018, 09:00 UTC
    # Chile and Namibia have sent updates for edition 1 (Namibia's still waits for review);
    # Germany's was withdrawn; Spain and the African Union sent none.
    assert await due(demo_db, week_before, DeadlineKind.EDITION_SUBMISSION) == {
        FP_GERMANY: "7d", FP_SPAIN: "7d", FP_AU: "7d"}
    async with demo_db.transaction() as session:
        await sweep(session, at=week_before, renderer=renderer)
    [reminder] = await queued(demo_db, FP_SPAIN, DeadlineKind.EDITION_SUBMISSION)
    texts = every_format(renderer, reminder, "Europe/Madrid")
    assert texts["plain"].splitlines()[:3] == [
        f"Reminder: {EDITION}",
        "For Spain. Due 15 March 2018, 10:00 (Europe/Madrid) (in 7 days).",
        "Send your member's national updates for newsletter edition 1 with /update before "
        "the deadline. Anything sent for review by then counts."]
    assert f"<b>Reminder: {EDITION}</b>" in texts["html"]
    assert f"*Reminder: {EDITION}*" in texts["mrkdwn"]

    # Spain submits: from then on only Germany and the African Union are reminded, and the
    # alternates join at two days (Chile's alternate is not: Chile has submitted).
    async with demo_db.transaction() as session:
        spain = await session.scalar(select(Member).where(Member.code == "spain"))
        author = await session.scalar(select(Person).where(Person.email == FP_SPAIN))
        assert spain is not None and author is not None
        session.add(NationalUpdate(
            member_id=spain.id, author_id=author.id, category="policy", title="Spain's NAP",
            body="b", links=[], visibility="public", status="submitted", section="",
            created_at=week_before, submitted_at=week_before + timedelta(days=1)))
    two_days = deadline.due_at - timedelta(days=2)  # Tuesday 13 March, 09:00 UTC
    assert await due(demo_db, two_days, DeadlineKind.EDITION_SUBMISSION) == {
        FP_GERMANY: "2d", FP_AU: "2d"}

    # The digest follows the edition: its missing members by region, Spain no longer there.
    async with demo_db.transaction() as session:
        context = await build_digest(session, two_days)
    text = renderer.render("digest.weekly", "en", "plain", tz="UTC", **context)
    assert f"Not yet submitted: {EDITION} (due 15 March 2018, 09:00 (UTC); 8 of 78 done)" \
        in text
    western = next(r for r in context["collection"]["regions"]
                   if r["region"] == "Western European and other States")
    assert "Germany" in western["members"] and "Spain" not in western["members"]
    assert "Chile" not in str(context["collection"]["regions"])

    # Closing the edition ends its reminders.
    await chat.say("/edition 1 close", as_=COORDINATOR)
    assert "Edition 1" in chat.text() or "edition 1" in chat.text(), chat.text()
    assert await due(demo_db, two_days, DeadlineKind.EDITION_SUBMISSION) == {}
    async with demo_db.transaction() as session:
        row = await session.get(Deadline, deadline.id)
        assert row is not None and row.cancelled_at == clock.now()


async def test_alternates_are_not_told_to_register_for_a_meeting_only_focal_points_attend(
    demo_db: Database, clock: FrozenClock
) -> None:
    async with demo_db.transaction() as session:
        meeting = await meeting_store.get_meeting(session, NY)
        assert meeting is not None
        closes = meeting.registration_closes_at
    at = closes - timedelta(days=2) + timedelta(hours=10)  # a working morning in Santiago
    # Open to every role: Chile's alternate may register, and is told from two days before.
    reminded = await due(demo_db, at, DeadlineKind.MEETING_REGISTRATION)
    assert FP_CHILE in reminded and ALT_CHILE in reminded
    async with demo_db.transaction() as session:
        meeting = await meeting_store.get_meeting(session, NY)
        assert meeting is not None
        meeting.eligible_roles = [str(RoleName.FOCAL_POINT)]
        await sync_meeting(session, meeting, clock.now())
    # Focal points only: the alternate could not register, and is not told to.
    reminded = await due(demo_db, at, DeadlineKind.MEETING_REGISTRATION)
    assert FP_CHILE in reminded and ALT_CHILE not in reminded


async def test_a_registered_delegation_is_not_reminded_to_register(
    demo_db: Database, clock: FrozenClock, chat: Transcript, renderer: Renderer
) -> None:
    await chat.say(f"/register {NY}", as_=FP_SPAIN)
    for answer in REGISTER_SELF:
        await chat.say(answer, as_=FP_SPAIN)
    assert chat.keys[-1] == "meetings.registered_confirmed", chat.text()
    async with demo_db.transaction() as session:
        meeting = await meeting_store.get_meeting(session, NY)
        assert meeting is not None
        closes = meeting.registration_closes_at
    at = closes - timedelta(days=7) + timedelta(hours=10)  # Friday 6 July 2018, 13:59 UTC
    reminded = await due(demo_db, at, DeadlineKind.MEETING_REGISTRATION)
    # Every member with a focal point but Spain; the civil society member as a person.
    assert reminded == {FP_CHILE: "7d", FP_GERMANY: "7d", FP_NAMIBIA: "7d", FP_AU: "7d",
                        WILPF: "7d"}
    async with demo_db.transaction() as session:
        await sweep(session, at=at, renderer=renderer)
    [reminder] = await queued(demo_db, FP_GERMANY, DeadlineKind.MEETING_REGISTRATION)
    texts = every_format(renderer, reminder, "Europe/Berlin")
    assert texts["plain"].splitlines()[:3] == [
        "Reminder: Registration for Follow-up meeting on the margins of the General Assembly",
        "For Germany. Due 13 July 2018, 05:59 (Europe/Berlin) (in 6 days).",
        "Registration closes at this time. Register with /register 2 (up to 2 per "
        "delegation); once someone of your delegation is registered, this is done."]
    # At two days the alternates join, except Chile's once Chile's focal point registered.
    await chat.say(f"/register {NY}", as_=FP_CHILE)
    for answer in REGISTER_SELF:
        await chat.say(answer, as_=FP_CHILE)
    later = closes - timedelta(days=2) + timedelta(hours=10)
    reminded = await due(demo_db, later, DeadlineKind.MEETING_REGISTRATION)
    assert FP_CHILE not in reminded and ALT_CHILE not in reminded and FP_SPAIN not in reminded
    assert reminded.get(FP_GERMANY) == "2d"


async def test_confirmed_participants_get_a_reminder_a_week_and_a_day_before_with_the_ics(
    demo_db: Database, clock: FrozenClock, chat: Transcript, renderer: Renderer
) -> None:
    for who in (FP_SPAIN, FP_GERMANY):
        await chat.say(f"/register {NY}", as_=who)
        for answer in REGISTER_SELF:
            await chat.say(answer, as_=who)
        assert chat.keys[-1] == "meetings.registered_confirmed", chat.text()
    await chat.say(f"/unregister {NY} confirm", as_=FP_GERMANY)  # Germany no longer comes
    assert chat.keys == ["meetings.unregistered"], chat.text()
    async with demo_db.transaction() as session:
        meeting = await meeting_store.get_meeting(session, NY)
        assert meeting is not None
        starts, uid = meeting.starts_at, meeting.uid
        row = await session.scalar(select(Deadline).where(
            Deadline.kind == DeadlineKind.MEETING_REMINDER, Deadline.ref_id == NY))
        assert row is not None and row.offsets == ["7d", "1d"]
    for offset in ("7d", "1d"):
        # 21:00 in Madrid is quiet time: each goes out at 09:00 the next (working) morning.
        at = send_time(starts, offset, "Europe/Madrid", "ES")
        assert at.astimezone(UTC).hour == 7
        assert await due(demo_db, at, DeadlineKind.MEETING_REMINDER) == {FP_SPAIN: offset}
        async with demo_db.transaction() as session:
            await sweep(session, at=at, renderer=renderer)
            assert await sweep(session, at=at, renderer=renderer) == []  # once only
    reminders = await queued(demo_db, FP_SPAIN, DeadlineKind.MEETING_REMINDER)
    assert [r.key for r in reminders] == ["obligations.meeting_reminder"] * 2
    assert await queued(demo_db, FP_GERMANY, DeadlineKind.MEETING_REMINDER) == []
    week, day = (every_format(renderer, r, "Europe/Madrid") for r in reminders)
    assert week["plain"].splitlines() == [
        "Reminder: Follow-up meeting on the margins of the General Assembly",
        "19 July 2018, 21:00 (Europe/Madrid) to 20 July 2018, 00:00 (Europe/Madrid) "
        "(in 6 days).",
        "Venue: United Nations Headquarters, New York",
        "The calendar invitation is attached. If you can no longer come, send /unregister 2 "
        "so the seat goes to the waitlist."]
    assert "(in " not in day["plain"].splitlines()[1]
    assert "<b>Reminder: Follow-up meeting" in week["html"]
    assert "*Reminder: Follow-up meeting" in week["mrkdwn"]
    for r in reminders:
        assert r.file is not None and r.file.name == "meeting-2-lucia-martin-demo.ics"
        event = Calendar.from_ical(r.file.content).walk("VEVENT")[0]
        assert str(event["uid"]) == uid
        assert str(event["summary"]) == "Follow-up meeting on the margins of the General Assembly"
        assert str(event["location"]) == "United Nations Headquarters, New York"
        assert str(event["attendee"]) == f"mailto:{FP_SPAIN}"


async def test_cancelling_a_meeting_ends_its_reminders(
    demo_db: Database, clock: FrozenClock, chat: Transcript
) -> None:
    await chat.say(f"/register {NY}", as_=FP_SPAIN)
    for answer in REGISTER_SELF:
        await chat.say(answer, as_=FP_SPAIN)
    await chat.say(f"/meeting cancel {NY} confirm", as_=COORDINATOR)
    assert chat.keys == ["meetings.cancelled"], chat.text()
    async with demo_db.transaction() as session:
        rows = list(await session.scalars(select(Deadline).where(Deadline.ref_id == NY,
                                                                 Deadline.kind.like("meeting%"))))
    assert len(rows) == 2 and all(r.cancelled_at == clock.now() for r in rows)


async def test_the_digest_shows_registrations_against_capacity(
    demo_db: Database, clock: FrozenClock, chat: Transcript, renderer: Renderer
) -> None:
    await chat.say(f"/register {NY}", as_=FP_SPAIN)
    for answer in REGISTER_SELF:
        await chat.say(answer, as_=FP_SPAIN)
    await chat.say("/digest", as_=COORDINATOR)
    assert chat.keys == ["digest.weekly", "digest.file"]
    texts = {fmt: chat.text(0, fmt) for fmt in FORMATS}
    assert "Meetings: registrations against capacity (2)" in texts["plain"], texts["plain"]
    assert "· #1 Annual meeting of the Focal Points Network, Berlin, 26 April 2018, 03:00 " \
           "(America/New_York) · 0 of 120 seats · registration closes 12 April 2018, 17:59 " \
           "(America/New_York)" in texts["plain"]
    assert "· #2 Follow-up meeting on the margins of the General Assembly, 19 July 2018, " \
           "15:00 (America/New_York) · 1 of 100 seats · registration closes" in texts["plain"]
    assert "<b>Meetings: registrations against capacity</b> (2)" in texts["html"]
    assert f"Not yet submitted: {EDITION}" in texts["plain"]
    page = chat.replies[1].file
    assert page is not None
    html = page.content.decode()
    assert "Meetings: registrations against capacity (2)" in html
    assert "1 of 100 seats" in html


FPBOT = [sys.executable, "-m", "bot.cli"]


def test_fpbot_demo_then_reminders_due_lists_who_has_not_submitted(tmp_path: Path) -> None:
    """From a fresh store: `fpbot demo`, then `fpbot reminders due --at` a week before the
    demo edition's deadline (at each focal point's working hours) and `fpbot digest`."""
    db_file = tmp_path / "fpbot.db"
    env = {**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{db_file}"}
    for var in ("TELEGRAM_TOKEN", "SLACK_BOT_TOKEN"):
        env.pop(var, None)

    def fpbot(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*FPBOT, *args], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)

    assert fpbot("demo").returncode == 0
    with sqlite3.connect(db_file) as con:
        [(deadline_id, due_text)] = con.execute(
            "SELECT id, due_at FROM deadline WHERE kind = 'edition_submission'").fetchall()
        assert con.execute("SELECT count(*) FROM deadline WHERE kind = 'custom'").fetchone() \
            == (0,)
        [(edition_due,)] = con.execute(
            "SELECT submission_deadline FROM edition WHERE number = 1").fetchall()
    assert due_text == edition_due
    deadline = datetime.fromisoformat(due_text).replace(tzinfo=UTC)
    owing = {FP_SPAIN: ("Lucía Martín (demo)", "Spain", "Europe/Madrid", "ES"),
             FP_GERMANY: ("Julia Becker (demo)", "Germany", "Europe/Berlin", "DE"),
             FP_AU: ("Bineta Ndiaye (demo)", "African Union", "Africa/Addis_Ababa", None)}
    for email, (name, member, tz, country) in owing.items():
        at = send_time(deadline, "7d", tz, country)  # 7 days before, or the next working hour
        result = fpbot("reminders", "due", "--at", at.isoformat())
        assert result.returncode == 0, result.stderr
        listed = result.stdout
        assert f"{name} <{email}>  -  #{deadline_id} {EDITION} [{member}]  7d (focal_point)" \
            in listed, listed
        for done in (FP_CHILE, FP_NAMIBIA, ALT_CHILE):  # Chile and Namibia have submitted
            assert done not in listed
    preview = fpbot("digest", "--preview")
    assert preview.returncode == 0, preview.stderr
    assert f"Not yet submitted: {EDITION}" in preview.stdout
    assert "(due " in preview.stdout and "; 7 of 78 done)" in preview.stdout
    assert "Meetings: registrations against capacity (2)" in preview.stdout
    assert "0 of 120 seats" in preview.stdout and "0 of 100 seats" in preview.stdout


async def test_an_edition_made_in_chat_has_its_deadline(
    demo_db: Database, clock: FrozenClock, chat: Transcript
) -> None:
    async with demo_db.transaction() as session:
        before = {e.id for e in await session.scalars(select(Edition))}
    await chat.say("/edition new", as_=COORDINATOR)
    for answer in ("Second edition", "2018-03-01", "2018-05-31", "2018-05-20", "2018-06-10",
                   "en"):
        await chat.say(answer, as_=COORDINATOR)
    if chat.last().step is not None:  # a confirmation step
        await chat.say("submit", as_=COORDINATOR, action="submit")
    assert "newsletter.created" in chat.keys, (chat.keys, chat.text())
    async with demo_db.transaction() as session:
        [edition] = [e for e in await session.scalars(select(Edition)) if e.id not in before]
        row = await session.scalar(select(Deadline).where(
            Deadline.kind == DeadlineKind.EDITION_SUBMISSION, Deadline.ref_id == edition.id))
    assert row is not None and row.title == "Contributions to Second edition"
    assert row.due_at == edition.submission_deadline and row.cancelled_at is None
