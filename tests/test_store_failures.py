"""The store failing: at start (one clear line, no traceback) and mid-way (nothing lost)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from handlers import COMMANDS, FORMS
from handlers.clock import FrozenClock
from handlers.dispatch import Core
from handlers.types import Incoming
from storage.db import Database, StoreUnavailable
from storage.models import InboxItem, OutboxItem
from tests.conftest import T0

FPBOT = [sys.executable, "-m", "bot.cli"]


def fpbot(*args: str, database_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run([*FPBOT, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("url", [
    "sqlite+aiosqlite:////proc/fpbot/fpbot.db",  # a folder that does not exist
    "sqlite+aiosqlite:////proc/fpbot.db",  # a file nobody may create, not even root
])
def test_an_unwritable_database_is_one_clear_line(url: str, tmp_path: Path) -> None:
    result = fpbot("db", "upgrade", database_url=url, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fpbot: cannot open the database")


def test_a_postgresql_that_is_down_is_one_clear_line_without_the_password(tmp_path: Path) -> None:
    url = "postgresql://fpbot:s3cret-pw@127.0.0.1:9/fpbot"
    result = fpbot("run", database_url=url, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "s3cret-pw" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot open the database postgresql+asyncpg://fpbot:***@" in lines[0]


async def test_an_unopenable_sqlite_file_leaves_no_driver_thread_behind() -> None:
    """aiosqlite's worker thread, started for a connection that fails, outlives the loop and
    prints a traceback after the clear line; the check must fail before any is started."""
    db = Database("sqlite+aiosqlite:////proc/fpbot.db")
    before = set(threading.enumerate())  # other tests' stores may still be closing theirs
    with pytest.raises(StoreUnavailable, match="unable to open database file"):
        await db.check()
    workers = [t.name for t in set(threading.enumerate()) - before
               if "_connection_worker_thread" in t.name]
    await db.dispose()
    assert workers == []


async def test_check_raises_store_unavailable() -> None:
    db = Database("postgresql://u:p@127.0.0.1:9/x")
    with pytest.raises(StoreUnavailable):
        await db.check()
    await db.dispose()


async def test_a_store_failing_mid_way_loses_nothing(tmp_path: Path) -> None:
    from storage.migrate import upgrade

    path = tmp_path / "fpbot.db"
    db = Database(f"sqlite+aiosqlite:///{path}", busy_timeout_ms=100)
    await upgrade(db)
    core = Core(db, COMMANDS, FORMS, clock=FrozenClock(T0))
    inc = Incoming(platform="telegram", user_id="5", chat_id="5", text="/help")
    async with db.transaction() as session:
        item = InboxItem(platform="telegram", key="u-1", payload={"incoming": inc.to_dict()},
                         received_at=T0)
        session.add(item)
    inbox_id = item.id

    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database
    try:
        replies = await core.handle(inc, inbox_id)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert [r.key for r in replies] == ["errors.store_unavailable"]
    async with db.transaction() as session:
        kept = await session.get(InboxItem, inbox_id)
        assert kept is not None and kept.handled_at is None  # kept, to be tried again
        assert list(await session.scalars(select(OutboxItem))) == []

    assert [r.key for r in await core.handle(inc, inbox_id)] == ["network.help"]
    async with db.transaction() as session:
        [reply] = list(await session.scalars(select(OutboxItem)))
    assert reply.inbox_id == inbox_id and reply.chat_id == "5" and reply.status == "pending"
    await db.dispose()
