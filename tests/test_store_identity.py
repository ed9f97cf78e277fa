"""The store replaced under the bot is noticed; an empty store is created only on purpose."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from bot.app import BotApp, store_identity
from bot.delivery.inbound import StoreRefused
from bot.runner import web_app
from bot.settings import Settings
from handlers.clock import FrozenClock
from handlers.types import Incoming
from storage.db import Database, StoreUnavailable
from storage.models import StoreIdentity

FPBOT = [sys.executable, "-m", "bot.cli"]


def fpbot(cwd: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TELEGRAM_", "SLACK_", "DATABASE_URL"))}
    return subprocess.run([*FPBOT, *args], env={**env, "DATABASE_URL": url}, cwd=cwd,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_a_missing_store_is_not_created_by_run_or_chat_but_by_db_upgrade(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fpbot.db'}"
    for command in ("run", "chat"):
        refused = fpbot(tmp_path, url, command)
        assert refused.returncode == 2
        assert refused.stderr.strip().splitlines() == [
            f"fpbot: no database at {url}: create it with `fpbot db upgrade` (or load the "
            "demo: `fpbot demo`)"]
        assert not (tmp_path / "fpbot.db").exists()
    created = fpbot(tmp_path, url, "db", "upgrade")
    assert created.returncode == 0
    assert created.stderr.strip() == f"fpbot: created a new, empty database at {url}"
    again = fpbot(tmp_path, url, "db", "upgrade")
    assert again.returncode == 0 and again.stderr == ""


async def test_a_store_replaced_under_the_running_bot_refuses_writes_and_fails_healthz(
        tmp_path: Path, clock: FrozenClock) -> None:
    path = tmp_path / "fpbot.db"
    url = f"sqlite+aiosqlite:///{path}"
    first = BotApp(Settings(database_url=url), clock=clock)
    await first.open(create=True)
    asgi = web_app(first, [])
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                     base_url="http://bot") as http:
            assert (await http.get("/healthz")).status_code == 200
            # Someone deletes the file and a fresh, empty one appears in its place.
            other = tmp_path / "other.db"
            fresh = BotApp(Settings(database_url=f"sqlite+aiosqlite:///{other}"), clock=clock)
            await fresh.open(create=True)
            await fresh.close()
            os.replace(other, path)
            health = await http.get("/healthz")
            assert health.status_code == 503 and health.json()["store"] == "replaced"
        with pytest.raises(StoreRefused):
            await first.inbound.receive("telegram", "u1",
                                        Incoming("telegram", "1", "1", text="/help"))
        assert await first.sender.sweep() == 0
    finally:
        await first.close()
    with pytest.raises(StoreUnavailable, match="empty"):  # a restart does not adopt it...
        empty = BotApp(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'e.db'}"))
        (tmp_path / "e.db").touch()
        try:
            await empty.open()
        finally:
            await empty.close()


async def test_instances_opening_a_new_store_together_agree_on_its_identity(
        db: Database, clock: FrozenClock) -> None:
    """Two instances started together on a new store: the second's first write of the
    identity waits on the first's, and both then carry the first one's (the second used to
    fail its start on the duplicate key)."""
    other = Database(db.url, pooled=False)
    try:
        async with db.transaction() as session:  # the first instance, half-way through
            session.add(StoreIdentity(id=1, uid="first-instance", created_at=clock.now()))
            await session.flush()
            second = asyncio.create_task(store_identity(other, clock.now()))
            if not db.is_sqlite:  # let it reach the unique index it waits on
                await until_waiting_on_a_lock(session)
        assert await second == "first-instance"
        assert await store_identity(db, None) == "first-instance"
    finally:
        await other.dispose()


async def until_waiting_on_a_lock(session: AsyncSession) -> None:
    """Until another PostgreSQL connection waits on a lock (pg_locks; no timing guess)."""
    while not await session.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted")):
        await asyncio.sleep(0.01)


async def test_what_only_reads_does_not_wait_for_a_writer_on_sqlite(
        tmp_path: Path, clock: FrozenClock) -> None:
    """Another process holds SQLite's write lock (a long import, a migration): /healthz, the
    command menus and App Home still answer, as they only read (they used to queue for the
    write lock, and after the busy timeout /healthz said the store was unavailable)."""
    path = tmp_path / "fpbot.db"
    app = BotApp(Settings(database_url=f"sqlite+aiosqlite:///{path}"), clock=clock)
    await app.open(create=True)
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=web_app(app, [])),
                                     base_url="http://bot") as http:
            health = await http.get("/healthz")
        assert health.status_code == 200, health.text
        menu = await app.core.commands_for("telegram", "")
        assert [name for name, _ in menu] == ["start", "help", "cancel"]
        home = await app.core.home("slack", "U-stranger")
        assert home.key == "home.stranger"
    finally:
        writer.rollback()
        writer.close()
        await app.close()
