"""SQLAlchemy's aiosqlite driver, with each statement in one trip to the connection's thread.

aiosqlite runs the sqlite3 connection in a thread of its own, and each call it forwards is a
trip there and back: the event loop queues the call, the thread wakes, runs it and schedules
the result back on the loop, which wakes in turn. SQLAlchemy's adapter makes four of them for
a SELECT (open a cursor, execute, fetch the rows, close) and three for a write or a `BEGIN`.
An update of the benchmark's mix of commands, received, handled and its reply sent (ten sent
at a time), made 55 trips, and they were most of the time of a SQLite transaction (profiled,
2026-12-06).

Here a statement makes one trip: the thread opens a cursor, executes, reads every row and
the cursor's facts (description, rowcount, lastrowid) and closes it. A transaction's `BEGIN`
(or `BEGIN IMMEDIATE`) goes in the trip of its first statement, which follows it at once
anyway (SQLAlchemy begins when the first statement needs the connection), and a commit or
rollback with nothing to end (the pool's rollback after a commit) makes none: 13 trips for
that update. The rows were read at once before too (SQLAlchemy's adapter buffers them unless
a server-side cursor is asked for, and `stream()` still gets that cursor, unchanged). Nothing
else changes: the same aiosqlite connection and thread, the same order of work on it, the
same exceptions.

The versions of SQLAlchemy and aiosqlite are pinned (pyproject.toml); this leans on
`aiosqlite.Connection._execute` (queue one call for the thread), as SQLAlchemy's own adapter
leans on aiosqlite's queue to set the isolation level.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

_Outcome = tuple[Any, list[Any] | None, int, int | None]
_BEGINS = frozenset({"BEGIN", "BEGIN IMMEDIATE"})


def _run(conn: sqlite3.Connection, operation: str, parameters: Any, many: bool,
         begin: str | None) -> _Outcome:
    """In the connection's thread: the transaction's `begin` if it waits, then the whole
    statement, its rows and its cursor's facts."""
    if begin is not None:
        conn.execute(begin)
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose statement, rows and close are one call in the thread."""

    __slots__ = ("_description", "_rowcount", "_lastrowid")
    _awaitable_cursor_close = False  # nothing is left open in the thread to close

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        # No cursor is opened here (that was a trip of its own): `_run` opens one.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int | None:  # type: ignore[override]
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return 1  # sqlite3's

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        pass  # every row is read at once anyway

    def close(self) -> None:
        self._rows.clear()

    async def _async_soft_close(self) -> None:
        return None

    async def _trip(self, operation: Any, parameters: Any, many: bool) -> None:
        adapted: OneTripConnection = self._adapt_connection  # type: ignore[assignment]
        async with adapted._execute_mutex:
            connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
            begin, adapted._begin, adapted._clean = adapted._begin, None, False
            outcome: _Outcome = await connection._execute(  # type: ignore[no-untyped-call]
                _run, connection._conn, operation, parameters, many, begin)
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows or ())

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        if not parameters and operation in _BEGINS:  # goes with the next statement
            adapted: OneTripConnection = self._adapt_connection  # type: ignore[assignment]
            adapted._begin = operation
            self._description, self._rowcount, self._lastrowid = None, -1, None
            self._rows.clear()
            return
        try:
            await_(self._trip(operation, parameters, False))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Sequence[Any]) -> Any:
        try:
            await_(self._trip(operation, seq_of_parameters, True))
        except Exception as error:
            self._adapt_connection._handle_exception(error)


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """The transaction's `BEGIN` goes with its first statement; a commit or a rollback with
    nothing to end (no statement since the last one) makes no trip."""

    __slots__ = ("_begin", "_clean")
    _cursor_cls = OneTripCursor  # type: ignore[assignment]

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self._begin: str | None = None  # asked for, not yet sent
        self._clean = False  # nothing run since the last commit or rollback

    def _nothing_to_end(self) -> bool:
        nothing = self._begin is not None or self._clean
        self._begin, self._clean = None, True
        return nothing

    def commit(self) -> None:
        if not self._nothing_to_end():
            super().commit()

    def rollback(self) -> None:
        if not self._nothing_to_end():
            super().rollback()


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module SQLAlchemy's aiosqlite dialect is given (`create_engine(module=...)`)."""

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        adapted = super().connect(*arg, **kw)
        return OneTripConnection(self, adapted._connection)


def dbapi() -> OneTripDBAPI:
    return OneTripDBAPI(aiosqlite, sqlite3)
