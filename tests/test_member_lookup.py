"""A member is found from what someone typed with one indexed statement, whatever the case,
dashes and spacing, by its code, name or any alias."""

from __future__ import annotations

from sqlalchemy import event, select

from handlers.network import find_member
from storage.db import Database
from storage.migrate import upgrade
from storage.models import Member, MemberName
from storage.roster import add_member


async def test_a_member_is_found_by_code_name_or_alias_with_one_statement(
        demo_db: Database) -> None:
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(demo_db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        async with demo_db.transaction() as session:
            await session.execute(select(1))  # the transaction begun (SQLite's BEGIN counted)
            for typed in ("BiH", "bosnia  herzegovina", "Bosnia-and-Herzegovina",
                          "  bosnia AND herzegovina "):
                statements.clear()
                found = await find_member(session, typed)
                assert found is not None and found.code == "bosnia-and-herzegovina", typed
                assert len(statements) == 1 and "member_name" in statements[0]
            assert (await find_member(session, "the netherlands") or Member()).code == "netherlands"
            assert await find_member(session, "Narnia") is None
            assert await find_member(session, " - ") is None
    finally:
        event.remove(demo_db.engine.sync_engine, "before_cursor_execute", seen)


async def test_a_member_added_later_is_found_by_its_name(demo_db: Database) -> None:
    async with demo_db.transaction() as session:
        await add_member(session, "Côte d'Ivoire", "african")
    async with demo_db.transaction() as session:
        found = await find_member(session, "CÔTE D'IVOIRE")
        assert found is not None and found.name == "Côte d'Ivoire"
        assert (await find_member(session, found.code)) is found


async def test_the_migration_indexes_the_members_a_store_already_has(tmp_path: object) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/old.db")
    try:
        await upgrade(db, "0010")
        async with db.engine.begin() as conn:
            await conn.exec_driver_sql(
                "INSERT INTO member (id, code, name, kind, region, aliases, is_demo) VALUES "
                "(7, 'czechia', 'Czechia', 'state', 'Eastern European States', "
                "'Czech Republic', 0)")
        await upgrade(db)
        async with db.transaction() as session:
            assert set(await session.scalars(select(MemberName.name))) == {
                "czechia", "czech republic"}
            assert (await find_member(session, "Czech Republic") or Member()).id == 7
    finally:
        await db.dispose()
