"""Assembly: the store, the core, the outbox and the scheduler, wired once for every command."""

from __future__ import annotations

import logging
from datetime import timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import delete

from bot.delivery import Outbox
from bot.scheduler import ReminderJobs
from bot.settings import Settings
from handlers import COMMANDS, FORMS, FREE_TEXT
from handlers.clock import Clock, SystemClock
from handlers.context import CoreConfig
from handlers.dispatch import Core
from messages import Renderer
from storage.db import Database
from storage.migrate import upgrade
from storage.models import InboxItem

log = logging.getLogger(__name__)

INBOX_KEEP = timedelta(days=7)  # platforms redeliver for a day at most


class BotApp:
    """One running bot: what `fpbot run`, `fpbot serve` and `fpbot chat` share."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.db = Database(settings.database_url)
        self.renderer = Renderer()
        self.core = Core(self.db, COMMANDS, FORMS, clock=self.clock, renderer=self.renderer,
                         free_text=FREE_TEXT,
                         config=CoreConfig(timezone=settings.timezone,
                                           secret_key=settings.secret_key,
                                           public_url=settings.public_url
                                           or f"http://{settings.host}:{settings.port}"))
        self.outbox = Outbox(self.db, self.clock, senders={})
        self.core.outbox_listeners.append(self.outbox.poke)
        self.scheduler: AsyncIOScheduler | None = None
        self.reminder_jobs: ReminderJobs | None = None

    async def open(self) -> None:
        """Check the store answers and bring its schema up to date."""
        await self.db.check()
        await upgrade(self.db)

    def start_scheduler(self) -> AsyncIOScheduler:
        """Start the in-memory triggers; what is due always lives in the store."""
        scheduler = AsyncIOScheduler(timezone="UTC")
        scheduler.add_job(self.prune_inbox, "interval", hours=6, id="inbox-prune",
                          coalesce=True, max_instances=1)
        self.reminder_jobs = ReminderJobs(self)
        self.reminder_jobs.install(scheduler)
        scheduler.start()
        self.scheduler = scheduler
        return scheduler

    async def prune_inbox(self) -> int:
        """Forget updates answered more than a week ago."""
        cutoff = self.clock.now() - INBOX_KEEP
        async with self.db.transaction() as session:
            result = await session.execute(
                delete(InboxItem).where(InboxItem.replied_at.is_not(None),
                                        InboxItem.replied_at < cutoff)
            )
        return int(getattr(result, "rowcount", 0) or 0)

    async def close(self) -> None:
        if self.reminder_jobs is not None:
            await self.reminder_jobs.stop()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        await self.db.dispose()
