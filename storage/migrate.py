"""Alembic, driven from code: `fpbot db upgrade`, `fpbot run` and the tests all come through here."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from storage.db import READING, Database

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


async def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema up to `revision` inside one transaction."""
    cfg = alembic_config(db.url)

    def run(connection: Any) -> None:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)

    async with db.engine.begin() as conn:
        await conn.run_sync(run)


async def current_revision(db: Database) -> str | None:
    async with db.engine.connect() as conn:
        conn = await conn.execution_options(**{READING: True})
        return await conn.run_sync(
            lambda c: MigrationContext.configure(c).get_current_revision()
        )


@cache
def head_revision() -> str | None:
    """The newest revision this code knows. Read once: the health check asks at every
    heartbeat, and Alembic reads (executes) every migration file each time it is asked."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
