"""SQLAlchemy's aiosqlite driver, with each statement in one trip to the connection's thread.

aiosqlite runs the sqlite3 connection in a thread of its own, and each call it forwards is a
trip there and back: the event loop queues the call, the thread wakes, runs it and schedules
the result back on the loop, which wakes in turn. SQLAlchemy's adapter makes four of them for
a SELECT (open a cursor, execute, fetch the rows, close) and three for a write, `BEGIN
IMMEDIATE` included. On a bot handling a burst that was most of the time of a SQLite
transaction (about 110 trips to receive, handle and send one `/help`: profiled, 2026-12-06).

Here a statement makes one trip: the thread opens a cursor, executes, reads every row and
the cursor's facts (description, rowcount, lastrowid) and closes it. The rows were read at
once before too (SQLAlchemy's adapter buffers them unless a server-side cursor is asked
for, and `stream()` still gets that cursor, unchanged). Nothing else changes: the same
aiosqlite connection and thread, the same order of work on it, the same exceptions.

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


def _run(conn: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> _Outcome:
    """In the connection's thread: the whole statement, its rows and its cursor's facts."""
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
        async with self._adapt_connection._execute_mutex:
            connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
            outcome: _Outcome = await connection._execute(  # type: ignore[no-untyped-call]
                _run, connection._conn, operation, parameters, many)
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows or ())

    def execute(self, operation: Any, parameters: Any = None) -> Any:
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
    __slots__ = ()
    _cursor_cls = OneTripCursor  # type: ignore[assignment]


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module SQLAlchemy's aiosqlite dialect is given (`create_engine(module=...)`)."""

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        adapted = super().connect(*arg, **kw)
        return OneTripConnection(self, adapted._connection)


def dbapi() -> OneTripDBAPI:
    return OneTripDBAPI(aiosqlite, sqlite3)
