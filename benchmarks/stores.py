"""The stores the benchmarks run the bot on: the demo, plus a focal point on Telegram for each
of the Network's 78 members.

`demo_store(url, now)` empties the store at `url` (a PostgreSQL database is dropped back to an
empty schema: `Options.pg_url` is the benchmarks' to empty), migrates it, loads the demo
(`storage.demo.load_demo`), gives every member without a demo focal point one more
(`fp.<member code>@demo.invalid`, through the roster import), and gives each of the 78 a
Telegram identity: chat and user id `FIRST_CHAT + n`.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path

from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url

from benchmarks.processes import BenchmarkFailed
from storage.db import Database
from storage.demo import load_demo
from storage.migrate import upgrade
from storage.models import Identity, Member, Person, Role, RoleName
from storage.roster import import_roster

FIRST_CHAT = 500_000  # the focal points' Telegram chats: 500000, 500001, …


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def empty(url: str) -> None:
    """A new SQLite file, or the PostgreSQL database with nothing in its public schema."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        path = Path(u.database or "")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    db = Database(url, pooled=False)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    finally:
        await db.dispose()


async def demo_store(url: str, now: datetime, *, focal_points: bool = True) -> list[int]:
    """Empty, migrate and load the store at `url`; returns the focal points' Telegram chat
    ids (none unless `focal_points`)."""
    await empty(url)
    db = Database(url, pooled=False)
    try:
        await upgrade(db)
        async with db.transaction() as session:
            _, report = await load_demo(session, now)
            if not report.ok:
                raise BenchmarkFailed("the demo did not load: " + "; ".join(report.errors))
        if not focal_points:
            return []
        async with db.transaction() as session:
            covered = set(await session.scalars(
                select(Role.member_id).where(Role.role == RoleName.FOCAL_POINT)))
            missing = [m for m in await session.scalars(select(Member).order_by(Member.id))
                       if m.id not in covered]
            rows = io.StringIO()
            writer = csv.writer(rows)
            writer.writerow(["email", "name", "role", "members", "title", "ministry",
                             "timezone", "locale"])
            for m in missing:
                writer.writerow([f"fp.{m.code}@demo.invalid", f"{m.name} focal point (demo)",
                                 "focal_point", m.code, "Focal point", "Ministry", "UTC", "en"])
            report = await import_roster(session, rows.getvalue(), now)
            if not report.ok:
                raise BenchmarkFailed("extra focal points refused: " + "; ".join(report.errors))
            await session.execute(update(Person).where(Person.email.endswith("@demo.invalid"))
                                  .values(is_demo=True))
        async with db.transaction() as session:
            people = list(await session.scalars(
                select(Person.id).join(Role, Role.person_id == Person.id)
                .where(Role.role == RoleName.FOCAL_POINT).distinct().order_by(Person.id)))
            session.add_all(Identity(person_id=pid, platform="telegram",
                                     user_id=str(FIRST_CHAT + n), chat_id=str(FIRST_CHAT + n),
                                     created_at=now) for n, pid in enumerate(people))
        if len(people) != 78:
            raise BenchmarkFailed(f"expected 78 focal points, the store has {len(people)}")
        return [FIRST_CHAT + n for n in range(len(people))]
    finally:
        await db.dispose()
