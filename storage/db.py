"""The connection to the store: one async engine, short transactions, SQLite tuned for a bot.

SQLite gets foreign keys, WAL, a busy timeout and `BEGIN IMMEDIATE` transactions, so that a
read-then-write never fails half-way on a busy snapshot. PostgreSQL goes through asyncpg.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

DEFAULT_URL = "sqlite+aiosqlite:///fpbot.db"
BUSY_TIMEOUT_MS = 5000


class StoreUnavailable(Exception):
    """The store cannot be opened; the message is safe to show (no password in it)."""


def normalise_url(url: str) -> str:
    """Accept the URLs people paste (postgres://, postgresql://, sqlite://) and pick async drivers."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend in ("postgres", "postgresql"):
        u = u.set(drivername="postgresql+asyncpg")
    elif backend == "sqlite":
        u = u.set(drivername="sqlite+aiosqlite")
    return u.render_as_string(hide_password=False)


def safe_url(url: str | URL) -> str:
    """The URL with any password masked, fit for a log line or an error."""
    return make_url(url).render_as_string(hide_password=True)


class Database:
    """Owns the engine and hands out sessions."""

    def __init__(self, url: str = DEFAULT_URL, *, pooled: bool = True,
                 busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self.url = normalise_url(url)
        u = make_url(self.url)
        self.is_sqlite = u.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {}
        if not pooled:
            kwargs["poolclass"] = NullPool
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": busy_timeout_ms / 1000}
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _tune_sqlite(self.engine, busy_timeout_ms)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on any error."""
        async with self.sessions() as session, session.begin():
            yield session

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
                try:  # plain sqlite3 first: a failed aiosqlite connect can outlive the loop
                    sqlite3.connect(path).close()
                except sqlite3.Error as exc:
                    raise StoreUnavailable(
                        f"cannot open the database {safe_url(self.url)}: {exc}") from None
        try:
            async with self.engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
        except Exception as exc:  # any driver's failure: one sentence for the operator
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0] or type(exc).__name__
            raise StoreUnavailable(
                f"cannot open the database {safe_url(self.url)}: {reason}"
            ) from exc

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
        conn.exec_driver_sql("BEGIN IMMEDIATE")
