"""The connection to the store: one async engine, short transactions, SQLite tuned for a bot.

SQLite gets foreign keys, WAL, a busy timeout and `BEGIN IMMEDIATE` transactions, so that a
read-then-write never fails half-way on a busy snapshot; work that only reads (`reading()`,
`check()`) begins a plain deferred transaction and never touches the write lock. PostgreSQL
goes through asyncpg.

SQLite takes one writer at a time. Left to SQLite, the writers of one process that wait for
the lock poll it in its busy handler, each sleeping longer after every miss (up to 100 ms a
try): under a burst one writer lost the race for seconds, and some gave up after the busy
timeout ("database is locked"). Writers of this process therefore queue for the lock in
turn (first come, first served) and only the first of them asks SQLite; other processes on
the file still meet the busy timeout, as before. A writer that somebody outside is waiting
on (an inbox receipt: Telegram or Slack waits for its answer) is `urgent`: it goes before
the writers queued for other work, which keep their order among themselves.
"""

from __future__ import annotations

import asyncio
import sqlite3
import weakref
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from storage import sqlite_driver

DEFAULT_URL = "sqlite+aiosqlite:///fpbot.db"
BUSY_TIMEOUT_MS = 5000


class StoreUnavailable(Exception):
    """The store cannot be opened; the message is safe to show (no password in it)."""


SUPPORTED = "use SQLite (sqlite+aiosqlite:///fpbot.db) or PostgreSQL (postgresql://user:pw@host/db)"


def normalise_url(url: str) -> str:
    """Accept the URLs people paste (postgres://, postgresql://, sqlite://) and pick async drivers.

    Anything else is refused with one `StoreUnavailable` sentence that never repeats the URL
    (it may hold a password).
    """
    try:
        u = make_url(url)
    except ArgumentError:
        raise StoreUnavailable(f"DATABASE_URL is not a database URL: {SUPPORTED}") from None
    backend = u.get_backend_name()
    if backend in ("postgres", "postgresql"):
        u = u.set(drivername="postgresql+asyncpg")
    elif backend == "sqlite":
        u = u.set(drivername="sqlite+aiosqlite")
    else:
        raise StoreUnavailable(f"DATABASE_URL names {backend!r}, which fpbot does not support: "
                               f"{SUPPORTED}")
    return u.render_as_string(hide_password=False)


def is_locked(exc: BaseException) -> bool:
    """Whether a store error is SQLite's "database is locked" (a writer held it too long)."""
    return "database is locked" in str(getattr(exc, "orig", None) or exc)


def safe_url(url: str | URL) -> str:
    """The URL with any password masked, fit for a log line or an error."""
    return make_url(url).render_as_string(hide_password=True)


READING = "fpbot_reading"  # execution option of a read-only transaction


class WriteTurns:
    """One writer at a time; urgent waiters first, each kind in the order it came.

    Like `asyncio.Lock`, a waiter cancelled after the turn was handed to it hands it on (the
    turn is never lost), and one cancelled before is simply gone."""

    def __init__(self) -> None:
        self._held = False
        self._queues: tuple[deque[asyncio.Future[None]], deque[asyncio.Future[None]]] = (
            deque(), deque())  # urgent, then the rest

    def locked(self) -> bool:
        return self._held

    async def acquire(self, *, urgent: bool = False) -> None:
        if not self._held and not any(self._queues):
            self._held = True
            return
        queue = self._queues[0 if urgent else 1]
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # handed to us as we were cancelled: pass it on
            elif turn in queue:  # (a release may have passed over it already)
                queue.remove(turn)
            raise

    def release(self) -> None:
        for queue in self._queues:
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    turn.set_result(None)  # still held: it passes to that waiter
                    return
        self._held = False


class Database:
    """Owns the engine and hands out sessions."""

    def __init__(self, url: str = DEFAULT_URL, *, pooled: bool = True,
                 busy_timeout_ms: int = BUSY_TIMEOUT_MS, pool_size: int | None = None) -> None:
        self.url = normalise_url(url)
        u = make_url(self.url)
        self.is_sqlite = u.get_backend_name() == "sqlite"
        self.busy_timeout_s = busy_timeout_ms / 1000
        self._busy_timeout_ms = busy_timeout_ms
        kwargs: dict[str, Any] = {}
        if not pooled:
            kwargs["poolclass"] = NullPool
        elif pool_size is not None:
            kwargs.update(pool_size=pool_size, max_overflow=0)
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": self.busy_timeout_s}
            kwargs["module"] = sqlite_driver.dbapi()  # a statement in one trip to the thread
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _tune_sqlite(self.engine, busy_timeout_ms)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WriteTurns] = (
            weakref.WeakKeyDictionary())

    @asynccontextmanager
    async def transaction(self, *, urgent: bool = False) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on any error.
        `urgent`: someone outside waits on it (see the module's doc)."""
        async with self._writer(urgent), self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def _writer(self, urgent: bool = False) -> AsyncIterator[None]:
        """SQLite: this process's writers in turn (see the module's doc); waiting longer than
        the busy timeout fails as SQLite would. PostgreSQL: nothing to wait for."""
        if not self.is_sqlite:
            yield
            return
        loop = asyncio.get_running_loop()
        lock = self._writers.get(loop)
        if lock is None:
            lock = self._writers[loop] = WriteTurns()
        try:
            # Not `wait_for`: on 3.11 it returns the lock to a task cancelled just as the lock
            # was handed to it, and the cancelled task carried on (a killed sender's lane went
            # on sending, and its stop waited for ever).
            async with asyncio.timeout(self.busy_timeout_s):
                await lock.acquire(urgent=urgent)
        except TimeoutError:
            raise OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError(
                "database is locked (by this process's writers)")) from None
        try:
            yield
        finally:
            lock.release()

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction that only reads: on SQLite a plain (deferred)
        `BEGIN`, so it never waits for or holds the write lock; rolled back at the end."""
        async with self.sessions() as session:
            await session.connection(execution_options={READING: True})  # begins it
            try:
                yield session
            finally:
                await session.rollback()

    async def check(self) -> None:
        """Open a connection once, turning any failure into one clear `StoreUnavailable`."""
        if self.is_sqlite:
            path = make_url(self.url).database
            if path and path != ":memory:" and not path.startswith("file:"):
                parent = Path(path).resolve().parent
                if not parent.is_dir():
                    raise StoreUnavailable(
                        f"cannot open the database {safe_url(self.url)}: folder {parent} does not exist"
                    )
                # Open the file once without aiosqlite first. When aiosqlite fails to connect, it
                # queues the stop of its worker thread without awaiting it; the thread then
                # reports to an event loop that `asyncio.run` has already closed, and prints
                # "Exception in thread ..." after our one clear line (aiosqlite issue #241).
                try:
                    sqlite3.connect(path, timeout=self.busy_timeout_s).close()
                except sqlite3.Error as exc:
                    raise StoreUnavailable(
                        f"cannot open the database {safe_url(self.url)}: {exc}"
                    ) from exc
        try:
            async with self.engine.connect() as conn:
                conn = await conn.execution_options(**{READING: True})
                await conn.exec_driver_sql("SELECT 1")
        except Exception as exc:  # any driver's failure: one sentence for the operator
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0] or type(exc).__name__
            raise StoreUnavailable(
                f"cannot open the database {safe_url(self.url)}: {reason}"
            ) from exc

    def lane(self, connections: int = 1) -> Database:
        """The same store through a pool of its own, for work that must never queue behind
        this one's (the heartbeat: a busy pool would starve it until others took it for
        dead). An in-memory SQLite store has no second door: it is its own lane."""
        database = make_url(self.url).database
        if self.is_sqlite and (not database or database == ":memory:"):
            return self
        return Database(self.url, busy_timeout_ms=self._busy_timeout_ms,
                        pool_size=connections)

    async def dispose(self) -> None:
        await self.engine.dispose()


def _tune_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take over transaction control from the driver so that BEGIN IMMEDIATE can be issued.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A transaction that writes takes the write lock at once (no upgrade deadlock later);
        # one that only reads (`Database.reading`) takes none.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READING)
                             else "BEGIN IMMEDIATE")
