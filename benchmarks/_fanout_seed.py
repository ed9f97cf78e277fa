"""Stores for the benchmarks: the demo store, grown to many members with a focal point each.

The fan-out, the digest and the newsletter compile share this. Members are added the way
`tests/test_digest.py::add_members` adds them (bulk inserts: a member, its focal point and
its role, and an update waiting for review every `submitted_every` members), so a store of
10,000 members takes seconds, not minutes.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, insert, select, text

from storage.db import Database
from storage.demo import load_demo
from storage.migrate import upgrade
from storage.models import Base, Member, NationalUpdate, Person, Role, RoleName

DEMO_MEMBERS = 78  # the members `load_demo` loads (December 2017)


async def demo_store(url: str, now: datetime) -> Database:
    """The store at `url`, migrated, emptied (PostgreSQL) and loaded with the demo."""
    db = Database(url)
    await upgrade(db)
    if not db.is_sqlite:  # a PostgreSQL given to the benchmarks: emptied first
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        async with db.engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    async with db.transaction() as session:
        _, report = await load_demo(session, now)
    if not report.ok:
        await db.dispose()
        raise RuntimeError(f"the demo did not load: {report.errors}")
    return db


async def add_members(db: Database, n: int, now: datetime, *,
                      submitted_every: int = 7) -> list[int]:
    """`n` more members, each with a focal point (`fp{i}@bench.invalid`, time zone UTC) and,
    every `submitted_every` members, an update waiting for review. Returns the focal points'
    person ids, in order."""
    if n <= 0:
        return []
    async with db.transaction() as session:
        first = int(await session.scalar(select(func.max(Member.id))) or 0) + 1
        pfirst = int(await session.scalar(select(func.max(Person.id))) or 0) + 1
        await session.execute(insert(Member), [
            {"id": first + i, "code": f"bench-{first + i}", "name": f"Member {first + i:05d}",
             "kind": "state", "region": f"Region {i % 5}", "aliases": "", "is_demo": True}
            for i in range(n)])
        await session.execute(insert(Person), [
            {"id": pfirst + i, "name": f"FP {pfirst + i}",
             "email": f"fp{pfirst + i}@bench.invalid", "title": "", "ministry": "",
             "locale": "en", "timezone": "UTC", "is_demo": True, "created_at": now}
            for i in range(n)])
        await session.execute(insert(Role), [
            {"person_id": pfirst + i, "member_id": first + i, "role": RoleName.FOCAL_POINT}
            for i in range(n)])
        if submitted_every:
            await session.execute(insert(NationalUpdate), [
                {"member_id": first + i, "author_id": pfirst + i, "category": "policy",
                 "title": f"Update {first + i}", "body": "b", "links": [],
                 "visibility": "public", "status": "submitted", "section": "",
                 "review_note": "", "version": 1, "created_at": now,
                 "submitted_at": now - timedelta(days=i % 9)}
                for i in range(0, n, submitted_every)])
        if not db.is_sqlite:  # ids given explicitly: move the sequences past them
            for table in ("member", "person"):
                await session.execute(text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"))
    return [pfirst + i for i in range(n)]
