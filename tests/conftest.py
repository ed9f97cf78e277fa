"""Fixtures: a migrated store on SQLite and on PostgreSQL, a frozen clock, and a chat transcript.

Every test that takes `db` runs twice: on a fresh SQLite file and on the PostgreSQL named by
TEST_DATABASE_URL (started by tests/run.sh). With FPBOT_REQUIRE_POSTGRES=1 a missing
PostgreSQL fails the run instead of skipping it.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from handlers import COMMANDS, FORMS, FREE_TEXT
from handlers.clock import FrozenClock
from handlers.dispatch import Core
from handlers.types import Incoming, Outgoing
from messages import Renderer
from storage.db import Database
from storage.demo import load_demo
from storage.migrate import upgrade
from storage.models import Base

os.environ.setdefault("PTB_TIMEDELTA", "true")

PG_URL = os.environ.get("TEST_DATABASE_URL", "")
REQUIRE_PG = os.environ.get("FPBOT_REQUIRE_POSTGRES") == "1"
# Berlin, the second annual meeting, is weeks away: Spain, Germany and Namibia form the troika.
T0 = datetime(2018, 3, 1, 9, 0, tzinfo=UTC)

async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(make_url(PG_URL).set(drivername="postgresql")
                                 .render_as_string(hide_password=False))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine to completion from sync code, even while a test's loop is running."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A database of this test session's own on the test PostgreSQL, migrated once."""
    if not PG_URL:
        if REQUIRE_PG:
            pytest.fail("FPBOT_REQUIRE_POSTGRES=1 but TEST_DATABASE_URL is not set")
        pytest.skip("no TEST_DATABASE_URL: PostgreSQL tests run under tests/run.sh")
    name = f"fpbot_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    _run(_admin(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)

    async def migrate() -> None:
        database = Database(url, pooled=False)
        await upgrade(database)
        await database.dispose()

    _run(migrate())
    yield url
    _run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[Database]:
    """A migrated, empty store: a fresh SQLite file, or this session's PostgreSQL emptied."""
    if request.param == "sqlite":
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'fpbot.db'}")
        await upgrade(database)
    else:
        database = Database(request.getfixturevalue("pg_url"), pooled=False)
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        async with database.engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
async def demo_db(db: Database, clock: FrozenClock) -> Database:
    """The store with the 78 members, the 2017-2019 chairs and the demo people."""
    async with db.transaction() as session:
        _, report = await load_demo(session, clock.now())
    assert report.ok, report.errors
    return db


@pytest.fixture
def renderer() -> Renderer:
    return Renderer()


@pytest.fixture
def core(demo_db: Database, clock: FrozenClock, renderer: Renderer) -> Core:
    return Core(demo_db, COMMANDS, FORMS, clock=clock, renderer=renderer, free_text=FREE_TEXT)


class Transcript:
    """A conversation with the core, read like a chat: `say`, then look at the replies."""

    def __init__(self, core: Core, renderer: Renderer) -> None:
        self.core = core
        self.renderer = renderer
        self.replies: list[Outgoing] = []

    async def say(self, text: str = "", *, as_: str, platform: str = "console",
                  private: bool = True, **fields: Any) -> list[Outgoing]:
        """Send `text` from the account `as_` (on the console: a roster e-mail binds itself)."""
        if platform == "console" and "@" in as_:
            await self.core.console_identity(as_)
        inc = Incoming(platform=platform, user_id=as_, chat_id=as_, text=text,
                       private=private, **fields)
        self.replies = await self.core.handle(inc)
        return self.replies

    @property
    def keys(self) -> list[str]:
        return [r.key for r in self.replies]

    def last(self) -> Outgoing:
        assert self.replies, "the bot said nothing"
        return self.replies[-1]

    def text(self, index: int = -1, fmt: str = "plain") -> str:
        out = self.replies[index]
        return self.renderer.render(out.key, "en", fmt, **out.context)


@pytest.fixture
def chat(core: Core, renderer: Renderer) -> Transcript:
    return Transcript(core, renderer)


FP_CHILE = "fp.chile@demo.invalid"
COORDINATOR = "coordinator@demo.invalid"
FP_GERMANY = "fp.germany@demo.invalid"
