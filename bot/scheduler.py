"""The scheduled jobs: the reminder sweep, the weekly digest, the troika's 1 January heads-up.

APScheduler holds only in-memory triggers; the store decides what is due. Every minute the
sweep records and queues what is due now (and catches up what a downtime missed, if still
useful); the weekly digest is claimed once per period in the store, so several instances send
one, and a digest missed while every instance was down goes out at the next sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import select

from bot.adapters import AdapterSetupError
from handlers.digest import queue_digest
from handlers.reminders import sweep, troika_heads_up
from storage.deadlines import zone
from storage.models import Person, Role, RoleName

if TYPE_CHECKING:
    from bot.app import BotApp

log = logging.getLogger(__name__)

SWEEP_EVERY = timedelta(minutes=1)
DIGEST_USEFUL = timedelta(days=6)  # a digest not sent by then gives way to the next one
DEFAULT_DIGEST_CRON = "0 9 * * mon"


def last_fire(cron: str, tz: str, at: datetime, within: timedelta = DIGEST_USEFUL
              ) -> datetime | None:
    """The latest time `cron` (in `tz`) fired at or before `at`, if within `within`."""
    trigger = CronTrigger.from_crontab(cron, timezone=zone(tz))
    fire = trigger.get_next_fire_time(None, at - within)
    found = None
    for _ in range(10_000):
        if fire is None or fire > at:
            break
        found = fire
        fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
    return found


def digest_period(cron: str, tz: str, at: datetime) -> str | None:
    """Which digest is due at `at` (its scheduled local time), or None."""
    fire = last_fire(cron, tz, at)
    return None if fire is None else f"{fire.astimezone(zone(tz)):%Y-%m-%dT%H:%M}"


class ReminderJobs:
    """What the scheduler runs; each run reads the store and writes there what it did."""

    def __init__(self, app: BotApp) -> None:
        self.app = app
        self.cron = app.settings.digest_cron or DEFAULT_DIGEST_CRON
        try:
            CronTrigger.from_crontab(self.cron)
        except ValueError as exc:
            raise AdapterSetupError(f"FPBOT_DIGEST_CRON={self.cron!r} is not a crontab line "
                                    f"such as '0 9 * * mon' ({exc})") from None
        self.instance = f"{uuid.uuid4().hex[:12]}"
        self.scheduler: AsyncIOScheduler | None = None
        self.digest_tz = app.settings.digest_timezone or ""
        self.active: set[asyncio.Task[None]] = set()
        self.stopping = False

    async def secretariat_zone(self) -> str:
        """The zone the digest's cron is read in: FPBOT_DIGEST_TIMEZONE, else the first
        secretariat officer's, else FPBOT_TIMEZONE."""
        if self.app.settings.digest_timezone:
            return self.app.settings.digest_timezone
        async with self.app.db.transaction() as session:
            tz = await session.scalar(
                select(Person.timezone).join(Role, Role.person_id == Person.id)
                .where(Role.role == RoleName.SECRETARIAT).order_by(Person.id).limit(1))
        return tz or self.app.settings.timezone

    async def run(self) -> int:
        """One sweep: due reminders, the troika heads-up, a due digest; returns messages queued."""
        now = self.app.clock.now()
        tz = await self.secretariat_zone()
        self._follow_zone(tz)
        period = digest_period(self.cron, tz, now)
        async with self.app.db.transaction() as session:
            won = await sweep(session, at=now, renderer=self.app.renderer)
            queued = sum(1 for c in won if c.status == "due")
            queued += await troika_heads_up(session, at=now, by=self.instance)
            if period is not None:
                queued += await queue_digest(session, self.app.renderer, at=now, period=period,
                                             by=self.instance)
        if queued:
            log.info("scheduler queued %s message(s)", queued)
            self.app.outbox.poke()
        return queued

    async def guarded_run(self) -> None:
        if self.stopping:
            return
        task = asyncio.current_task()
        if task is not None:
            self.active.add(task)
        try:
            await self.run()
        except Exception:
            log.exception("reminder sweep failed; the next one retries")
        finally:
            if task is not None:
                self.active.discard(task)

    async def stop(self, grace: float = 10.0) -> None:
        """Let a sweep in progress finish (it is one short transaction) before the store
        closes; one still running after `grace` seconds is cancelled and rolled back. Call it
        before shutting the scheduler down: APScheduler cancels the jobs it is running."""
        self.stopping = True
        await asyncio.sleep(0)  # a run just submitted starts, and sees `stopping`
        for task in list(self.active):
            try:
                async with asyncio.timeout(grace):  # not wait_for: see storage/db.py
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _follow_zone(self, tz: str) -> None:
        """Keep the digest trigger in the secretariat's zone (it may change)."""
        if tz == self.digest_tz or self.scheduler is None:
            return
        self.digest_tz = tz
        if self.scheduler.get_job("digest") is not None:
            self.scheduler.reschedule_job(
                "digest", trigger=CronTrigger.from_crontab(self.cron, timezone=zone(tz)))

    def install(self, scheduler: AsyncIOScheduler) -> None:
        """Add the sweep (every minute, at once on start) and the digest's cron trigger."""
        self.scheduler = scheduler
        scheduler.add_job(self.guarded_run, "interval", seconds=SWEEP_EVERY.total_seconds(),
                          id="reminders-sweep", coalesce=True, max_instances=1,
                          misfire_grace_time=None, next_run_time=datetime.now(zone("UTC")))
        scheduler.add_job(self.guarded_run,
                          CronTrigger.from_crontab(self.cron,
                                                   timezone=zone(self.digest_tz or "UTC")),
                          id="digest", coalesce=True, max_instances=1, misfire_grace_time=None)
