"""The migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from storage.db import Database
from storage.migrate import current_revision, head_revision, upgrade
from storage.models import Base


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    return not (name or "").startswith(("update_fts", "update_search"))


async def test_the_schema_matches_the_models(db: Database) -> None:
    def diff(conn: Any) -> list[Any]:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_name": include_name})
        return compare_metadata(ctx, Base.metadata)

    async with db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_upgrade_is_at_head_and_idempotent(db: Database) -> None:
    assert await current_revision(db) == head_revision()
    await upgrade(db)
    assert await current_revision(db) == head_revision()
