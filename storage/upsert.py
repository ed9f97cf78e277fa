"""Insert-or-skip on a unique constraint, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase


async def insert_ignore(session: AsyncSession, model: type[DeclarativeBase],
                        rows: Sequence[dict[str, Any]], returning: Sequence[str] = ("id",)
                        ) -> list[tuple[Any, ...]]:
    """Insert the rows that break no unique constraint; return `returning` of those inserted.

    Whoever inserts a row first owns it: a second instance inserting the same key gets
    nothing back, so it does not act on it (one reminder, one digest).

    The rows go as parameters of one statement (SQLAlchemy's "insertmanyvalues": batched
    into multi-row INSERTs by the dialect, RETURNING kept), so the statement is compiled once
    and cached, not compiled again for every number of rows as `.values([...])` would be.
    """
    if not rows:
        return []
    dialect = session.get_bind().dialect.name
    table: Any = model.__table__
    stmt: Any = (postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table))
    stmt = stmt.on_conflict_do_nothing().returning(*(table.c[name] for name in returning))
    return [tuple(r) for r in (await session.execute(stmt, list(rows)))]
