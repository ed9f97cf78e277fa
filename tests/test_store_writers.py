"""On SQLite, this process's writers take the write lock in turn (`storage/db.py`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from storage.db import Database, WriteTurns


async def _store(tmp_path: Path, **kw: int) -> Database:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}", **kw)
    async with db.transaction() as session:
        await session.execute(text("CREATE TABLE w (n INTEGER)"))
    return db


async def test_a_burst_of_writers_is_served_in_the_order_it_came(tmp_path: Path) -> None:
    """Forty writers at once, each holding the lock across a few awaits. Left to SQLite's
    busy handler, the waiters polled the lock and took it in no order; some lost for long."""
    db = await _store(tmp_path)

    async def write(n: int) -> None:
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO w VALUES (:n)"), {"n": n})
            for _ in range(3):
                await asyncio.sleep(0)  # other writers arrive meanwhile
            await session.execute(text("SELECT count(*) FROM w"))

    try:
        await asyncio.gather(*(write(n) for n in range(40)))
        async with db.reading() as session:
            order = list(await session.scalars(text("SELECT n FROM w ORDER BY rowid")))
    finally:
        await db.dispose()
    assert order == list(range(40))


async def test_a_writer_waiting_past_the_busy_timeout_fails_as_sqlite_would(
        tmp_path: Path) -> None:
    db = await _store(tmp_path, busy_timeout_ms=200)
    held = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO w VALUES (1)"))
            held.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    try:
        await held.wait()
        with pytest.raises(OperationalError, match="database is locked"):
            async with db.transaction() as session:
                await session.execute(text("INSERT INTO w VALUES (2)"))
        async with db.reading() as session:  # a reader never waits for the writers
            assert await session.scalar(text("SELECT count(*) FROM w")) == 0
        release.set()
        await holder
        async with db.transaction() as session:  # the lock is free again
            await session.execute(text("INSERT INTO w VALUES (3)"))
        async with db.reading() as session:
            assert list(await session.scalars(text("SELECT n FROM w ORDER BY n"))) == [1, 3]
    finally:
        release.set()
        await asyncio.gather(holder, return_exceptions=True)
        await db.dispose()


async def test_a_failed_transaction_hands_the_lock_on(tmp_path: Path) -> None:
    db = await _store(tmp_path)
    try:
        with pytest.raises(ZeroDivisionError):
            async with db.transaction() as session:
                await session.execute(text("INSERT INTO w VALUES (1)"))
                raise ZeroDivisionError
        async with db.transaction() as session:  # would wait out the busy timeout if kept
            await session.execute(text("INSERT INTO w VALUES (2)"))
        async with db.reading() as session:
            assert list(await session.scalars(text("SELECT n FROM w"))) == [2]
    finally:
        await db.dispose()


async def test_a_writer_cancelled_as_the_lock_is_handed_to_it_stays_cancelled(
        tmp_path: Path) -> None:
    """The lock is handed to a waiting writer, and the writer is cancelled before it runs (a
    process stopping). It must not go on: under `asyncio.wait_for` it did, and wrote."""
    db = await _store(tmp_path)

    async def write(n: int) -> None:
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO w VALUES (:n)"), {"n": n})

    try:
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO w VALUES (1)"))
            waiter = asyncio.create_task(write(2))
            for _ in range(5):
                await asyncio.sleep(0)  # the waiter is queued for the lock
        waiter.cancel()  # the lock was handed to it on the way out above; it has not run since
        [outcome] = await asyncio.gather(waiter, return_exceptions=True)
        assert isinstance(outcome, asyncio.CancelledError)
        await asyncio.wait_for(write(3), 5)  # and the lock is free
        async with db.reading() as session:
            assert list(await session.scalars(text("SELECT n FROM w ORDER BY n"))) == [1, 3]
    finally:
        await db.dispose()


async def test_a_receipt_goes_before_the_writers_queued_for_other_work(tmp_path: Path) -> None:
    """An urgent writer (an inbox receipt: a platform waits for its answer) takes the lock
    next, ahead of the writers already queued; those keep their order among themselves."""
    db = await _store(tmp_path)

    async def write(n: int, urgent: bool = False) -> None:
        async with db.transaction(urgent=urgent) as session:
            await session.execute(text("INSERT INTO w VALUES (:n)"), {"n": n})

    try:
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO w VALUES (0)"))
            others = [asyncio.create_task(write(n)) for n in (1, 2, 3)]
            for _ in range(5):
                await asyncio.sleep(0)  # queued behind the holder
            receipts = [asyncio.create_task(write(n, urgent=True)) for n in (10, 11)]
            for _ in range(5):
                await asyncio.sleep(0)
        await asyncio.gather(*others, *receipts)
        async with db.reading() as session:
            order = list(await session.scalars(text("SELECT n FROM w ORDER BY rowid")))
    finally:
        await db.dispose()
    assert order == [0, 10, 11, 1, 2, 3]


@pytest.mark.parametrize("urgent", [False, True])
async def test_a_turn_handed_to_a_cancelled_waiter_passes_on(urgent: bool) -> None:
    turns = WriteTurns()
    await turns.acquire()
    first = asyncio.create_task(turns.acquire(urgent=urgent))
    second = asyncio.create_task(turns.acquire())
    gone = asyncio.create_task(turns.acquire())
    await asyncio.sleep(0)  # all three queued
    gone.cancel()  # cancelled while waiting: simply gone
    await asyncio.sleep(0)
    turns.release()  # handed to `first`, which is cancelled before it runs
    first.cancel()
    [outcome] = await asyncio.gather(first, return_exceptions=True)
    assert isinstance(outcome, asyncio.CancelledError)
    await asyncio.wait_for(second, 5)  # the turn went on to `second`
    assert turns.locked() and gone.cancelled()
    turns.release()
    assert not turns.locked()
