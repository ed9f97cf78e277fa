"""Meetings: the defects an outside-in probe found, each through the chat on SQLite and
PostgreSQL, asserting on what a person reads (every reply rendered in plain, HTML and mrkdwn).
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from handlers import meetings
from handlers.clock import FrozenClock
from handlers.types import UserError
from storage.db import Database
from storage.models import Meeting
from tests.conftest import COORDINATOR, FP_CHILE, FP_GERMANY, Transcript
from tests.test_meetings import (
    ALT_CHILE,
    BERLIN_FORM,
    REGISTER_SELF,
    add_meeting,
    all_text,
    plan,
    register,
    rendered,
    status_of,
)

ANA = "ana.perez@minrel.example"
DELEGATE_ANA = ["Someone of my delegation", "Ana Pérez", ANA, "Adviser on gender", "Adviser",
                "-", "No", "-"]


def notice_text(chat: Transcript, key_start: str, fmt: str = "plain",
                tz: str = "UTC") -> list[str]:
    """The notices the last turn queued whose key starts so, rendered as delivery renders them
    (in the reader's zone `tz`)."""
    return [chat.renderer.render(n.key, "en", fmt, **{"tz": tz, **n.context})
            for n in chat.notices if n.key.startswith(key_start)]


# 1. the participants CSV ----------------------------------------------------------------------
async def test_the_csv_never_exports_a_formula_and_opens_in_excel_with_accents(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock)
    evil = '=HYPERLINK("http://evil.example","x")'
    await register(chat, FP_CHILE, mid, ["Someone of my delegation", evil, "evil@example.org",
                                         "+Adviser", "Adviser", "@once", "No", "-"])
    await register(chat, FP_CHILE, mid, DELEGATE_ANA)
    await chat.say(f"/participants {mid} csv", as_=COORDINATOR)
    assert "2 rows" in rendered(chat)
    out = chat.last()
    assert out.file is not None
    assert out.file.content.startswith(b"\xef\xbb\xbf")  # the BOM Excel looks for
    rows = list(csv.DictReader(io.StringIO(out.file.content.decode("utf-8-sig"))))
    by_email = {r["E-mail"]: r for r in rows}
    assert by_email["evil@example.org"]["Name"] == "'" + evil
    assert by_email["evil@example.org"]["Title or position"] == "'+Adviser"
    assert by_email["evil@example.org"]["Accessibility"] == "'@once"
    assert by_email[ANA]["Name"] == "Ana Pérez"
    assert by_email[ANA]["Title or position"] == "Adviser on gender"
    assert not any(cell[:1] in "=+-@\t\r" for r in rows for cell in r.values() if cell)


# 2. start times in the hours daylight saving skips or repeats ----------------------------------
DST_FORM = [*BERLIN_FORM[:6], "2027-03-28 03:30", "2027-03-29 17:00", "-", "2027-03-20 18:00",
            *BERLIN_FORM[10:]]


async def test_a_time_the_clocks_skip_or_repeat_is_refused_with_a_reason(
        chat: Transcript, demo_db: Database) -> None:
    await plan(chat, BERLIN_FORM[:6])
    await chat.say("2027-03-28 02:30", as_=COORDINATOR)  # CET -> CEST: 02:00-03:00 never happens
    assert chat.last().step is not None and chat.last().step.field.name == "starts"
    skipped = rendered(chat)
    assert "2027-03-28 02:30 does not exist in Europe/Berlin" in skipped
    assert "clocks jump forward" in skipped
    await chat.say("2027-10-31 02:30", as_=COORDINATOR)  # CEST -> CET: 02:00-03:00 twice
    assert chat.last().step is not None and chat.last().step.field.name == "starts"
    assert "2027-10-31 02:30 happens twice in Europe/Berlin" in rendered(chat)
    for answer in DST_FORM[6:]:
        await chat.say(answer, as_=COORDINATOR)
    assert "is planned" in rendered(chat) and "28 March 2027, 03:30 (Europe/Berlin)" in (
        rendered(chat))
    async with demo_db.transaction() as session:
        row = await session.scalar(select(Meeting).where(Meeting.title.startswith("Berlin")))
        assert row is not None and row.starts_at == datetime(2027, 3, 28, 1, 30, tzinfo=UTC)


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/New_York", "Australia/Sydney"])
def test_every_accepted_local_time_comes_back_the_same_through_utc(tz: str) -> None:
    zone = ZoneInfo(tz)
    wall = datetime(2027, 1, 1)
    refused = 0
    while wall.year == 2027:
        text = wall.strftime("%Y-%m-%d %H:%M")
        try:
            utc = meetings._parse_local(text, tz)
        except UserError as err:
            assert err.key in ("meetings.when_skipped", "meetings.when_twice")
            refused += 1
        else:
            assert utc.astimezone(zone).strftime("%Y-%m-%d %H:%M") == text
        wall += timedelta(minutes=30)
    assert refused == 4  # two half-hours skipped in spring, two repeated in autumn


# 3. /register when already registered -----------------------------------------------------------
async def test_registering_again_says_how_one_is_registered_oneself(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock)
    await register(chat, FP_CHILE, mid)
    await chat.say(f"/register {mid}", as_=FP_CHILE)
    intro = rendered(chat, 0)
    assert "You are registered yourself; this registers someone of your delegation." in intro
    assert "You are  yourself" not in intro


# 4. problems refused at their own step, a full delegation before the form ------------------------
async def test_a_delegate_email_already_registered_or_ones_own_is_refused_at_its_step(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock)
    await register(chat, FP_CHILE, mid, DELEGATE_ANA)
    await chat.say(f"/register {mid}", as_=ALT_CHILE)
    for answer in ["Someone of my delegation", "Ana Pérez", ANA]:
        await chat.say(answer, as_=ALT_CHILE)
    assert chat.last().step is not None and chat.last().step.field.name == "email"
    assert "Ana Pérez (ana.perez@minrel.example) is already registered for this meeting" in (
        rendered(chat))
    await chat.say(ALT_CHILE, as_=ALT_CHILE)
    assert chat.last().step is not None and chat.last().step.field.name == "email"
    assert "alt.chile@demo.invalid is your own e-mail address" in rendered(chat)
    await chat.say("luis.soto@minrel.example", as_=ALT_CHILE)  # a new one moves on
    assert chat.last().step is not None and chat.last().step.field.name == "title"


async def test_a_full_delegation_is_refused_before_the_form_and_again_at_submit(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock, delegation_limit=1)
    await chat.say(f"/register {mid}", as_=ALT_CHILE)  # not full yet: the form opens
    for answer in REGISTER_SELF[:-1]:
        await chat.say(answer, as_=ALT_CHILE)
    await register(chat, FP_CHILE, mid)  # takes Chile's only place meanwhile
    await chat.say("-", as_=ALT_CHILE)  # the submit checks again, under the lock
    assert chat.keys == ["meetings.delegation_full"]
    assert "Chile's delegation to" in rendered(chat) and "at most 1 per delegation" in (
        rendered(chat))
    assert await status_of(demo_db, mid, ALT_CHILE) is None
    await chat.say(f"/register {mid}", as_=ALT_CHILE)  # now full: no form at all
    assert chat.keys == ["meetings.delegation_full"] and chat.last().step is None
    assert "at most 1 per delegation" in rendered(chat)


# 5. an online-only meeting asks no travel questions -----------------------------------------------
async def test_a_webinar_asks_neither_visa_nor_dietary_needs(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock, kind="webinar", venue="",
                            online_url="https://meet.example.org/wps")
    asked = []
    await chat.say(f"/register {mid}", as_=FP_CHILE)
    asked.append(all_text(chat))
    for answer in ["Myself", "Head of delegation", "-"]:
        await chat.say(answer, as_=FP_CHILE)
        asked.append(all_text(chat))
    assert chat.keys == ["meetings.registered_confirmed"]
    assert "you are registered for" in rendered(chat)
    questions = "\n".join(asked)
    assert "visa" not in questions.lower() and "dietary" not in questions.lower()


# 6. /myregistrations shows the delegation to focal points and alternates -------------------------
async def test_an_alternate_sees_and_may_cancel_the_delegations_registrations(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock)
    await register(chat, FP_CHILE, mid, DELEGATE_ANA)
    await chat.say("/myregistrations", as_=ALT_CHILE)
    shown = rendered(chat)
    assert "Your registrations and your delegation's" in shown and "Ana Pérez" in shown
    [button] = chat.last().choices
    assert button.value == f"/unregister {mid} {ANA}"
    await chat.say("/myregistrations", as_=FP_GERMANY)
    assert "Ana Pérez" not in rendered(chat)
    await chat.say(button.value, as_=ALT_CHILE)
    assert "Cancel the registration of Ana Pérez" in rendered(chat)
    await chat.say(chat.last().choices[0].value, as_=ALT_CHILE)
    assert "The registration of Ana Pérez for" in rendered(chat) and "is cancelled" in (
        rendered(chat))
    assert await status_of(demo_db, mid, ANA) == "cancelled"


# 7. wording -------------------------------------------------------------------------------------
async def test_unregister_without_a_number_shows_its_own_example(chat: Transcript) -> None:
    await chat.say("/unregister", as_=FP_CHILE)
    assert "for example: /unregister 2" in rendered(chat)


async def test_the_host_question_says_optional_once(chat: Transcript) -> None:
    await plan(chat, BERLIN_FORM[:2])
    question = rendered(chat)
    assert "Which member hosts it? (optional: send - to skip)" in question
    assert "(optional) (optional" not in question


async def test_one_person_told_is_counted_as_one_person(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock)
    await register(chat, FP_CHILE, mid)
    await chat.say(f"/meeting cancel {mid}", as_=COORDINATOR)
    assert "1 person registered or waitlisted will be told." in rendered(chat)
    await chat.say(chat.last().choices[0].value, as_=COORDINATOR)
    assert "is cancelled; 1 person registered or waitlisted was told." in rendered(chat)


async def test_a_promotion_tells_the_registrar_whose_seat_came_free(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock, capacity=1)
    await register(chat, FP_GERMANY, mid)
    await register(chat, FP_CHILE, mid, ["Someone of my delegation", "Third Person",
                                         "third@example.org", "Adviser", "Adviser", "-", "No",
                                         "-"])
    assert "Third Person is number 1 on the waitlist" in rendered(chat)
    await chat.say(f"/unregister {mid} confirm", as_=FP_GERMANY)
    [told] = notice_text(chat, "meetings.promoted")
    assert told.startswith("A seat came free for Third Person: Third Person, whom you "
                           "registered, moved up from the waitlist and is now registered for")
    assert "A seat is yours" not in told and "A place on the waitlist came free" not in told


async def test_closed_registration_says_how_the_secretariat_adds_one(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock, registration_closes_at=clock.now()
                            - timedelta(hours=1))
    await chat.say(f"/register {mid}", as_=FP_CHILE)
    refused = rendered(chat)
    assert f"ask them to send /participants {mid} add fp.chile@demo.invalid" in refused
    assert "write to them" not in refused


# 8. declining the Chatham House Rule ------------------------------------------------------------
async def test_declining_the_chatham_house_rule_says_it_is_required(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock, chatham_house=True)
    await register(chat, FP_CHILE, mid, [*REGISTER_SELF, "I do not agree"])
    assert chat.last().step is not None and chat.last().step.field.name == "chatham"
    reason = rendered(chat)
    assert "Agreeing to the Chatham House Rule is required to register" in reason
    assert "Cancel (/cancel)" in reason and "Please pick one of the options" not in reason
    assert [c.label for c in chat.last().choices] == ["I agree", "I do not agree"]
    await chat.say("No", as_=FP_CHILE)
    assert "is required to register" in rendered(chat)
    assert await status_of(demo_db, mid, FP_CHILE) is None
    await chat.say("I agree", as_=FP_CHILE)
    assert "you are registered for" in rendered(chat)


# 9. confirmations -------------------------------------------------------------------------------
async def test_unregister_asks_once_and_keep_it_keeps_it(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock)
    await register(chat, FP_CHILE, mid)
    await chat.say(f"/unregister {mid}", as_=FP_CHILE)
    assert chat.keys == ["meetings.unregister_confirm"]
    assert "Cancel your registration for" in rendered(chat)
    assert [c.label for c in chat.last().choices] == ["Cancel my registration", "Keep it"]
    assert await status_of(demo_db, mid, FP_CHILE) == "confirmed"
    cancel, keep = (c.value for c in chat.last().choices)
    await chat.say(keep, as_=FP_CHILE)
    assert "Your registration for" in rendered(chat) and "stays as it is" in rendered(chat)
    assert await status_of(demo_db, mid, FP_CHILE) == "confirmed"
    await chat.say(cancel, as_=FP_CHILE)
    assert "Your registration for" in rendered(chat) and "is cancelled" in rendered(chat)
    assert await status_of(demo_db, mid, FP_CHILE) == "cancelled"


async def test_cancelling_a_meeting_offers_keep_it(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock)
    await chat.say(f"/meeting cancel {mid}", as_=COORDINATOR)
    assert [c.label for c in chat.last().choices] == [f"Yes, cancel meeting #{mid}", "Keep it"]
    assert "Nobody is registered or waitlisted yet." in rendered(chat)
    await chat.say(chat.last().choices[1].value, as_=COORDINATOR)
    assert "stays as planned" in rendered(chat)
    async with demo_db.transaction() as session:
        row = await session.get(Meeting, mid)
        assert row is not None and row.status == "scheduled"


# 10. a change notice shows old and new ------------------------------------------------------------
async def test_a_moved_meeting_tells_the_old_and_the_new_time_and_place(
        chat: Transcript, demo_db: Database) -> None:
    await plan(chat, BERLIN_FORM)
    async with demo_db.transaction() as session:
        mid = await session.scalar(select(Meeting.id).where(Meeting.title.startswith("Berlin")))
    await register(chat, FP_GERMANY, mid)
    await chat.say(f"/meeting edit {mid}", as_=COORDINATOR)
    answers = ["-"] * 16
    answers[3] = "Weltsaal, Federal Foreign Office, Berlin"
    answers[6], answers[7] = "2018-04-10 09:00", "2018-04-11 17:00"
    for answer in answers:
        await chat.say(answer, as_=COORDINATOR)
    [told] = notice_text(chat, "meetings.changed", tz="Europe/Berlin")  # Germany's zone
    assert ("When: 9 April 2018, 09:00 (Europe/Berlin) to 10 April 2018, 17:00 (Europe/Berlin)"
            " → now 10 April 2018, 09:00 (Europe/Berlin) to 11 April 2018, 17:00"
            " (Europe/Berlin)") in told
    assert ("Where: Federal Foreign Office, Berlin → now Weltsaal, Federal Foreign Office, "
            "Berlin") in told
    assert "<b>Meeting #" in notice_text(chat, "meetings.changed", "html", "Europe/Berlin")[0]


# 11. calendar files named for their attendee ------------------------------------------------------
async def test_a_delegates_invitation_does_not_share_the_registrants_file_name(
        chat: Transcript, demo_db: Database, clock: FrozenClock) -> None:
    mid = await add_meeting(demo_db, clock)
    await register(chat, FP_CHILE, mid)
    own = chat.last().file
    await register(chat, FP_CHILE, mid, DELEGATE_ANA[1:])  # already registered: delegate next
    delegate = chat.last().file
    assert "Ana Pérez is registered for" in rendered(chat)
    assert own is not None and delegate is not None
    assert own.name == f"meeting-{mid}-catalina-rojas-demo.ics"
    assert delegate.name == f"meeting-{mid}-ana-perez.ics"
    await chat.say(f"/unregister {mid} confirm", as_=FP_CHILE)
    cancelled = chat.last().file
    assert cancelled is not None and cancelled.name == (
        f"meeting-{mid}-catalina-rojas-demo-cancelled.ics")
