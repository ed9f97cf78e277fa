"""Assembly: the store, the core, the delivery path and the scheduler, wired once for every command."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import delete

from bot.delivery import Inbound, Liveness, Sender
from bot.settings import Settings
from handlers import COMMANDS, FORMS, FREE_TEXT
from handlers.clock import Clock, SystemClock
from handlers.context import CoreConfig
from handlers.dispatch import Core
from messages import Renderer
from storage.db import Database
from storage.migrate import current_revision, head_revision, upgrade
from storage.models import InboxItem, StoreIdentity

log = logging.getLogger(__name__)

INBOX_KEEP = timedelta(days=7)  # platforms redeliver for a day at most


async def store_identity(db: Database, now: datetime | None) -> str:
    """The store's identity; written at its first opening when `now` is given."""
    async with db.transaction() as session:
        row = await session.get(StoreIdentity, 1)
        if row is None and now is not None:
            row = StoreIdentity(id=1, uid=uuid.uuid4().hex, created_at=now)
            session.add(row)
        return row.uid if row is not None else ""


class BotApp:
    """One running bot: what `fpbot run`, `fpbot serve` and `fpbot chat` share."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.db = Database(settings.database_url)
        self.renderer = Renderer()
        self.core = Core(self.db, COMMANDS, FORMS, clock=self.clock, renderer=self.renderer,
                         free_text=FREE_TEXT,
                         config=CoreConfig(timezone=settings.timezone))
        self.liveness = Liveness(self.db, self.clock)
        self.sender = Sender(self.db, self.clock, self.liveness)
        self.outbox = self.sender  # the name other parts know it by
        self.inbound = Inbound(self.core, self.liveness)
        self.core.outbox_listeners.append(self.sender.poke)
        self.scheduler: AsyncIOScheduler | None = None
        self.store_uid = ""
        self.stop_grace = 15.0  # seconds a stopping process gives the work in hand

    async def open(self) -> None:
        """Check the store answers, bring its schema up to date, and note its identity."""
        await self.db.check()
        await upgrade(self.db)
        self.store_uid = await store_identity(self.db, self.clock.now())

    async def health(self) -> str:
        """"" when the store answers and is still the one we opened (same identity, same
        schema); else what is wrong, for /healthz (503) and the log."""
        try:
            await self.db.check()
            uid = await store_identity(self.db, None)
            revision = await current_revision(self.db)
        except Exception:
            return "unavailable"
        if self.store_uid and uid != self.store_uid:
            log.error("the database was replaced under the running bot (identity %s, expected "
                      "%s): restart it against the right store", (uid or "none")[:8],
                      self.store_uid[:8])
            return "replaced"
        if revision != head_revision():
            log.error("the database schema is at %s, not %s", revision, head_revision())
            return "schema"
        return ""

    def start_scheduler(self) -> AsyncIOScheduler:
        """Start the in-memory triggers; what is due always lives in the store."""
        scheduler = AsyncIOScheduler(timezone="UTC")
        scheduler.add_job(self.prune_inbox, "interval", hours=6, id="inbox-prune",
                          coalesce=True, max_instances=1)
        scheduler.start()
        self.scheduler = scheduler
        return scheduler

    async def prune_inbox(self) -> int:
        """Forget updates handled more than a week ago."""
        cutoff = self.clock.now() - INBOX_KEEP
        async with self.db.transaction() as session:
            result = await session.execute(
                delete(InboxItem).where(InboxItem.handled_at.is_not(None),
                                        InboxItem.handled_at < cutoff)
            )
        return int(getattr(result, "rowcount", 0) or 0)

    async def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until what was received is handled and what is due is sent (tests)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            await self.inbound.wait_idle(max(deadline - loop.time(), 0.01))
            await self.sender.wait_idle(max(deadline - loop.time(), 0.01))
            if self.inbound.idle:
                return

    async def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        await self.db.dispose()
