"""The reminder sweep asks who still owes a deadline once for its whole audience (`owing`),
and gets the same answer as asking for each member and person (`owes`)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from handlers.clock import FrozenClock
from handlers.reminders import due_reminders, load_roster
from storage.db import Database
from storage.deadlines import (
    OBLIGATIONS,
    audience,
    mark_done,
    owes,
    owing,
    register_obligation,
    sync_deadline,
)
from storage.demo import load_demo
from storage.models import (
    ActionPoint,
    Deadline,
    DeadlineKind,
    Member,
    Person,
    Registration,
    RegistrationStatus,
    Role,
    RoleName,
)
from tests.conftest import FP_CHILE, FP_GERMANY
from tests.statements import counting
from tests.test_digest import add_members

ALT_CHILE = "alt.chile@demo.invalid"
WILPF = "wilpf@demo.invalid"


async def _person(session: AsyncSession, email: str) -> Person:
    found = await session.scalar(select(Person).where(Person.email == email))
    assert found is not None, email
    return found


async def _member(session: AsyncSession, code: str) -> int:
    found = await session.scalar(select(Member.id).where(Member.code == code))
    assert found is not None, code
    return found


async def _register(session: AsyncSession, meeting_id: int, *, email: str, status: str,
                    person: Person | None = None, member_id: int | None = None,
                    by: Person | None = None, at: datetime) -> None:
    session.add(Registration(
        meeting_id=meeting_id, person_id=person.id if person else None, member_id=member_id,
        registered_by=by.id if by else None, name=email, email=email, role="focal_point",
        status=status, registered_at=at))


async def test_owing_answers_as_owes_does_for_everyone_for_every_kind(
        demo_db: Database, clock: FrozenClock) -> None:
    now = clock.now()
    async with demo_db.transaction() as session:
        await load_demo(session, now, newsletter=True)  # edition 1 and its submission deadline
        germany = await _person(session, FP_GERMANY)
        alt_chile, wilpf = await _person(session, ALT_CHILE), await _person(session, WILPF)
        spain, chile_id = await _member(session, "spain"), await _member(session, "chile")
        # A custom deadline done by a member (Chile, by its alternate) and by one person.
        personal = await sync_deadline(
            session, DeadlineKind.CUSTOM, None, now + timedelta(days=3), "Photos",
            audience(roles=[RoleName.FOCAL_POINT, RoleName.CIVIL_SOCIETY]), now=now)
        await mark_done(session, personal, member_id=chile_id,
                        person_id=None, by=alt_chile.id, now=now)
        await mark_done(session, personal, member_id=None, person_id=wilpf.id, by=wilpf.id,
                        now=now)
        # Meeting 1: Chile's alternate registered (so Chile's delegation holds a place), Spain
        # registered as a member, Germany's focal point waitlisted, WILPF cancelled; meeting 2:
        # a confirmed place Germany's focal point took for someone without an account.
        await _register(session, 1, email=ALT_CHILE, status=RegistrationStatus.CONFIRMED,
                        person=alt_chile, at=now)
        await _register(session, 1, email="guest@spain.invalid",
                        status=RegistrationStatus.CONFIRMED, member_id=spain, at=now)
        await _register(session, 1, email=FP_GERMANY, status=RegistrationStatus.WAITLISTED,
                        person=germany, at=now)
        await _register(session, 1, email=WILPF, status=RegistrationStatus.CANCELLED,
                        person=wilpf, at=now)
        await _register(session, 2, email="aide@germany.invalid",
                        status=RegistrationStatus.CONFIRMED, by=germany, at=now)
        # One action point done: its deadline is owed by nobody.
        point = await session.scalar(select(ActionPoint).order_by(ActionPoint.id).limit(1))
        assert point is not None
        point.status = "done"

    async with demo_db.reading() as session:
        members = list(await session.scalars(select(Member.id)))
        persons = list(await session.scalars(select(Person.id)))
        deadlines = list(await session.scalars(select(Deadline).order_by(Deadline.id)))
        assert {d.kind for d in deadlines} == set(OBLIGATIONS)  # every kind is compared
        for deadline in deadlines:
            found = await owing(session, deadline, members, persons)
            assert found is not None, deadline.kind
            one_by_one = ({m for m in members if await owes(session, deadline, m, None)},
                          {p for p in persons if await owes(session, deadline, None, p)})
            assert found == one_by_one, (deadline.kind, deadline.title)
            if deadline.id == personal.id:  # the comparison is not between two empty sets
                assert chile_id not in found[0] and spain in found[0]
                assert wilpf.id not in found[1] and germany.id in found[1]
            if deadline.kind == DeadlineKind.MEETING_REGISTRATION and deadline.ref_id == 1:
                assert chile_id not in found[0] and spain not in found[0]
                assert germany.id not in found[1] and wilpf.id in found[1]
            if deadline.kind == DeadlineKind.MEETING_REMINDER and deadline.ref_id == 2:
                assert found == (set(), {germany.id})


async def test_a_sweep_asks_the_same_number_of_statements_for_78_and_578_members(
        demo_db: Database, clock: FrozenClock) -> None:
    due = clock.now() + timedelta(days=2, hours=5)  # 14:00 UTC: working time for the demo
    async with demo_db.transaction() as session:
        await session.execute(update(Deadline).values(cancelled_at=clock.now()))  # the demo's
        await sync_deadline(session, DeadlineKind.CUSTOM, None, due, "Spotlight photos",
                            audience(roles=[RoleName.FOCAL_POINT]), now=clock.now())
    at = due - timedelta(days=2)  # the 2-day reminder of every focal point and alternate
    counts, reminded = [], []
    for extra in (0, 500):
        if extra:
            await add_members(demo_db, extra, clock.now())
        async with demo_db.reading() as session:
            members = await session.scalar(  # each member's focal points and alternates
                select(func.count(Role.person_id.distinct())).where(
                    Role.role.in_([RoleName.FOCAL_POINT, RoleName.ALTERNATE])))
            roster = await load_roster(session)  # people in chunks of 500 (selectinload)
            with counting(demo_db) as statements:
                found = await due_reminders(session, at=at, roster=roster)
            counts.append(len(statements))
            reminded.append(len([c for c in found if c.deadline.title == "Spotlight photos"
                                 and c.status == "due"]))
        assert reminded[-1] == members
    assert reminded[1] - reminded[0] == 500
    assert counts[0] == counts[1] == 3, counts  # deadlines, reminders recorded, those done


async def test_a_deadline_of_a_kind_without_owing_is_still_asked_one_by_one(
        demo_db: Database, clock: FrozenClock) -> None:
    custom = OBLIGATIONS[DeadlineKind.CUSTOM]
    register_obligation(DeadlineKind.CUSTOM, custom.owes, custom.done_members)  # no `owing`
    try:
        due = clock.now() + timedelta(days=2, hours=5)
        async with demo_db.transaction() as session:
            d = await sync_deadline(session, DeadlineKind.CUSTOM, None, due, "One by one",
                                    audience(roles=[RoleName.FOCAL_POINT]), now=clock.now())
            germany = await _person(session, FP_GERMANY)
            await mark_done(session, d, member_id=await _member(session, "germany"), person_id=None,
                            by=germany.id, now=clock.now())
        async with demo_db.reading() as session:
            assert await owing(session, d, [1], [1]) is None
            found = [c for c in await due_reminders(session, at=due - timedelta(days=2))
                     if c.deadline.id == d.id]
            by_email = {c.person.email: (c.status, c.reason) for c in found}
        assert by_email[FP_GERMANY] == ("skipped", "done")
        assert by_email[FP_CHILE][0] == "due"
    finally:
        register_obligation(DeadlineKind.CUSTOM, custom.owes, custom.done_members, custom.owing)

