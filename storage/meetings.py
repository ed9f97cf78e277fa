"""Meetings and registrations in the store: seats, the waitlist and delegations, held atomically.

Capacity is a seat counter on the meeting row (`confirmed_count`), taken with one conditional
UPDATE (`... SET confirmed_count = confirmed_count + 1 WHERE confirmed_count < capacity`): of
two registrations racing for the last seat exactly one gets it, on PostgreSQL (the second
UPDATE waits for the first one's row lock, then sees the counter it left) as on SQLite (every
transaction is `BEGIN IMMEDIATE`, see storage/db.py). Whatever reads before it writes (the
delegation limit, "already registered") first locks the meeting row with `lock_meeting`
(`SELECT ... FOR UPDATE` on PostgreSQL), so registrations for one meeting go one at a time.
Nothing here checks and then inserts without that lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import (
    ACTIVE_REGISTRATION,
    Chair,
    Meeting,
    MeetingKind,
    MeetingStatus,
    Member,
    Registration,
    RegistrationStatus,
    RoleName,
)

UID_DOMAIN = "focalpoints.bot"
ALL_ROLES = [RoleName.FOCAL_POINT, RoleName.ALTERNATE, RoleName.CIVIL_SOCIETY]


def new_uid() -> str:
    """A calendar UID that stays with the meeting through every change."""
    return f"meeting-{uuid.uuid4()}@{UID_DOMAIN}"


async def get_meeting(session: AsyncSession, meeting_id: int) -> Meeting | None:
    return await session.get(Meeting, meeting_id)


async def lock_meeting(session: AsyncSession, meeting_id: int) -> Meeting | None:
    """The meeting, its row locked until the transaction ends (registrations queue behind it)."""
    return await session.scalar(
        select(Meeting).where(Meeting.id == meeting_id)
        .with_for_update(of=Meeting).execution_options(populate_existing=True)
    )


async def take_seat(session: AsyncSession, meeting: Meeting) -> bool:
    """Take one seat if one is left; False when the meeting is full. Atomic."""
    result = await session.execute(
        update(Meeting)
        .where(Meeting.id == meeting.id,
               (Meeting.capacity.is_(None)) | (Meeting.confirmed_count < Meeting.capacity))
        .values(confirmed_count=Meeting.confirmed_count + 1)
        .execution_options(synchronize_session=False)
    )
    await session.refresh(meeting, ["confirmed_count"])
    return bool(getattr(result, "rowcount", 0))


async def free_seat(session: AsyncSession, meeting: Meeting) -> None:
    await session.execute(
        update(Meeting).where(Meeting.id == meeting.id, Meeting.confirmed_count > 0)
        .values(confirmed_count=Meeting.confirmed_count - 1)
        .execution_options(synchronize_session=False)
    )
    await session.refresh(meeting, ["confirmed_count"])


async def registration(session: AsyncSession, meeting_id: int,
                       email: str) -> Registration | None:
    """The registration of `email` for a meeting, in any status."""
    return await session.scalar(
        select(Registration).where(Registration.meeting_id == meeting_id,
                                   Registration.email == email.lower())
        .execution_options(populate_existing=True)
    )


async def delegation_size(session: AsyncSession, meeting_id: int, member_id: int) -> int:
    """How many of a member's delegation are registered, waitlisted or waiting for approval."""
    return await session.scalar(
        select(func.count()).select_from(Registration)
        .where(Registration.meeting_id == meeting_id, Registration.member_id == member_id,
               Registration.status.in_(ACTIVE_REGISTRATION))
    ) or 0


async def promote_waitlisted(session: AsyncSession, meeting: Meeting,
                             now: datetime) -> list[Registration]:
    """Give the free seats to the waitlist, first come first served; the promoted, in order."""
    promoted: list[Registration] = []
    while True:
        first = await session.scalar(
            select(Registration)
            .where(Registration.meeting_id == meeting.id,
                   Registration.status == RegistrationStatus.WAITLISTED)
            .order_by(Registration.registered_at, Registration.id).limit(1)
        )
        if first is None or not await take_seat(session, meeting):
            return promoted
        first.status = RegistrationStatus.CONFIRMED
        first.decided_at = now
        await session.flush()
        promoted.append(first)


async def upcoming(session: AsyncSession, now: datetime) -> list[Meeting]:
    """Meetings not over yet and not cancelled, soonest first."""
    return list(await session.scalars(
        select(Meeting).where(Meeting.ends_at > now, Meeting.status == MeetingStatus.SCHEDULED)
        .order_by(Meeting.starts_at, Meeting.id)
    ))


async def registrations_for(session: AsyncSession, meeting_ids: Sequence[int],
                            emails: Sequence[str]) -> dict[int, Registration]:
    """The registrations of `emails` for these meetings, by meeting id (the first e-mail wins)."""
    rows = await session.scalars(
        select(Registration).where(Registration.meeting_id.in_(list(meeting_ids)),
                                   Registration.email.in_([e.lower() for e in emails]))
    )
    found: dict[int, Registration] = {}
    for row in rows:
        found.setdefault(row.meeting_id, row)
    return found


async def registered_by_or_for(session: AsyncSession, person_id: int, email: str,
                               member_ids: Sequence[int] = ()) -> list[tuple[Registration, Meeting]]:
    """A person's own registrations, those they made, and (for a member's focal points and
    alternates, `member_ids`) their delegation's: newest meeting first."""
    rows = await session.execute(
        select(Registration, Meeting).join(Meeting, Meeting.id == Registration.meeting_id)
        .where((Registration.person_id == person_id) | (Registration.registered_by == person_id)
               | (Registration.email == email.lower())
               | Registration.member_id.in_(list(member_ids)))
        .order_by(Meeting.starts_at.desc(), Registration.id)
    )
    return [(r, m) for r, m in rows]


async def participants(session: AsyncSession, meeting_id: int,
                       statuses: Sequence[str] | None = None) -> list[Registration]:
    """A meeting's registrations in the order they came, optionally of some statuses."""
    query = select(Registration).where(Registration.meeting_id == meeting_id)
    if statuses is not None:
        query = query.where(Registration.status.in_(list(statuses)))
    return list(await session.scalars(query.order_by(Registration.registered_at,
                                                     Registration.id)))


async def owes_registration(session: AsyncSession, meeting_id: int, person_id: int) -> bool:
    """Whether a person has yet to register for a meeting (registered or waitlisted: False).

    For deadline reminders: registration closes at `Meeting.registration_closes_at`.
    """
    held = await session.scalar(
        select(func.count()).select_from(Registration)
        .where(Registration.meeting_id == meeting_id, Registration.person_id == person_id,
               Registration.status.in_(ACTIVE_REGISTRATION))
    )
    return not held


# -- demo data -------------------------------------------------------------------------------
def _at(day: datetime, hour: int, minute: int, tz: str) -> datetime:
    return datetime.combine(day.date(), time(hour, minute), ZoneInfo(tz))


async def _member(session: AsyncSession, code: str) -> Member | None:
    return await session.scalar(select(Member).where(Member.code == code))


async def load_demo_meetings(session: AsyncSession, now: datetime) -> int:
    """Add the demo meetings once: an annual meeting hosted by the current chair and a New York
    follow-up, both open for registration and dated from `now`, then the 2017 meetings as past
    ones. Returns how many were added (0 when they are there already)."""
    if await session.scalar(select(func.count()).select_from(Meeting)
                            .where(Meeting.is_demo.is_(True))):
        return 0
    chair = await session.scalar(select(Chair).where(Chair.year <= now.year)
                                 .order_by(Chair.year.desc()).limit(1))
    host = chair.member if chair is not None else None
    cities = {"spain": ("Madrid", "Europe/Madrid"), "germany": ("Berlin", "Europe/Berlin"),
              "namibia": ("Windhoek", "Africa/Windhoek"),
              "chile": ("Santiago", "America/Santiago")}  # fpbot demo's demo chairs too
    city, tz = cities.get(host.code if host else "", ("New York", "America/New_York"))
    annual_day = now + timedelta(weeks=8)
    ny_day = now + timedelta(weeks=20)
    spain, germany = await _member(session, "spain"), await _member(session, "germany")
    plans = [
        dict(title=f"Annual meeting of the Focal Points Network, {city}", kind=MeetingKind.ANNUAL,
             host=host, venue=f"{city} (venue to be announced)", tz=tz,
             start=_at(annual_day, 9, 0, tz), end=_at(annual_day + timedelta(days=1), 17, 0, tz),
             opens=now - timedelta(days=1), closes=_at(annual_day - timedelta(weeks=2), 23, 59, tz),
             capacity=120, limit=3, chatham=True),
        dict(title="Follow-up meeting on the margins of the General Assembly",
             kind=MeetingKind.NEW_YORK, host=host,
             venue="United Nations Headquarters, New York", tz="America/New_York",
             start=_at(ny_day, 15, 0, "America/New_York"),
             end=_at(ny_day, 18, 0, "America/New_York"),
             opens=now - timedelta(days=1),
             closes=_at(ny_day - timedelta(weeks=1), 23, 59, "America/New_York"),
             capacity=100, limit=2, chatham=False),
        dict(title="First meeting of the Focal Points Network, Alicante", kind=MeetingKind.ANNUAL,
             host=spain, venue="Alicante, Spain", tz="Europe/Madrid",
             start=datetime(2017, 4, 26, 9, 0, tzinfo=ZoneInfo("Europe/Madrid")),
             end=datetime(2017, 4, 27, 17, 0, tzinfo=ZoneInfo("Europe/Madrid")),
             capacity=150, limit=3, chatham=True),
        dict(title="Follow-up meeting on the margins of the General Assembly (72nd session)",
             kind=MeetingKind.NEW_YORK, host=spain, venue="United Nations Headquarters, New York",
             tz="America/New_York",
             start=datetime(2017, 9, 21, 15, 0, tzinfo=ZoneInfo("America/New_York")),
             end=datetime(2017, 9, 21, 18, 0, tzinfo=ZoneInfo("America/New_York")),
             capacity=120, limit=2, chatham=False),
        dict(title="Expert Group Meeting", kind=MeetingKind.EXPERT_GROUP, host=germany,
             venue="International Peace Institute, New York", tz="America/New_York",
             start=datetime(2017, 11, 30, 10, 0, tzinfo=ZoneInfo("America/New_York")),
             end=datetime(2017, 11, 30, 13, 0, tzinfo=ZoneInfo("America/New_York")),
             capacity=60, limit=2, chatham=True),
    ]
    for p in plans:
        start: datetime = p["start"]  # type: ignore[assignment]
        host_member: Member | None = p["host"]  # type: ignore[assignment]
        session.add(Meeting(
            uid=new_uid(), title=p["title"], kind=p["kind"],
            host_member_id=host_member.id if host_member else None, venue=p["venue"],
            timezone=p["tz"], starts_at=start, ends_at=p["end"],
            registration_opens_at=p.get("opens", start - timedelta(weeks=10)),
            registration_closes_at=p.get("closes", start - timedelta(days=7)),
            capacity=p["capacity"], delegation_limit=p["limit"], eligible_roles=list(ALL_ROLES),
            chatham_house=p["chatham"], is_demo=True, created_at=now, updated_at=now))
    await session.flush()
    return len(plans)
