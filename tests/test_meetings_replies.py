"""Meetings: the less common replies, each driven through the core as a person would meet it.

A meeting's detail page and its buttons; numbers that name no meeting or registration; wrong
/participants sub-commands; a declined registration and a delegate's pending one, each told;
a registration cancelled by someone else; every role in the counts and the CSV; a cancelled
meeting that can no longer change; the meeting form's refusals; the rules that change while a
registration form is open. Every reply looked at is read in plain text, Telegram HTML and
Slack mrkdwn.
"""

from __future__ import annotations

import csv
import io

from sqlalchemy import delete, func, select

from handlers.clock import FrozenClock
from handlers.types import Outgoing
from storage import meetings as store
from storage.db import Database
from storage.models import Meeting, OutboxItem, Person, Role, RoleName
from storage.roster import import_roster
from tests.conftest import COORDINATOR, FP_CHILE, FP_GERMANY, Transcript
from tests.message_coverage import render_everywhere
from tests.test_meetings import (
    ALT_CHILE,
    BERLIN_FORM,
    FP_NAMIBIA,
    REGISTER_SELF,
    WILPF,
    add_meeting,
    calendar,
    plan,
    register,
    status_of,
)

FORMATS = ("plain", "html", "mrkdwn")
ADMIN = "admin@demo.invalid"


def read(chat: Transcript, index: int = -1) -> dict[str, str]:
    """One reply as a person reads it on each platform (every format must render)."""
    texts = {fmt: chat.text(index, fmt) for fmt in FORMATS}
    assert all(t.strip() for t in texts.values()), texts
    return texts


def notices(chat: Transcript, key: str) -> list[Outgoing]:
    return [n for n in chat.notices if n.key == key]


def notice_text(chat: Transcript, notice: Outgoing) -> dict[str, str]:
    """A notice queued for someone else, as each platform's adapter renders it."""
    return render_everywhere(chat.renderer, notice)


async def recipients(db: Database, key: str) -> list[str]:
    """The e-mail of each person a notice with `key` is queued for, in order."""
    async with db.transaction() as session:
        rows = await session.execute(select(OutboxItem.message, Person.email).join(
            Person, Person.id == OutboxItem.person_id).order_by(OutboxItem.id))
        return [email for message, email in rows if message["key"] == key]


async def person_id(db: Database, email: str) -> int:
    async with db.transaction() as session:
        found = await session.scalar(select(Person.id).where(Person.email == email))
        assert found is not None
        return found


async def csv_rows(chat: Transcript, mid: int, *, everyone: bool = False) -> list[dict[str, str]]:
    await chat.say(f"/participants {mid} csv{' all' if everyone else ''}", as_=COORDINATOR)
    out = chat.last()
    assert out.file is not None and out.file.mime_type == "text/csv"
    return list(csv.DictReader(io.StringIO(out.file.content.decode("utf-8"))))


# -- /meeting N ------------------------------------------------------------------------------
async def test_a_meeting_shows_its_details_with_the_buttons_each_reader_needs(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock, online_url="https://meet.example.org/fpn",
                            agenda_url="https://example.org/agenda", chatham_house=True)
    await chat.say(f"/meeting {mid}", as_=FP_CHILE)
    assert chat.keys == ["meetings.detail"]
    shown = read(chat)
    plain = shown["plain"]
    assert plain.startswith(f"#{mid} · Network meeting in Berlin\nAnnual meeting · Chatham House "
                            "Rule\nWhen: 5 April 2018, 06:00 (America/Santiago) to 6 April 2018,"
                            " 06:00 (America/Santiago)\n")
    assert "(at the venue: 5 April 2018, 11:00 (Europe/Berlin) to 6 April 2018, 11:00 " \
           "(Europe/Berlin))" in plain
    assert "Where: Federal Foreign Office, Berlin" in plain
    assert "Online: https://meet.example.org/fpn" in plain
    assert "Agenda: https://example.org/agenda" in plain
    assert "Seats: 10 of 10 left · at most 3 per delegation" in plain
    assert "Registration: open until 29 March 2018, 06:00 (America/Santiago)" in plain
    assert "You are" not in plain
    assert f"<b>#{mid} · Network meeting in Berlin</b>" in shown["html"]
    assert f"*#{mid} · Network meeting in Berlin*" in shown["mrkdwn"]
    # Not registered, not the secretariat: only a Register button.
    assert [(c.value, c.label) for c in chat.last().choices] == [
        (f"/register {mid}", f"Register for #{mid}")]

    await register(chat, FP_CHILE, mid, [*REGISTER_SELF, "I agree"])
    await chat.say(f"/meeting {mid}", as_=FP_CHILE)
    shown = read(chat)
    assert shown["plain"].rstrip().endswith("You are registered.")
    assert "You are <b>registered</b>." in shown["html"]
    assert "Seats: 9 of 10 left" in shown["plain"]
    [cancel] = chat.last().choices
    assert (cancel.value, cancel.label) == (f"/unregister {mid}", "Cancel my registration")
    await chat.say(cancel.value, as_=FP_CHILE)  # the button does what it says: asks once
    assert chat.keys == ["meetings.unregister_confirm"]
    await chat.say(f"{cancel.value} confirm", as_=FP_CHILE)
    assert chat.keys == ["meetings.unregistered"]
    assert await status_of(demo_db, mid, FP_CHILE) == "cancelled"

    # The secretariat also gets Participants and Edit, which open what they name.
    await chat.say(f"/meeting {mid}", as_=COORDINATOR)
    assert "When: 5 April 2018, 05:00 (America/New_York)" in read(chat)["plain"]
    labels = {c.label: c.value for c in chat.last().choices}
    assert labels == {f"Register for #{mid}": f"/register {mid}",
                      "Participants": f"/participants {mid}", "Edit": f"/meeting edit {mid}"}
    await chat.say(labels["Participants"], as_=COORDINATOR)
    assert chat.keys == ["meetings.counts"]
    assert "0 registrations" in read(chat)["plain"]
    await chat.say(labels["Edit"], as_=COORDINATOR)
    assert chat.keys[0] == "meetings.editing" and chat.last().step is not None
    assert f"Editing meeting #{mid}, Network meeting in Berlin." in read(chat, 0)["plain"]


async def test_a_cancelled_meeting_says_so_and_can_no_longer_change(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock, status="cancelled")
    await chat.say(f"/meeting {mid}", as_=COORDINATOR)
    shown = read(chat)
    assert "This meeting is cancelled." in shown["plain"] and "Seats:" not in shown["plain"]
    assert "<b>This meeting is cancelled.</b>" in shown["html"]
    for command in (f"/meeting edit {mid}", f"/meeting cancel {mid}",
                    f"/meeting cancel {mid} confirm"):
        await chat.say(command, as_=COORDINATOR)
        assert chat.keys == ["meetings.is_cancelled"], command
        assert read(chat)["plain"] == (f"Meeting #{mid}, Network meeting in Berlin, is "
                                       "cancelled and can no longer change.")
        assert chat.last().step is None and not chat.notices
    async with demo_db.transaction() as session:
        row = await session.get(Meeting, mid)
        assert row is not None and row.sequence == 0  # no second cancellation sent


async def test_a_meeting_number_that_is_wrong_or_missing_gets_a_clear_answer(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock)
    for command, who in ((f"/meeting {mid + 90}", FP_CHILE), (f"/register {mid + 90}", FP_CHILE),
                         (f"/unregister {mid + 90}", FP_CHILE),
                         (f"/participants {mid + 90}", COORDINATOR),
                         (f"/meeting edit {mid + 90}", COORDINATOR)):
        await chat.say(command, as_=who)
        assert chat.keys == ["meetings.unknown"], command
        assert read(chat)["plain"] == f"There is no meeting #{mid + 90}. See /meetings.", command
    for command, who in (("/meeting Berlin", FP_CHILE), ("/register next", FP_CHILE),
                         ("/unregister x", FP_CHILE), ("/participants all", COORDINATOR),
                         ("/meeting cancel", COORDINATOR)):
        await chat.say(command, as_=who)
        assert chat.keys == ["meetings.which_meeting"], command
        example = "/" + " ".join(command[1:].split()[:-1])  # the command itself, e.g. /register
        assert read(chat)["plain"] == ("Say which meeting, by its number, for example: "
                                       f"{example} 2 (see /meetings)."), command
    await chat.say(f"/meeting #{mid}", as_=FP_CHILE)  # "#3" is a number too
    assert chat.keys == ["meetings.detail"]


# -- /participants ---------------------------------------------------------------------------
async def test_a_wrong_participants_command_says_what_it_takes(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock, needs_approval=True)
    other = await add_meeting(demo_db, clock, title="Expert group on mediation", kind="expert_group",
                              needs_approval=True)
    await chat.say(f"/participants {mid} everyone", as_=COORDINATOR)
    assert read(chat)["plain"] == (f"Use /participants {mid} with nothing, pending, csv, list, "
                                   "add EMAIL or attended EMAIL.")
    for command in (f"/participants {mid} add", f"/participants {mid} add Catalina Rojas"):
        await chat.say(command, as_=COORDINATOR)
        assert chat.keys == ["meetings.add_usage"], command
        assert read(chat)["plain"] == ("Say whom to add by e-mail: /participants "
                                       f"{mid} add name@example.org")
    # A registration number of another meeting, or none at all, is no registration here.
    await register(chat, FP_CHILE, other)
    assert chat.keys == ["meetings.registered_pending"]
    async with demo_db.transaction() as session:
        reg = await store.registration(session, other, FP_CHILE)
        assert reg is not None
        chile_reg = reg.id
    for arg, shown in ((f"approve {chile_reg}", str(chile_reg)), ("reject 999", "999"),
                       ("approve", "?"), ("reject Catalina", "Catalina")):
        await chat.say(f"/participants {mid} {arg}", as_=COORDINATOR)
        assert chat.keys == ["meetings.unknown_registration"], arg
        assert read(chat)["plain"] == f"There is no registration {shown} for this meeting."
    assert await status_of(demo_db, other, FP_CHILE) == "pending"  # nothing decided


async def test_a_declined_registration_is_told_counted_and_listed(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock, needs_approval=True)
    await register(chat, FP_CHILE, mid)
    await register(chat, FP_GERMANY, mid)
    await chat.say(f"/participants {mid}", as_=COORDINATOR)
    shown = read(chat)
    assert "2 registrations: 2 waiting for approval · 10 of 10 seats left" in shown["plain"]
    pending = chat.last().choices[0]
    assert (pending.label, pending.value) == ("2 waiting for approval",
                                              f"/participants {mid} pending")
    await chat.say(pending.value, as_=COORDINATOR)
    decline = next(c for c in chat.last().choices if c.label == "Decline Catalina Rojas (demo)")
    await chat.say(decline.value, as_=COORDINATOR)
    shown = read(chat)
    assert shown["plain"] == (f"Catalina Rojas (demo) is now not accepted for #{mid}, Network "
                              "meeting in Berlin, and was told.")
    assert "<b>not accepted</b>" in shown["html"] and "*not accepted*" in shown["mrkdwn"]
    [told] = notices(chat, "meetings.notice_rejected")
    assert told.file is None
    text = notice_text(chat, told)
    assert text["plain"] == ("The secretariat could not accept the registration of Catalina "
                             "Rojas (demo) for Network meeting in Berlin.")
    assert "<b>Network meeting in Berlin</b>" in text["html"]
    assert await recipients(demo_db, "meetings.notice_rejected") == [FP_CHILE]
    assert await status_of(demo_db, mid, FP_CHILE) == "rejected"
    await chat.say(decline.value, as_=COORDINATOR)  # decided once
    assert read(chat)["plain"] == "Catalina Rojas (demo) is already not accepted."

    await chat.say(f"/participants {mid}", as_=COORDINATOR)
    assert "2 registrations: 1 not accepted, 1 waiting for approval" in read(chat)["plain"]
    assert chat.last().choices[0].label == "1 waiting for approval"
    await chat.say("/myregistrations", as_=FP_CHILE)
    assert "Network meeting in Berlin" in read(chat)["plain"]
    assert "<b>not accepted</b>" in read(chat)["html"]
    assert not chat.last().choices  # nothing left to cancel


async def test_a_delegate_on_the_roster_hears_their_registration_awaits_approval(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock, needs_approval=True)
    await register(chat, FP_CHILE, mid, ["Someone of my delegation", "Tomás Fuentes",
                                         ALT_CHILE, "Policy Officer", "Adviser", "-", "No", "-"])
    assert chat.keys == ["meetings.registered_pending"]
    assert read(chat)["plain"].startswith("Received: the registration of Tomás Fuentes for "
                                          "Network meeting in Berlin waits for the secretariat's")
    alt = await person_id(demo_db, ALT_CHILE)
    async with demo_db.transaction() as session:
        reg = await store.registration(session, mid, ALT_CHILE)
        assert reg is not None and reg.person_id == alt
    [told] = notices(chat, "meetings.notice_pending")
    text = notice_text(chat, told)
    assert text["plain"] == ("The registration of Tomás Fuentes for Network meeting in Berlin "
                             "is waiting for the secretariat's approval.")
    assert "*Network meeting in Berlin*" in text["mrkdwn"]
    assert await recipients(demo_db, "meetings.notice_pending") == [ALT_CHILE]
    assert notices(chat, "meetings.for_approval")  # and the secretariat is asked


async def test_a_registration_cancelled_by_someone_else_is_told_to_its_owner(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock)
    await register(chat, FP_GERMANY, mid)
    await chat.say(f"/unregister {mid} {FP_GERMANY} confirm", as_=COORDINATOR)
    assert read(chat)["plain"] == ("The registration of Julia Becker (demo) for Network meeting "
                                   "in Berlin is cancelled.")
    assert chat.last().file is None  # the calendar cancellation goes to her, not to the caller
    [told] = notices(chat, "meetings.cancelled_for_you")
    text = notice_text(chat, told)
    assert text["plain"] == ("The registration of Julia Becker (demo) for Network meeting in "
                             "Berlin (5 April 2018, 09:00 (UTC)) was cancelled.")
    assert "<b>Network meeting in Berlin</b>" in text["html"]
    assert calendar(told)["METHOD"] == "CANCEL"
    assert await recipients(demo_db, "meetings.cancelled_for_you") == [FP_GERMANY]
    assert await status_of(demo_db, mid, FP_GERMANY) == "cancelled"
    # The CSV of every registration keeps the cancelled one, marked so; so does her list.
    [row] = await csv_rows(chat, mid, everyone=True)
    assert (row["E-mail"], row["Status"]) == (FP_GERMANY, "cancelled")
    assert await csv_rows(chat, mid) == []
    await chat.say("/myregistrations", as_=FP_GERMANY)
    assert f"#{mid} · Network meeting in Berlin" in read(chat)["plain"]
    assert "Julia Becker (demo) (Head of delegation) · cancelled" in read(chat)["plain"]
    assert not chat.last().choices


async def test_the_counts_and_the_csv_name_every_registrants_role(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    async with demo_db.transaction() as session:
        report = await import_roster(session, (
            "email,name,role,members,title,ministry,timezone,locale\n"
            f"{ADMIN},Ola Nordmann (demo),admin,,Administrator,Focal Points Bot,UTC,en\n"),
            clock.now())
        assert report.ok, report.errors
    mid = await add_meeting(demo_db, clock, delegation_limit=None)
    no_member = ["Member of the delegation", "-", "No", "-"]
    await register(chat, FP_CHILE, mid)
    await register(chat, ALT_CHILE, mid)
    await register(chat, FP_CHILE, mid, ["Ana Pérez", "ana.perez@minrel.example", "Adviser",
                                         "Adviser", "-", "No", "-"])
    await register(chat, WILPF, mid, no_member)
    await register(chat, COORDINATOR, mid, no_member)
    await register(chat, ADMIN, mid, no_member)
    assert chat.keys == ["meetings.registered_confirmed"]
    await chat.say(f"/participants {mid}", as_=COORDINATOR)
    shown = read(chat)["plain"]
    assert "6 registrations: 6 registered · 4 of 10 seats left" in shown
    assert "By member: Chile 3, No member (civil society, secretariat) 3" in shown
    assert "By role: Secretariat 2, Alternate 1, Civil society 1, Delegate 1, Focal point 1" \
        in shown
    roles = {r["E-mail"]: r["Role"] for r in await csv_rows(chat, mid)}
    assert roles == {FP_CHILE: "Focal point", ALT_CHILE: "Alternate",
                     "ana.perez@minrel.example": "Delegate", WILPF: "Civil society",
                     COORDINATOR: "Secretariat", ADMIN: "Secretariat"}


async def test_someone_whose_roles_were_removed_is_counted_as_other(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    """The bot never removes a role, but the people running it may (someone left the
    Network); the secretariat can still add that person to a meeting by e-mail."""
    namibia = await person_id(demo_db, FP_NAMIBIA)
    async with demo_db.transaction() as session:
        await session.execute(delete(Role).where(Role.person_id == namibia))
    mid = await add_meeting(demo_db, clock)
    await chat.say(f"/participants {mid} add {FP_NAMIBIA}", as_=COORDINATOR)
    assert chat.keys == ["meetings.added"]
    await chat.say(f"/participants {mid}", as_=COORDINATOR)
    assert "By role: Other 1" in read(chat)["plain"]
    [row] = await csv_rows(chat, mid)
    assert (row["E-mail"], row["Member"], row["Role"]) == (FP_NAMIBIA, "", "Other")


# -- the meeting form's refusals -------------------------------------------------------------
async def test_registration_closing_before_it_opens_is_asked_again(
        chat: Transcript, demo_db: Database) -> None:
    await plan(chat, BERLIN_FORM[:8])
    await chat.say("2018-04-03 10:00", as_=COORDINATOR)  # registration opens
    question = read(chat)["plain"]
    await chat.say("2018-04-02 18:00", as_=COORDINATOR)  # and closes the day before
    reason, *again = read(chat)["plain"].splitlines()
    assert reason == "! Registration must close after it opens."
    assert "\n".join(again) == question
    assert "⚠️ Registration must close after it opens." in read(chat)["html"]
    await chat.say("2018-04-06 18:00", as_=COORDINATOR)  # fixed: the form goes on
    assert chat.last().step is not None and chat.last().step.field.name == "capacity"


async def test_registration_closing_before_now_when_it_opens_now_is_asked_again(
        chat: Transcript, demo_db: Database) -> None:
    """"skip: now" for the opening: a closing before now is refused at its question, not
    after every other answer."""
    await plan(chat, BERLIN_FORM[:9])  # opens: skipped
    question = read(chat)["plain"]
    await chat.say("2018-02-28 18:00", as_=COORDINATOR)
    assert read(chat)["plain"].splitlines() == [
        "! Registration must close after it opens.", *question.splitlines()]
    for answer in ("2018-04-02 18:00", *BERLIN_FORM[10:]):
        await chat.say(answer, as_=COORDINATOR)
    assert chat.keys == ["meetings.created"]


async def test_a_meeting_with_neither_venue_nor_link_is_refused(
        chat: Transcript, demo_db: Database) -> None:
    answers = list(BERLIN_FORM)
    answers[3] = answers[4] = "-"  # no venue, no online link
    await plan(chat, answers)
    assert chat.keys == ["meetings.where"]
    assert read(chat)["plain"] == "Give a venue, an online link, or both."
    assert chat.last().closes_form
    async with demo_db.transaction() as session:
        assert not await session.scalar(select(func.count()).select_from(Meeting)
                                        .where(Meeting.title.startswith("Berlin")))


# -- rules that change while a registration form is open --------------------------------------
async def test_a_meeting_put_under_the_chatham_house_rule_meanwhile_needs_agreement(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock)
    await chat.say(f"/register {mid}", as_=FP_CHILE)
    for answer in REGISTER_SELF[:-1]:
        await chat.say(answer, as_=FP_CHILE)
    await chat.say(f"/meeting edit {mid}", as_=COORDINATOR)
    for answer in ["-"] * 15 + ["Yes"]:  # the last question: the Chatham House Rule
        await chat.say(answer, as_=COORDINATOR)
    assert chat.keys == ["meetings.edited"]
    await chat.say("-", as_=FP_CHILE)  # her last answer: no question about the rule was asked
    assert chat.keys == ["meetings.chatham_needed"]
    assert read(chat)["plain"] == ("This meeting is held under the Chatham House Rule; "
                                   "registering needs your agreement to it.")
    assert await status_of(demo_db, mid, FP_CHILE) is None
    await register(chat, FP_CHILE, mid, [*REGISTER_SELF, "I agree"])  # now she is asked
    assert chat.keys == ["meetings.registered_confirmed"]


async def test_a_focal_point_who_moved_to_the_secretariat_meanwhile_registers_no_delegate(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    """Roles change outside the bot (the roster is edited); the form opened before."""
    mid = await add_meeting(demo_db, clock)
    await chat.say(f"/register {mid}", as_=FP_CHILE)
    for answer in ["Someone of my delegation", "Ana Pérez", "ana.perez@minrel.example",
                   "Adviser", "Adviser", "-", "No"]:
        await chat.say(answer, as_=FP_CHILE)
    chile = await person_id(demo_db, FP_CHILE)
    async with demo_db.transaction() as session:
        await session.execute(delete(Role).where(Role.person_id == chile))
        session.add(Role(person_id=chile, member_id=None, role=RoleName.SECRETARIAT))
    await chat.say("-", as_=FP_CHILE)
    assert chat.keys == ["meetings.delegation_members_only"]
    assert read(chat)["plain"] == ("Only a member's focal points and alternates register its "
                                   "delegation.")
    assert await status_of(demo_db, mid, "ana.perez@minrel.example") is None
