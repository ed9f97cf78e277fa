"""Migration 0006 (newsletter editions) keeps every existing update, its history and its search."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import text

from storage.db import Database
from storage.migrate import alembic_config, current_revision, upgrade


async def test_rebuilding_national_update_on_sqlite_keeps_revisions_files_and_search(
        tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    await upgrade(db, "0003")
    async with db.engine.begin() as conn:
        for sql in (
            "INSERT INTO member (id, code, name, kind, region, aliases, is_demo) "
            "VALUES (1, 'chile', 'Chile', 'state', 'Latin American and Caribbean States', '', 0)",
            "INSERT INTO person (id, name, email, title, ministry, locale, timezone, is_demo, "
            "created_at) VALUES (1, 'Catalina', 'c@x.invalid', '', '', 'en', 'UTC', 0, "
            "'2018-01-01 00:00:00')",
            "INSERT INTO national_update (id, member_id, author_id, category, title, body, links, "
            "visibility, status, section, review_note, version, created_at, submitted_at) VALUES "
            "(1, 1, 1, 'nap_progress', 'Indicators', 'Progress indicators in the second plan', "
            "'[]', 'public', 'approved', 'nap_progress', '', 1, '2018-01-01 00:00:00', "
            "'2018-01-01 00:00:00')",
            "INSERT INTO update_revision (update_id, version, category, title, body, links, "
            "visibility, edited_by, edited_at) VALUES (1, 1, 'nap_progress', 'Indicators', "
            "'Progress indicators', '[]', 'public', 1, '2018-01-01 00:00:00')",
            "INSERT INTO update_attachment (update_id, platform, file_id, name, size, mime_type) "
            "VALUES (1, 'telegram', 'F1', 'plan.pdf', 10, 'application/pdf')",
        ):
            await conn.execute(text(sql))
    await upgrade(db)
    async with db.engine.begin() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM update_revision"))).scalar() == 1
        assert (await conn.execute(text("SELECT count(*) FROM update_attachment"))).scalar() == 1
        hits = await conn.execute(text("SELECT rowid FROM update_fts WHERE update_fts MATCH 'indicators'"))
        assert [r[0] for r in hits] == [1]
        await conn.execute(text("UPDATE national_update SET title = 'Budget lines' WHERE id = 1"))
        hits = await conn.execute(text("SELECT rowid FROM update_fts WHERE update_fts MATCH 'budget'"))
        assert [r[0] for r in hits] == [1]
        row = (await conn.execute(text("SELECT organisation, edition_id FROM national_update"))).one()
        assert tuple(row) == ("", None)
    await db.dispose()


async def test_downgrading_on_sqlite_keeps_the_revisions_too(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'new.db'}")
    await upgrade(db)
    async with db.engine.begin() as conn:
        for sql in (
            "INSERT INTO person (id, name, email, title, ministry, locale, timezone, is_demo, "
            "created_at) VALUES (1, 'Sofia', 's@x.invalid', '', '', 'en', 'UTC', 0, "
            "'2018-01-01 00:00:00')",
            "INSERT INTO member (id, code, name, kind, region, aliases, is_demo) "
            "VALUES (1, 'chile', 'Chile', 'state', 'Latin American and Caribbean States', '', 0)",
            "INSERT INTO national_update (id, member_id, organisation, author_id, category, title, "
            "body, links, visibility, status, section, review_note, version, created_at, "
            "submitted_at) VALUES (1, 1, '', 1, 'policy', 'Kept', 'Body', '[]', 'public', "
            "'approved', '', '', 1, '2018-01-01 00:00:00', '2018-01-01 00:00:00'), "
            "(2, NULL, 'WILPF', 1, 'civil_society', 'Voice', 'Body', '[]', 'public', "
            "'submitted', '', '', 1, '2018-01-01 00:00:00', '2018-01-01 00:00:00')",
            "INSERT INTO update_revision (update_id, version, category, title, body, links, "
            "visibility, edited_by, edited_at) VALUES (1, 1, 'policy', 'Kept', 'Body', '[]', "
            "'public', 1, '2018-01-01 00:00:00')",
        ):
            await conn.execute(text(sql))

    def downgrade(connection: Any) -> None:
        cfg = alembic_config(db.url)
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, "0003")

    async with db.engine.begin() as conn:
        await conn.run_sync(downgrade)
    assert await current_revision(db) == "0003"
    async with db.engine.begin() as conn:
        titles = [r[0] for r in await conn.execute(text("SELECT title FROM national_update"))]
        assert titles == ["Kept"]  # a voice has no member, which 0003 cannot hold
        assert (await conn.execute(text("SELECT count(*) FROM update_revision"))).scalar() == 1
    await db.dispose()
