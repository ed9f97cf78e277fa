"""A whole newsletter edition cycle with a fake clock: reminders at local working hours,
alternates at two days, none for the members that have submitted, the troika's, the Monday
digest, and crashes that lose and duplicate nothing (every test runs on SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from bot.app import BotApp
from bot.delivery import Outbox, liveness
from bot.scheduler import ReminderJobs
from bot.settings import Settings
from handlers.clock import FrozenClock
from handlers.reminders import queue_outgoing, sweep
from handlers.types import Outgoing
from messages import Renderer
from storage import editions
from storage.db import Database
from storage.deadlines import add_action_point, audience, sync_deadline, zone
from storage.edition_deadlines import sync_edition_deadline
from storage.models import (
    DeadlineKind,
    Identity,
    JobRun,
    Member,
    NationalUpdate,
    OutboxItem,
    Person,
    Reminder,
    RoleName,
)
from tests.message_coverage import render_everywhere

# The cycle: the newsletter's edition 1, opened on Thursday 1 March 2018, its contributions
# due Friday 16 March, 16:00 UTC.
DUE = datetime(2018, 3, 16, 16, 0, tzinfo=UTC)
EDITION_TITLE = "Women mediators, and the Berlin meeting"
TITLE = f"Contributions to {EDITION_TITLE}"
FP = {"chile": "fp.chile@demo.invalid", "germany": "fp.germany@demo.invalid",
      "namibia": "fp.namibia@demo.invalid", "spain": "fp.spain@demo.invalid",
      "au": "fp.au@demo.invalid"}
ALT_CHILE = "alt.chile@demo.invalid"
COORDINATOR = "coordinator@demo.invalid"


class Killed(BaseException):
    """The process dies mid-transaction (SIGKILL): nothing after this line runs."""


async def run_until_killed(outbox: Outbox, recorder: Recorder) -> None:
    """Let `outbox` send until its recorder hangs mid-send, then kill it there: once what went
    is recorded (each send is marked the moment it goes; a kill in that instant would send it
    again), with the hanging sends, which never reached anyone, in flight."""
    sending = asyncio.create_task(outbox.deliver_due(limit=1000))
    await recorder.dead.wait()
    deadline = time.monotonic() + 10
    while await sent_rows(outbox.sender.db) < len(recorder.sent):
        assert time.monotonic() < deadline, "what went was never recorded"
        await asyncio.sleep(0.01)  # the lanes still marking what went: let them
    sending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sending
    # The dead process's connections close, as the system closes them at a kill -9: a
    # statement cancelled mid-way can leave its connection, inside BEGIN IMMEDIATE, in a
    # garbage cycle (bot/delivery/stopping.py), and the restart then met "database is
    # locked" (once in a CI run of the whole suite).
    gc.collect()
    await outbox.sender.db.dispose()


async def sent_rows(db: Database) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(OutboxItem)
                                        .where(OutboxItem.status == "sent")) or 0)


async def die(dead: Outbox, survivor: Outbox) -> None:
    """As if the process sending for `dead` was killed (its row stays, its pid no longer runs
    it): the survivor finds it dead at once, as a restart on the same host does."""
    liveness._HERE.discard(dead.liveness.id)
    if not survivor.liveness.registered:
        await survivor.liveness.register()
    assert dead.liveness.id in await survivor.liveness.reap()

@dataclass
class Delivered:
    email: str
    key: str
    dedupe: str
    at: datetime
    texts: dict[str, str]


class Recorder:
    """An adapter for the outbox: renders each message in every format and records it."""

    platform = "console"
    reads_back = False

    def __init__(self, renderer: Renderer, clock: FrozenClock, crash_after: int | None = None,
                 sent: list[tuple[str, Outgoing, dict[str, str], datetime]] | None = None
                 ) -> None:
        self.renderer = renderer
        self.clock = clock
        self.crash_after = crash_after
        self.sent = sent if sent is not None else []
        self.mine = 0
        self.dead = asyncio.Event()

    def reaches(self, chat_id: str) -> bool:
        return True

    async def send(self, chat_id: str, message: Outgoing, *, locale: str, tz: str) -> None:
        if self.crash_after is not None and self.mine >= self.crash_after:
            self.dead.set()  # this send hangs until the process is killed
            await asyncio.Event().wait()
        self.mine += 1
        texts = render_everywhere(self.renderer,
                                  replace(message, context={"tz": tz, **message.context}), locale)
        self.sent.append((chat_id, message, texts, self.clock.now()))


async def give_accounts(db: Database, now: datetime) -> dict[str, int]:
    """A console account for every demo person (the outbox needs one to reach them)."""
    async with db.transaction() as session:
        people = list(await session.scalars(select(Person)))
        for p in people:
            session.add(Identity(person_id=p.id, platform="console", user_id=p.email,
                                 chat_id=p.email, created_at=now))
        return {p.email: p.id for p in people}


async def member_id(db: Database, code: str) -> int:
    async with db.transaction() as session:
        found = await session.scalar(select(Member.id).where(Member.code == code))
        assert found is not None
        return int(found)


async def dedupes(db: Database) -> dict[str, str]:
    async with db.transaction() as session:
        rows = await session.execute(
            select(OutboxItem.dedupe_key, Person.email)
            .join(Person, Person.id == OutboxItem.person_id))
        return {k: e for k, e in rows if k}


@pytest.fixture
def app(demo_db: Database, clock: FrozenClock) -> BotApp:
    bot = BotApp(Settings(database_url=demo_db.url), clock=clock)
    bot.db = demo_db  # the test's store (on PostgreSQL: this session's database)
    return bot


async def open_edition(db: Database, now: datetime) -> int:
    """The secretariat opens the newsletter's next edition, its contributions due `DUE`."""
    async with db.transaction() as session:
        assert await editions.collecting(session) is None
        coordinator = await session.scalar(select(Person.id).where(Person.email == COORDINATOR))
        edition = await editions.create(
            session, title=EDITION_TITLE, period_start=now.date(),
            period_end=DUE.date(), language="en", submission_deadline=DUE,
            planned_publication=(DUE + timedelta(days=7)).date(), now=now, by=coordinator)
        await sync_edition_deadline(session, edition, now)
        return edition.id


async def submit(db: Database, code: str, edition_id: int, at: datetime) -> None:
    """The member's focal point files an update, sent for review and taken into the edition."""
    async with db.transaction() as session:
        member = await session.scalar(select(Member).where(Member.code == code))
        author = await session.scalar(select(Person).where(Person.email == FP[code]))
        assert member is not None and author is not None
        session.add(NationalUpdate(
            member_id=member.id, author_id=author.id, category="policy",
            title="Women mediators in the peace talks", body="Our network of mediators",
            links=[], visibility="public", status="submitted", section="",
            edition_id=edition_id, created_at=at, submitted_at=at))


async def test_a_whole_edition_cycle_reminds_exactly_the_right_people_at_the_right_times(
    app: BotApp, demo_db: Database, clock: FrozenClock, renderer: Renderer
) -> None:
    emails = await give_accounts(demo_db, clock.now())
    by_id = {v: k for k, v in emails.items()}
    edition_id = await open_edition(demo_db, clock.now())
    # Spain files on the second day; every other member still owes its contribution.
    await submit(demo_db, "spain", edition_id, clock.now() + timedelta(days=1))
    async with demo_db.transaction() as session:
        await add_action_point(
            session, text="Agree the agenda of the Berlin meeting", owner="troika",
            member_id=None, due_at=DUE - timedelta(days=3), meeting="Troika call",
            now=clock.now())
    jobs = ReminderJobs(app)
    other = ReminderJobs(app)  # a second instance on the same store
    recorder = Recorder(renderer, clock)
    outbox = Outbox(demo_db, clock, {"console": recorder})
    crashed = False
    end = DUE + timedelta(days=2)
    while clock.now() < end:
        await jobs.run()
        await other.run()
        if not crashed and clock.now() >= DUE - timedelta(days=2, hours=-1):
            # Kill the process after two sends of a fan-out; a new one takes over.
            crashed = True
            killed = Recorder(renderer, clock, crash_after=2, sent=recorder.sent)
            dying = Outbox(Database(demo_db.url), clock, {"console": killed})  # its own process
            await run_until_killed(dying, killed)
            assert killed.mine == 2  # two went, the third was in flight, the rest waited
            await die(dying, outbox)
        while await outbox.deliver_due():
            pass
        clock.advance(hours=1)

    sent = [Delivered(chat, m.key, "", at, texts) for chat, m, texts, at in recorder.sent]
    # Exactly once: every queued outbox row was delivered once, none twice.
    queued = await dedupes(demo_db)
    assert len(recorder.sent) == len(queued)
    reminders = [d for d in sent if d.key == "deadlines.reminder"]
    async with demo_db.transaction() as session:
        unsent = await session.scalar(select(func.count()).select_from(OutboxItem).where(
            OutboxItem.status != "sent"))
    assert unsent == 0

    def got(email: str, title: str = TITLE) -> list[Delivered]:
        return [d for d in reminders if d.email == email and title in d.texts["plain"]]

    # Chile's focal point: 7, 2 and 1 day(s) before and the morning of, in Santiago's working
    # hours; the alternate from the 2-day reminder on; Spain (done) nothing.
    chile = got(FP["chile"])
    assert len(chile) == 4
    for d in chile:
        local = d.at.astimezone(zone("America/Santiago"))
        assert 8 <= local.hour < 21 and local.weekday() < 5, local
    assert [d.at.date().isoformat() for d in chile] == [
        "2018-03-09", "2018-03-14", "2018-03-15", "2018-03-16"]
    assert "(in 7 days)" in chile[0].texts["plain"] and "For Chile." in chile[0].texts["plain"]
    assert "national updates for newsletter edition 1 with /update" in chile[0].texts["plain"]
    assert f"<b>Reminder: {TITLE}</b>" in chile[0].texts["html"]
    assert f"*Reminder: {TITLE}*" in chile[0].texts["mrkdwn"]
    assert "Due 16 March 2018, 13:00 (America/Santiago)" in chile[0].texts["plain"]
    assert len(got(ALT_CHILE)) == 3
    assert min(d.at for d in got(ALT_CHILE)) >= DUE - timedelta(days=2, hours=6)
    assert got(FP["spain"]) == []
    assert all(d.at < DUE for d in reminders)  # never after the deadline

    # The troika (Spain, Germany, Namibia in 2018) gets the troika's action point; Chile not.
    agenda = "Agree the agenda of the Berlin meeting"
    assert {d.email for d in reminders if agenda in d.texts["plain"]} == {
        FP["spain"], FP["germany"], FP["namibia"]}

    # The last day: the secretariat sees who is still missing, by region; Spain is not.
    missing = [d for d in sent if d.key == "deadlines.still_missing"]
    assert missing and all(d.email == COORDINATOR for d in missing)
    text = missing[0].texts["plain"]
    assert "· Chile (Latin American and Caribbean States)" in text
    assert "Spain" not in text

    # One digest per Monday 09:00 New York, whichever instance got there first.
    async with demo_db.transaction() as session:
        periods = list(await session.scalars(select(JobRun.period).where(JobRun.job == "digest")
                                             .order_by(JobRun.period)))
    assert periods == ["2018-02-26T09:00", "2018-03-05T09:00", "2018-03-12T09:00"]
    digests = [d for d in sent if d.key == "digest.weekly"]
    assert len(digests) == 3 and {d.email for d in digests} == {COORDINATOR}
    monday = [d for d in digests if d.at.date().isoformat() == "2018-03-12"]
    assert len(monday) == 1
    assert monday[0].at.astimezone(zone("America/New_York")).hour == 9
    page = monday[0].texts["plain"]
    assert f"Not yet submitted: {TITLE}" in page
    assert "Latin American and Caribbean States (7): Argentina, Brazil, Chile" in page
    files = [m for _, m, _, at in recorder.sent if m.key == "digest.file"]
    assert len(files) == 3 and files[0].file is not None
    html = files[0].file.content.decode()
    assert html.startswith("<!DOCTYPE html>") and 'style="' in html and "<style" not in html
    assert by_id  # every recipient was a known person


async def test_a_sweep_that_dies_before_committing_leaves_nothing_and_is_redone(
    demo_db: Database, clock: FrozenClock
) -> None:
    async with demo_db.transaction() as session:
        await sync_deadline(session, DeadlineKind.CUSTOM, None, DUE, TITLE,
                            audience(roles=[RoleName.FOCAL_POINT]), now=clock.now())
    clock.at = DUE - timedelta(days=7) + timedelta(hours=1)
    with pytest.raises(Killed):
        async with demo_db.transaction() as session:
            assert await sweep(session, at=clock.now())
            raise Killed
    async with demo_db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(Reminder)) == 0
        assert await session.scalar(select(func.count()).select_from(OutboxItem)) == 0
    async with demo_db.transaction() as session:
        first = await sweep(session, at=clock.now())
    async with demo_db.transaction() as session:
        again = await sweep(session, at=clock.now())
    assert first and again == []
    async with demo_db.transaction() as session:
        reminders = await session.scalar(select(func.count()).select_from(Reminder).where(
            Reminder.status == "queued"))
        outbox = await session.scalar(select(func.count()).select_from(OutboxItem))
    assert reminders == outbox == len([c for c in first if c.status == "due"])


async def test_two_sweeps_at_once_queue_each_reminder_once(
    demo_db: Database, clock: FrozenClock
) -> None:
    async with demo_db.transaction() as session:
        await sync_deadline(session, DeadlineKind.CUSTOM, None, DUE, TITLE,
                            audience(roles=[RoleName.FOCAL_POINT]), now=clock.now())
    at = DUE - timedelta(days=1, hours=-1)

    async def one() -> int:
        async with demo_db.transaction() as session:
            return len(await sweep(session, at=at))

    counts = await asyncio.gather(one(), one())
    async with demo_db.transaction() as session:
        keys = list(await session.scalars(select(OutboxItem.dedupe_key)))
        rows = await session.scalar(select(func.count()).select_from(Reminder))
    assert len(keys) == len(set(keys)) > 0
    assert sum(counts) == rows


async def test_a_fan_out_of_500_killed_midway_is_sent_exactly_once_after_restart(
    demo_db: Database, clock: FrozenClock, renderer: Renderer
) -> None:
    from tests.test_digest import add_members

    await add_members(demo_db, 500, clock.now())
    await give_accounts(demo_db, clock.now())
    async with demo_db.transaction() as session:
        await sync_deadline(session, DeadlineKind.CUSTOM, None, DUE, TITLE,
                            audience(roles=[RoleName.FOCAL_POINT]), now=clock.now())
    clock.at = DUE - timedelta(days=7) + timedelta(hours=1)
    async with demo_db.transaction() as session:
        queued = [c for c in await sweep(session, at=clock.now()) if c.status == "due"]
    assert len(queued) >= 1000  # this deadline and the demo one, for 505 members' people
    sent: list[tuple[str, Outgoing, dict[str, str], datetime]] = []
    hanging = Recorder(renderer, clock, 137, sent)
    dying = Outbox(Database(demo_db.url), clock, {"console": hanging})  # its own process
    await run_until_killed(dying, hanging)
    assert len(sent) == 137
    async with demo_db.transaction() as session:  # the restarted process sweeps again
        assert await sweep(session, at=clock.now()) == []
    restarted = Outbox(demo_db, clock, {"console": Recorder(renderer, clock, None, sent)})
    await die(dying, restarted)  # the dead claim is taken over
    while await restarted.deliver_due():
        pass
    delivered = [(chat, m.context.get("id"), m.key) for chat, m, *_ in sent]
    assert len(delivered) == len(set(delivered)) == len(queued)


async def test_one_person_without_an_account_holds_back_nobody_else(
    demo_db: Database, clock: FrozenClock, renderer: Renderer
) -> None:
    """Each reminder stands in its person's lane: one still waiting for an account (their
    reminder is kept until they link one) does not stop the reminders queued after it."""
    async with demo_db.transaction() as session:
        people = {p.email: p for p in await session.scalars(select(Person))}
        waiting, reachable = people[FP["germany"]], people[FP["chile"]]
        session.add(Identity(person_id=reachable.id, platform="console", user_id=reachable.email,
                             chat_id=reachable.email, created_at=clock.now()))
        await queue_outgoing(session, [
            (waiting.id, "reminder:t:1", Outgoing("forms.nothing_to_cancel")),
            (reachable.id, "reminder:t:2", Outgoing("forms.nothing_to_cancel"))], clock.now())
    recorder = Recorder(renderer, clock)
    outbox = Outbox(demo_db, clock, {"console": recorder})
    while await outbox.deliver_due():
        pass
    assert [chat for chat, *_ in recorder.sent] == [reachable.email]
    async with demo_db.transaction() as session:
        kept = await session.scalar(select(OutboxItem).where(
            OutboxItem.dedupe_key == "reminder:t:1"))
    assert kept is not None and kept.status == "pending"  # until Germany links an account
