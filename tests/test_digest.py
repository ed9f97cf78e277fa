"""The secretariat's digest: every section, a fixed number of queries, one per week across
instances, a missed Monday caught up; the troika's 1 January heads-up; the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from bot.app import BotApp
from bot.scheduler import ReminderJobs, digest_period, last_fire
from bot.settings import Settings
from handlers.clock import FrozenClock
from handlers.digest import build_digest
from handlers.reminders import troika_heads_up
from messages import Renderer
from messages.render import FORMATS
from storage.db import Database
from storage.deadlines import audience, sync_deadline
from storage.models import (
    DeadlineKind,
    JobRun,
    Member,
    NationalUpdate,
    OutboxItem,
    Person,
    Role,
    RoleName,
)
from tests.conftest import COORDINATOR, FP_CHILE, Transcript
from tests.message_coverage import render_everywhere
from tests.statements import counting


async def add_members(db: Database, n: int, now: datetime) -> None:
    """`n` more members, each with a focal point and a submitted update."""
    async with db.transaction() as session:
        first = int(await session.scalar(select(func.max(Member.id))) or 0) + 1
        await session.execute(insert(Member), [
            {"id": first + i, "code": f"m{i}", "name": f"Member {i:04d}", "kind": "state",
             "region": f"Region {i % 5}", "aliases": "", "is_demo": True} for i in range(n)])
        pfirst = int(await session.scalar(select(func.max(Person.id))) or 0) + 1
        await session.execute(insert(Person), [
            {"id": pfirst + i, "name": f"FP {i}", "email": f"fp{i}@demo.invalid", "title": "",
             "ministry": "", "locale": "en", "timezone": "UTC", "is_demo": True,
             "created_at": now} for i in range(n)])
        await session.execute(insert(Role), [
            {"person_id": pfirst + i, "member_id": first + i, "role": RoleName.FOCAL_POINT}
            for i in range(n)])
        await session.execute(insert(NationalUpdate), [
            {"member_id": first + i, "author_id": pfirst + i, "category": "policy",
             "title": f"Update {i}", "body": "b", "links": [], "visibility": "public",
             "status": "submitted", "section": "", "review_note": "", "version": 1,
             "created_at": now, "submitted_at": now - timedelta(days=i % 9)}
            for i in range(0, n, 7)])


async def test_the_digest_takes_the_same_number_of_queries_at_78_and_1000_members(
    demo_db: Database, clock: FrozenClock
) -> None:
    async with demo_db.transaction() as session:
        await sync_deadline(session, DeadlineKind.CUSTOM, None, clock.now() + timedelta(days=5),
                            "Collection", audience(roles=[RoleName.FOCAL_POINT]),
                            now=clock.now())
    counts = []
    for extra in (0, 922):
        await add_members(demo_db, extra, clock.now()) if extra else None
        async with demo_db.transaction() as session:
            assert await session.scalar(select(func.count()).select_from(Member)) == 78 + extra
            with counting(demo_db) as statements:
                context = await build_digest(session, clock.now())
            counts.append(len(statements))
    assert counts[0] == counts[1] <= 13, counts
    assert context["collection"]["expected"] == 1000
    assert sum(r["count"] for r in context["collection"]["regions"]) == 1000


async def test_digest_on_demand_shows_every_section_in_every_format(
    chat: Transcript, demo_db: Database, clock: FrozenClock
) -> None:
    await chat.say("/digest", as_=FP_CHILE)
    assert "Only the secretariat can use /digest" in chat.text()
    clock.at = datetime(2018, 3, 8, 14, 0, tzinfo=UTC)  # the demo's action points are due
    await chat.say("/digest", as_=COORDINATOR)
    assert chat.keys == ["digest.weekly", "digest.file"]
    texts = {fmt: chat.text(0, fmt) for fmt in FORMATS}
    plain = texts["plain"]
    for heading in ("Secretariat digest, 8 March 2018", "Awaiting review (0)",
                    "Not yet submitted: Contributions to the next newsletter (demo) "
                    "(due 11 March 2018, 13:00 (America/New_York); 1 of 78 done)",
                    "Deadlines in the next 14 days (3)", "Overdue action points (1)",
                    "Open membership requests (0)", "Undelivered and unreachable"):
        assert heading in plain, heading
    assert "· Western European and other States (22):" in plain  # Spain is done
    assert "Share the draft agenda of the next annual meeting with the troika (demo) · " \
           "the secretariat · due 7 March 2018 (1 day late)" in plain
    assert "<b>Awaiting review</b> (0)" in texts["html"]
    assert "*Awaiting review* (0)" in texts["mrkdwn"]
    page = chat.replies[1].file
    assert page is not None and page.name == "digest-2018-03-08.html"
    html = page.content.decode()
    assert "Western European and other States (22)" in html and "<script" not in html
    assert chat.text(1) == "The digest 2018-03-08 as a page to forward by e-mail."


def test_the_digest_cron_is_read_in_the_secretariats_zone() -> None:
    at = datetime(2018, 3, 14, 12, 0, tzinfo=UTC)  # a Wednesday
    fire = last_fire("0 9 * * mon", "America/New_York", at)
    assert fire == datetime(2018, 3, 12, 13, 0, tzinfo=UTC)  # 09:00 EDT
    assert digest_period("0 9 * * mon", "America/New_York", at) == "2018-03-12T09:00"
    # Stale after six days: a digest nobody sent by Sunday gives way to Monday's.
    assert digest_period("0 9 * * mon", "America/New_York",
                         datetime(2018, 3, 18, 14, 0, tzinfo=UTC)) is None


async def test_a_digest_missed_while_down_goes_out_once_across_instances(
    demo_db: Database, clock: FrozenClock
) -> None:
    apps = []
    for _ in range(2):
        app = BotApp(Settings(database_url=demo_db.url), clock=clock)
        app.db = demo_db
        apps.append(ReminderJobs(app))
    clock.at = datetime(2018, 3, 7, 15, 0, tzinfo=UTC)  # nobody ran on Monday the 5th
    await apps[0].run()
    await apps[1].run()
    await apps[0].run()
    async with demo_db.transaction() as session:
        runs = list(await session.scalars(select(JobRun.period).where(JobRun.job == "digest")))
        digests = list(await session.scalars(select(OutboxItem.dedupe_key).where(
            OutboxItem.dedupe_key.like("digest:%"))))
    assert runs == ["2018-03-05T09:00"]
    assert len(digests) == 1  # one secretariat officer, one digest


async def test_the_troika_gets_a_heads_up_on_1_january(
    demo_db: Database, clock: FrozenClock, renderer: Renderer
) -> None:
    at = datetime(2019, 1, 1, 9, 0, tzinfo=UTC)
    async with demo_db.transaction() as session:
        assert await troika_heads_up(session, at=at, by="a") > 0
        assert await troika_heads_up(session, at=at + timedelta(hours=1), by="b") == 0
        rows = list(await session.execute(
            select(Person.email, OutboxItem.message).join(Person,
                                                          Person.id == OutboxItem.person_id)
            .where(OutboxItem.dedupe_key.like("troika-heads-up:2019:%"))))
    emails = {e for e, _ in rows}
    assert emails == {"fp.spain@demo.invalid", "fp.germany@demo.invalid",
                      "fp.namibia@demo.invalid", COORDINATOR}
    message = rows[0][1]
    from handlers.types import Outgoing

    out = Outgoing.from_dict(message)
    text = render_everywhere(renderer, out)["plain"]  # as the adapters show it, every format
    assert "The troika of 2019: Germany, Namibia" in text
    assert "Leaving: Spain." in text
    assert "Plan the creation of a network of female peacekeepers" in text
    for fmt in FORMATS:
        assert "2019" in renderer.render(out.key, "en", fmt, **out.context)


FPBOT = [sys.executable, "-m", "bot.cli"]


def test_the_cli_lists_due_and_sent_reminders_and_previews_the_digest(tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'fpbot.db'}"}
    for var in ("TELEGRAM_TOKEN", "SLACK_BOT_TOKEN"):
        env.pop(var, None)

    def fpbot(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*FPBOT, *args], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)

    assert fpbot("demo").returncode == 0
    preview = fpbot("digest", "--preview")
    assert preview.returncode == 0, preview.stderr
    for heading in ("Awaiting review", "Not yet submitted: Contributions to National action "
                    "plans, and the road to Berlin", "Meetings: registrations against capacity",
                    "Deadlines in the next 14 days", "Overdue action points",
                    "Open membership requests", "Undelivered and unreachable"):
        assert heading in preview.stdout
    # `reminders due` on the demo edition's deadline: tests/test_wiring.py.
    now = fpbot("reminders", "due", "--at", datetime.now(UTC).isoformat())
    assert now.returncode == 0, now.stderr
    lines = now.stdout.splitlines()
    assert lines[0].endswith("UTC") and "reminder(s) due at" in lines[0]
    bad = fpbot("reminders", "due", "--at", "next tuesday")
    assert bad.returncode == 2 and "is not an ISO date or date-time" in bad.stderr
    sent = fpbot("reminders", "sent", "--since", "2000-01-01")
    assert sent.returncode == 0 and sent.stdout.startswith("0 reminder(s) recorded since")


def test_a_bad_digest_cron_stops_the_start_with_a_clear_sentence(demo_db: Database) -> None:
    import pytest

    from bot.adapters import AdapterSetupError

    app = BotApp(Settings(database_url=demo_db.url, digest_cron="every monday"))
    with pytest.raises(AdapterSetupError, match="FPBOT_DIGEST_CRON='every monday' is not a "
                                                "crontab line such as '0 9 \\* \\* mon'"):
        ReminderJobs(app)


async def test_closing_the_bot_mid_sweep_lets_the_sweep_finish_quietly(
    demo_db: Database, clock: FrozenClock, caplog: Any
) -> None:
    import asyncio
    import logging

    for delay in (0.0, 0.0, 0.01, 0.05):
        app = BotApp(Settings(database_url=demo_db.url), clock=clock)
        await app.db.dispose()
        app.db = Database(demo_db.url, pooled=False)
        with caplog.at_level(logging.ERROR):
            app.start_scheduler()
            await asyncio.sleep(delay)
            await app.close()
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
