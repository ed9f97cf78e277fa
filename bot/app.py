"""Assembly: the store, the core, the delivery path and the scheduler, wired once for every command."""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import delete, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from bot.delivery import Inbound, Liveness, Sender
from bot.delivery.stopping import finish
from bot.scheduler import ReminderJobs
from bot.settings import Settings
from handlers import COMMANDS, FORMS, FREE_TEXT
from handlers.clock import Clock, SystemClock
from handlers.context import CoreConfig
from handlers.dispatch import Core
from messages import Renderer
from storage.db import Database, StoreUnavailable, is_locked, safe_url
from storage.migrate import current_revision, head_revision, upgrade
from storage.models import InboxItem, StoreIdentity
from storage.upsert import insert_ignore

log = logging.getLogger(__name__)

INBOX_KEEP = timedelta(days=7)  # platforms redeliver for a day at most


async def store_identity(db: Database, now: datetime | None) -> str:
    """The store's identity; written at its first opening when `now` is given.

    Instances starting together on a new store both try to write it: the first insert wins
    and every instance reads back that one (a plain insert failed the loser's start).
    """
    if now is not None:
        async with db.transaction() as session:
            await insert_ignore(session, StoreIdentity,
                                [{"id": 1, "uid": uuid.uuid4().hex, "created_at": now}])
    async with db.reading() as session:
        uid = await session.scalar(select(StoreIdentity.uid).where(StoreIdentity.id == 1))
        return uid or ""


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
        # The heartbeat has connections of its own: never queued behind the work it vouches for.
        self.liveness = Liveness(self.db.lane(), self.clock)
        self.sender = Sender(self.db, self.clock, self.liveness)
        self.outbox = self.sender  # the name other parts know it by
        self.inbound = Inbound(self.core, self.liveness)
        self.core.outbox_listeners.append(self.sender.poke)
        self.liveness.on_beat.append(self.health)
        self.scheduler: AsyncIOScheduler | None = None
        self._pruning: set[asyncio.Task[object]] = set()
        self.reminder_jobs: ReminderJobs | None = None
        self.store_uid = ""
        self.store_file: tuple[int, int] | None = None
        self.stop_grace = 15.0  # seconds a stopping process gives the work in hand

    async def open(self, *, create: bool = False) -> None:
        """`_open`; a SQLite file another process holds locked past the busy timeout is one
        clear `StoreUnavailable` (it was a traceback)."""
        try:
            await self._open(create=create)
        except OperationalError as exc:
            if not is_locked(exc):
                raise
            raise StoreUnavailable(
                f"the database {safe_url(self.db.url)} is locked: another process has been "
                f"writing to it for over {self.db.busy_timeout_s:g} s; try again when it is "
                "done") from None

    async def _open(self, *, create: bool = False) -> None:
        """Check the store answers, bring its schema up to date, and note its identity.

        An empty store (a new SQLite file, or one replaced by an empty one) is set up only
        when `create` is given (`fpbot db upgrade`, `fpbot demo`, imports): a bot started on
        the wrong, empty database refuses instead of quietly becoming a stranger to everyone.
        """
        path = self._sqlite_path()
        missing = path is not None and not path.exists()
        if missing and not create:
            raise StoreUnavailable(f"no database at {safe_url(self.db.url)}: create it with "
                                   "`fpbot db upgrade` (or load the demo: `fpbot demo`)")
        await self.db.check()
        empty = missing or await current_revision(self.db) is None
        if empty and not create:
            raise StoreUnavailable(f"the database {safe_url(self.db.url)} is empty (new, or "
                                   "replaced?): create it with `fpbot db upgrade` (or `fpbot demo`)")
        await upgrade(self.db)
        self.store_uid = await store_identity(self.db, self.clock.now())
        self.store_file = self._file_id()
        if empty:
            print(f"fpbot: created a new, empty database at {safe_url(self.db.url)}",
                  file=sys.stderr)

    def _sqlite_path(self) -> Path | None:
        if not self.db.is_sqlite:
            return None
        name = make_url(self.db.url).database
        if not name or name == ":memory:" or name.startswith("file:"):
            return None
        return Path(name)

    def _file_id(self) -> tuple[int, int] | None:
        path = self._sqlite_path()
        try:
            st = path.stat() if path is not None else None
        except OSError:
            return None
        return (st.st_dev, st.st_ino) if st is not None else None

    async def health(self) -> str:
        """"" when the store answers and is still the one we opened (same file, identity and
        schema); else what is wrong, for /healthz (503), the log, and refusing writes."""
        if self.store_file is not None and self._file_id() != self.store_file:
            problem = "replaced"
        else:
            try:
                await self.db.check()
                uid = await store_identity(self.db, None)
                revision = await current_revision(self.db)
            except Exception:
                return "unavailable"
            if self.store_uid and uid != self.store_uid:
                problem = "replaced"
            elif revision != head_revision():
                problem = "schema"
            else:
                problem = ""
        refusing = bool(problem) and problem != "unavailable"
        if refusing and not self.inbound.refusing:
            log.error("the database %s %s under the running bot: writes refused, /healthz "
                      "answers 503; restart the bot against the right store",
                      safe_url(self.db.url), "was replaced or deleted" if problem == "replaced"
                      else "changed schema")
        self.inbound.refusing = self.sender.refusing = refusing
        return problem

    def start_scheduler(self) -> AsyncIOScheduler:
        """Start the in-memory triggers; what is due always lives in the store."""
        scheduler = AsyncIOScheduler(timezone="UTC")
        scheduler.add_job(self._prune_job, "interval", hours=6, id="inbox-prune",
                          coalesce=True, max_instances=1)
        self.reminder_jobs = ReminderJobs(self)
        self.reminder_jobs.install(scheduler)
        scheduler.start()
        self.scheduler = scheduler
        return scheduler

    async def _prune_job(self) -> None:
        task = asyncio.current_task()
        if task is None or self.scheduler is None:
            return
        self._pruning.add(task)
        try:
            await self.prune_inbox()
        except Exception:
            log.exception("inbox prune failed; the next one retries")
        finally:
            self._pruning.discard(task)

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
        if self.reminder_jobs is not None:
            await self.reminder_jobs.stop()
        if self.scheduler is not None:
            # APScheduler cancels the jobs it runs: let a prune in hand end first
            # (bot/delivery/stopping.py says why).
            await finish(list(self._pruning), self.stop_grace)
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        if self.liveness.db is not self.db:
            await self.liveness.db.dispose()
        await self.db.dispose()
