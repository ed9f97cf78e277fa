"""SQLite statements make one trip to aiosqlite's thread (`storage/sqlite_driver.py`), and
behave as with SQLAlchemy's own aiosqlite adapter: rows, counts, ids, errors, streams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import bindparam, insert, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from storage.db import Database
from storage.models import Person


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every call aiosqlite sends to its connection's thread, by name."""
    sent: list[str] = []
    forward = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(getattr(fn, "__name__", repr(fn)))
        return await forward(self, fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    yield sent


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}")
    async with db.transaction() as session:
        await session.execute(text(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL)"))
    yield db
    await db.dispose()


async def test_a_select_an_update_and_a_transaction_each_take_one_trip(
        store: Database, trips: list[str]) -> None:
    async with store.transaction() as session:
        await session.execute(text("INSERT INTO t (name) VALUES ('Chile'), ('Kenya')"))
        trips.clear()
        rows = (await session.execute(text("SELECT id, name FROM t ORDER BY id"))).all()
        assert trips == ["_run"]  # was 4: open a cursor, execute, fetch, close
        trips.clear()
        done = await session.execute(text("UPDATE t SET name = name || '!'"))
        assert trips == ["_run"]  # was 3
    assert [tuple(r) for r in rows] == [(1, "Chile"), (2, "Kenya")]
    assert done.rowcount == 2  # type: ignore[attr-defined]
    trips.clear()
    async with store.reading() as session:
        assert await session.scalar(text("SELECT count(*) FROM t")) == 2
    # BEGIN with the SELECT (were 3 trips and 4), the session's ROLLBACK; the pool's
    # ROLLBACK after it has nothing to end (was one more trip)
    assert trips == ["_run", "rollback"]
    trips.clear()
    async with store.transaction() as session:
        await session.execute(text("UPDATE t SET name = 'Chile' WHERE id = 1"))
    assert trips == ["_run", "commit"]  # BEGIN IMMEDIATE with the UPDATE (were 6), COMMIT


async def test_ids_counts_and_many_rows_come_back_as_before(store: Database) -> None:
    async with store.transaction() as session:
        one = await session.execute(text("INSERT INTO t (name) VALUES ('Chile')"))
        assert one.lastrowid == 1  # type: ignore[attr-defined]
        many = await session.execute(text("INSERT INTO t (name) VALUES (:n)"),
                                     [{"n": f"member {i}"} for i in range(500)])
        assert many.rowcount == 500  # type: ignore[attr-defined]
        returned = (await session.execute(
            text("INSERT INTO t (name) VALUES ('Kenya') RETURNING id, name"))).one()
        assert tuple(returned) == (502, "Kenya")
        nothing = await session.execute(text("UPDATE t SET name = 'x' WHERE id < 0"))
        assert nothing.rowcount == 0  # type: ignore[attr-defined]
    async with store.reading() as session:
        streamed = [row.name async for row in await session.stream(
            text("SELECT name FROM t ORDER BY id"))]  # a server-side cursor, unchanged
        first = (await session.execute(
            text("SELECT name FROM t WHERE id = :id"), {"id": 2})).scalar_one()
    assert len(streamed) == 502 and streamed[0] == "Chile" and streamed[-1] == "Kenya"
    assert first == "member 0"


async def test_orm_statements_with_parameters_bound_later_read_and_write(tmp_path: Path) -> None:
    """The statements built once on the hot path (`bindparam`) through this driver."""
    from datetime import UTC, datetime

    from storage.migrate import upgrade

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'orm.db'}")
    try:
        await upgrade(db)
        now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
        async with db.transaction() as session:
            await session.execute(insert(Person), [
                {"name": "Ana Rojas", "email": "ana@example.org", "created_at": now},
                {"name": "Wanjiru Kamau", "email": "wanjiru@example.org", "created_at": now}])
        by_email = select(Person).where(Person.email == bindparam("email"))
        async with db.reading() as session:
            ana = (await session.scalars(by_email, {"email": "ana@example.org"})).one()
            nobody = (await session.scalars(by_email, {"email": "x@example.org"})).first()
            assert (ana.name, ana.created_at) == ("Ana Rojas", now) and nobody is None
    finally:
        await db.dispose()


async def test_a_begin_that_cannot_take_the_lock_fails_its_statement_and_nothing_stays_open(
        tmp_path: Path) -> None:
    """`BEGIN IMMEDIATE` goes with the first statement: when another process holds the write
    lock, that statement fails as the BEGIN did before ("database is locked"), and the
    connection is left with no transaction open."""
    import sqlite3

    path = tmp_path / "locked.db"
    db = Database(f"sqlite+aiosqlite:///{path}", busy_timeout_ms=100)
    try:
        async with db.transaction() as session:
            await session.execute(text("CREATE TABLE t (n INTEGER)"))
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(OperationalError, match="database is locked"):
                async with db.transaction() as session:
                    await session.execute(text("INSERT INTO t VALUES (1)"))
        finally:
            other.execute("ROLLBACK")
            other.close()
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO t VALUES (2)"))
        async with db.reading() as session:
            assert list(await session.scalars(text("SELECT n FROM t"))) == [2]
    finally:
        await db.dispose()


async def test_errors_are_the_drivers_own_and_the_transaction_is_undone(
        store: Database) -> None:
    async with store.transaction() as session:
        await session.execute(text("INSERT INTO t (name) VALUES ('Chile')"))
    with pytest.raises(IntegrityError, match="UNIQUE"):
        async with store.transaction() as session:
            await session.execute(text("INSERT INTO t (name) VALUES ('Kenya')"))
            await session.execute(text("INSERT INTO t (name) VALUES ('Chile')"))
    with pytest.raises(OperationalError, match="no such table"):
        async with store.reading() as session:
            await session.execute(text("SELECT * FROM nowhere"))
    async with store.reading() as session:  # the connection is still good, Kenya undone
        assert list(await session.scalars(text("SELECT name FROM t"))) == ["Chile"]
