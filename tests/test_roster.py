"""Roster import and export: all or nothing, every bad row reported with its line, idempotent."""

from __future__ import annotations

from sqlalchemy import func, select

from handlers.clock import FrozenClock
from storage.db import Database
from storage.models import Chair, Member, Person, Role
from storage.roster import export_roster, import_roster, load_members

GOOD = """\
email,name,role,members,title,ministry,timezone,locale
fp.brazil@itamaraty.example.org,Beatriz Souza,focal_point,brazil,Head of Division,Ministry of Foreign Affairs,America/Sao_Paulo,en
ops@ecowas.example.org,Kwame Mensah,focal_point;alternate,ecowas;nigeria,Adviser,ECOWAS Commission,Africa/Lagos,en
pss@unwomen.example.org,Maria Keller,secretariat,,Coordinator,UN-Women,America/New_York,en
"""


async def _count(db: Database, model: type) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_members_load_all_78_once(db: Database) -> None:
    async with db.transaction() as session:
        assert await load_members(session) == 78
        assert await load_members(session) == 0
        regions = dict((await session.execute(
            select(Member.region, func.count()).group_by(Member.region))).all())
    assert regions["Regional organizations"] == 6
    assert sum(regions.values()) == 78


async def test_a_good_roster_imports_and_a_second_import_changes_nothing(
    demo_db: Database, clock: FrozenClock
) -> None:
    async with demo_db.transaction() as session:
        report = await import_roster(session, GOOD, clock.now())
    assert report.ok and (report.people_added, report.roles_added) == (3, 6)
    async with demo_db.transaction() as session:
        again = await import_roster(session, GOOD, clock.now())
    assert again.ok and (again.people_added, again.people_updated, again.roles_added) == (0, 0, 0)
    async with demo_db.transaction() as session:
        kwame = await session.scalar(select(Person).where(Person.email == "ops@ecowas.example.org"))
        assert kwame is not None
        held = sorted((r.role, r.member.code if r.member else "") for r in kwame.roles)
    assert held == [("alternate", "ecowas"), ("alternate", "nigeria"),
                    ("focal_point", "ecowas"), ("focal_point", "nigeria")]


async def test_a_bad_file_imports_nothing_and_reports_every_row(
    demo_db: Database, clock: FrozenClock
) -> None:
    bad = GOOD + (
        "someone@example.org,Someone,focal_point,atlantis,,,,\n"
        "FP.BRAZIL@itamaraty.example.org,Twin,focal_point,brazil,,,,\n"
        "not-an-email,Nobody,chair,,,,Mars/Olympus,xx\n"
        ",,alternate,,,,,\n"
    )
    people_before = await _count(demo_db, Person)
    async with demo_db.transaction() as session:
        report = await import_roster(session, bad, clock.now())
    assert not report.ok
    assert report.errors == [
        "line 5: unknown member 'atlantis'",
        "line 6: duplicate e-mail fp.brazil@itamaraty.example.org (already on line 2)",
        "line 7: invalid e-mail 'not-an-email'",
        "line 7: unknown role 'chair' (one of: focal_point, alternate, secretariat, "
        "civil_society, admin)",
        "line 7: unknown time zone 'Mars/Olympus'",
        "line 7: unknown locale 'xx'",
        "line 8: e-mail is empty",
        "line 8: name is empty",
        "line 8: an alternate needs a member",
    ]
    assert await _count(demo_db, Person) == people_before


async def test_missing_columns_are_reported_on_line_one(demo_db: Database, clock: FrozenClock) -> None:
    async with demo_db.transaction() as session:
        report = await import_roster(session, "email,members\na@b.org,chile\n", clock.now())
    assert report.errors == ["line 1: missing columns: name, role "
                             "(expected: email, name, role, members, title, ministry, timezone, locale)"]


async def test_export_round_trips(demo_db: Database, clock: FrozenClock) -> None:
    async with demo_db.transaction() as session:
        await import_roster(session, GOOD, clock.now())
        exported = await export_roster(session)
    assert exported.splitlines()[0] == "email,name,role,members,title,ministry,timezone,locale"
    assert "ops@ecowas.example.org,Kwame Mensah,alternate;focal_point,ecowas;nigeria" in exported
    roles_before = await _count(demo_db, Role)
    async with demo_db.transaction() as session:
        report = await import_roster(session, exported, clock.now())
    assert report.ok and report.people_added == 0 and report.roles_added == 0
    assert await _count(demo_db, Role) == roles_before


async def test_demo_data_is_marked_and_has_the_guideline_chairs(demo_db: Database) -> None:
    async with demo_db.transaction() as session:
        people = list(await session.scalars(select(Person)))
        chairs = {c.year: c.member.name for c in await session.scalars(select(Chair))}
    assert people and all(p.is_demo and "(demo)" in p.name for p in people)
    assert all(p.email.endswith("@demo.invalid") for p in people)
    assert chairs == {2017: "Spain", 2018: "Germany", 2019: "Namibia"}
